"""What a configuration is: frozen dataclasses, one per section, and the error that names a bad key.

:mod:`fephp.server.config` reads and checks a YAML file into these;
everything that builds the server takes them.  ``docs/configuration.md``
describes every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from types import MappingProxyType
from typing import Mapping, Optional

# One entry of ``php.backends``: defined by the balancer that takes it, so that
# the backend layer needs nothing from this one; a setting like the others here.
from ..backend.balancer import BackendConfig
from ..cgi.rules import Rule
from ..web.compress import CODINGS, DEFAULT_TYPES
from ..web.sendfile import SendfileRoot
from ..web.static import CacheRule

__all__ = [
    "LETS_ENCRYPT",
    "AcmeConfig",
    "AdminConfig",
    "BackendConfig",
    "CompressionConfig",
    "Config",
    "StaticConfig",
    "ConfigError",
    "LimitsConfig",
    "LoggingConfig",
    "PHPConfig",
    "ServerConfig",
    "SiteConfig",
    "TLSConfig",
    "TimeoutsConfig",
    "WorkerConfig",
    "changed_sections",
    "site_configs",
]


#: ``tls.acme.directory``'s default: Let's Encrypt's production directory.
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True)
class AcmeConfig:
    """A site's ``tls.acme``: where and as whom to obtain its certificate (issue 20)."""

    email: Optional[str] = None
    directory: str = LETS_ENCRYPT
    #: External Account Binding (RFC 8555 7.3.4): the key id and the HMAC key (decoded from base64url).
    eab_kid: Optional[str] = None
    eab_hmac_key: Optional[bytes] = field(default=None, repr=False)
    #: "ecdsa-p256" or "rsa-2048", for the account and the certificates.
    key_type: str = "ecdsa-p256"
    #: The challenges to answer, in order of preference: "http-01", "tls-alpn-01".
    challenges: tuple[str, ...] = ("http-01", "tls-alpn-01")
    #: Redirect the site's plain-HTTP requests to HTTPS (308), except the challenge path.
    redirect: bool = True
    #: A PEM root to trust for the directory's HTTPS instead of the system's (a private CA; Pebble in tests).
    ca_root: Optional[str] = None
    #: ``on_demand``: the wildcard hosts' names are obtained at their first handshake once this URL approves them
    #: (``GET <ask>?domain=<name>`` answering 200), at most ``on_demand_rate`` asks per ``on_demand_period`` seconds.
    on_demand_ask: Optional[str] = None
    on_demand_rate: int = 10
    on_demand_period: float = 3600.0


class ConfigError(Exception):
    """A configuration that cannot run; ``str()`` is one line for the operator.

    ``file``, ``key`` (dotted, or None for the whole file), ``line`` (1-based,
    or None when unknown) and ``problem`` are kept for programs.
    """

    def __init__(self, file: str, key: Optional[str], line: Optional[int], problem: str) -> None:
        self.file = file
        self.key = key
        self.line = line
        self.problem = problem
        where = file if line is None else f"{file}, line {line}"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


@dataclass(frozen=True)
class ServerConfig:
    """``server``: where fephp listens and how it maps URLs to the document root."""

    listen: tuple[str, ...] = ("tcp:8080:interface=127.0.0.1",)
    root: str = ""
    index: tuple[str, ...] = ("index.php",)
    front_controller: Optional[str] = "/index.php"
    deny: tuple[str, ...] = ()
    server_software: str = ""
    server_name: Optional[str] = None
    shutdown_grace: float = 10.0
    workers: int = 1
    #: Offer HTTP/2 (ALPN "h2") on every ssl: listener.
    http2: bool = True
    #: Folders PHP may hand files from (X-Sendfile, X-Accel-Redirect); empty: off.
    x_sendfile_roots: tuple[SendfileRoot, ...] = ()
    #: Learned 103 Early Hints, and how many routes' hints are remembered.
    early_hints: bool = False
    early_hints_max_routes: int = 1024
    #: Addresses and CIDR ranges (and "unix:") whose real_ip_header is believed.
    trusted_proxies: tuple[str, ...] = ()
    real_ip_header: str = "X-Forwarded-For"
    #: The status for a Host no site of ``sites`` names when none is the default: 421 or 404.
    unknown_host: int = 421
    #: Who runs TLS on the ssl: listeners: "stdlib" (fephp.server.tls) or "pyopenssl" (Twisted's).
    tls_engine: str = "stdlib"


@dataclass(frozen=True)
class WorkerConfig:
    """``php.worker``: PHP workers kept booted, speaking RoadRunner's protocol over pipes (fephp.backend.workers).

    ``command`` is the php binary and its arguments (``-d`` settings), the
    worker ``script`` comes after them; limits of 0 are off; ``match`` lists
    the path prefixes that go to the workers (empty: every PHP request).
    """

    script: str
    command: tuple[str, ...]
    count: int = 4
    max_jobs: int = 0
    max_memory: int = 0
    ttl: float = 0.0
    idle_ttl: float = 0.0
    exec_timeout: float = 60.0
    max_consecutive_failures: int = 3
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    match: tuple[str, ...] = ()
    #: ``watch``: absolute globs; a change to a matching file restarts the workers (fephp.server.watch).
    watch: tuple[str, ...] = ()
    #: Where a multipart body's uploads go for the workers (None: the system's temp folder).
    upload_dir: Optional[str] = None
    #: Bounds on a multipart body the front parses for the workers (fephp.cgi.multipart.MultipartLimits).
    max_form_parts: int = 1000
    max_form_header_size: int = 8 * 1024
    max_form_field_size: int = 1024 * 1024


@dataclass(frozen=True)
class PHPConfig:
    """``php``: how PHP runs (external php-fpm, one or several, managed php-fpm, or php-cgi).

    ``fpm_socket`` holds the one address given as a string; ``backends`` the
    several given as a list there or as ``php.backends`` (never both).
    """

    use_fpm: bool = True
    fpm_socket: Optional[str] = None
    worker_pool_size: int = 16
    queue_size: int = 1024
    php_fpm_binary: Optional[str] = None
    php_cgi_binary: Optional[str] = None
    max_requests: int = 1000
    ini: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: An external pool's ``pm.status_path`` and ``ping.path``, when it has them
    #: (the managed pool always has fephp's own, fephp.process.fpmconfig); with
    #: several backends, each of them has these.
    status_path: Optional[str] = None
    ping_path: Optional[str] = None
    backends: tuple[BackendConfig, ...] = ()
    session_affinity: bool = False
    session_cookie: str = "PHPSESSID"
    ping_interval: float = 5.0
    #: PHP workers (``php.worker``), or None.
    worker: Optional[WorkerConfig] = None
    #: The managed pool's children run as this user and group (only when fephp runs as root).
    user: Optional[str] = None
    group: Optional[str] = None

    @property
    def workers_only(self) -> bool:
        """Every PHP request goes to the workers (``php.worker`` without ``match``): no php-fpm runs."""
        return self.worker is not None and not self.worker.match

    @property
    def mode(self) -> str:
        """``"external"``, ``"managed"`` or ``"php-cgi"``."""
        if not self.use_fpm:
            return "php-cgi"
        return "external" if self.fpm_socket or self.backends else "managed"

    @property
    def external_backends(self) -> tuple[BackendConfig, ...]:
        """Every external php-fpm, the single ``fpm_socket`` included (empty in the other modes)."""
        if self.mode != "external":
            return ()
        if self.backends:
            return self.backends
        assert self.fpm_socket is not None
        return (BackendConfig(self.fpm_socket, 1, self.worker_pool_size),)


@dataclass(frozen=True)
class TimeoutsConfig:
    """``timeouts``, in seconds."""

    connect: float = 5.0
    response: float = 60.0
    idle: float = 30.0
    queue: float = 30.0
    ping: float = 2.0
    client_header: float = 60.0
    client_body: float = 60.0
    client_send: float = 60.0
    keepalive: float = 60.0


@dataclass(frozen=True)
class LimitsConfig:
    """``limits``, in bytes."""

    max_body_size: int = 64 * 1024**2
    max_header_size: int = 16 * 1024


@dataclass(frozen=True)
class LoggingConfig:
    """``logging``: the access log (absolute path, ``"-"`` or None) and its form, fephp's own log's level and form."""

    access_log: Optional[str] = None
    level: str = "info"
    access_log_format: str = "combined"  # or "json"
    #: The total time in ms at the end of each combined line (json always has it).
    access_log_duration: bool = False
    format: str = "text"  # or "json"
    #: Query parameters whose values the access log writes as "REDACTED".
    secret_query: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdminConfig:
    """``admin``: the private listeners of /metrics, /status, /healthz and /readyz (none by default)."""

    listen: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompressionConfig:
    """``compression``: response compression, and precompressed static files beside the originals."""

    enabled: bool = True
    algorithms: tuple[str, ...] = CODINGS
    min_size: int = 512
    gzip_level: int = 5
    brotli_level: int = 4
    zstd_level: int = 3
    types: tuple[str, ...] = DEFAULT_TYPES
    precompressed: bool = True


@dataclass(frozen=True)
class StaticConfig:
    """``static``: what fephp adds to the static files it serves (nothing to PHP's responses)."""

    #: Cache-Control and Expires by URL prefix; the longest matching prefix wins.
    cache: tuple[CacheRule, ...] = ()
    #: Bytes of small static files (up to 128 KiB each) kept in memory; 0 for none.
    memory_cache_size: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class TLSConfig:
    """A site's ``tls``: the PEM certificate chain and key an ``ssl:`` listener shows for the site's names (SNI).

    Certificates obtained by ACME (issue 20) will be another source of the
    same pair of files; the SNI map takes a TLSConfig whatever made it.
    """

    certificate: str
    key: str
    #: ``tls.acme``: the certificate comes from an ACME CA; certificate and key are then the files it is stored in
    #: (under ``storage``), absent until the first one is obtained.
    acme: Optional[AcmeConfig] = None
    #: ``tls.storage``: the ACME state folder (account key, certificates), absolute.
    storage: Optional[str] = None


@dataclass(frozen=True)
class SiteConfig:
    """One site of ``sites``: the names it answers, its document root and everything per site, its PHP.

    Without ``sites``, the top-level keys make one site (:func:`site_configs`),
    so a configuration of one site is what it always was.
    """

    #: A short name ([A-Za-z0-9_.-]): the metrics label, the php-fpm pool's name.
    name: str = "default"
    #: Exact names and ``*.example.com`` wildcards, lowercase, without a port.
    hosts: tuple[str, ...] = ()
    #: The site of a Host no site names, and of requests without one.
    default: bool = False
    root: str = ""
    index: tuple[str, ...] = ("index.php",)
    front_controller: Optional[str] = "/index.php"
    deny: tuple[str, ...] = ()
    server_name: Optional[str] = None
    x_sendfile_roots: tuple[SendfileRoot, ...] = ()
    early_hints: bool = False
    early_hints_max_routes: int = 1024
    php: PHPConfig = PHPConfig()
    static: StaticConfig = StaticConfig()
    compression: CompressionConfig = CompressionConfig()
    #: The site's own access log (absolute path or "-"); None: ``logging.access_log``.
    access_log: Optional[str] = None
    tls: Optional[TLSConfig] = None
    #: ``rules``: the site's per-path rules (fephp.cgi.rules), in order; the top-level ones when it has none.
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Config:
    """A whole, validated configuration; ``source`` is the file it came from."""

    server: ServerConfig
    php: PHPConfig = PHPConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()
    admin: AdminConfig = AdminConfig()
    compression: CompressionConfig = CompressionConfig()
    static: StaticConfig = StaticConfig()
    #: ``rules``: the default site's per-path rules (fephp.cgi.rules), in order.
    rules: tuple[Rule, ...] = ()
    source: str = "<dict>"
    #: ``sites``, in the file's order; empty: the top-level keys are the one site.
    sites: tuple[SiteConfig, ...] = ()


def changed_sections(old: Config, new: Config) -> "list[str]":
    """The sections (``server``, ``php``...) in which *new* differs from *old*, in the order :class:`Config` declares them.

    A section is a field of Config that holds a dataclass, or ``rules``, so
    a section added to Config is compared without a list to keep up to date;
    ``source``, the file's name, is not one.
    """
    return [
        f.name for f in fields(Config)
        if (is_dataclass(getattr(new, f.name)) or f.name in ("rules", "sites")) and getattr(new, f.name) != getattr(old, f.name)
    ]


def site_configs(config: Config) -> tuple[SiteConfig, ...]:
    """The sites *config* serves: ``sites``, or the one default site its top-level keys make."""
    if config.sites:
        return config.sites
    server = config.server
    return (SiteConfig(
        name="default",
        default=True,
        root=server.root,
        index=server.index,
        front_controller=server.front_controller,
        deny=server.deny,
        server_name=server.server_name,
        x_sendfile_roots=server.x_sendfile_roots,
        early_hints=server.early_hints,
        early_hints_max_routes=server.early_hints_max_routes,
        php=config.php,
        static=config.static,
        compression=config.compression,
        rules=config.rules,
    ),)
