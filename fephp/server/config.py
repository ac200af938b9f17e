"""Reading the YAML configuration: parsed, validated and resolved before anything starts.

:func:`load_config` turns a file into a frozen :class:`Config` (the
dataclasses of :mod:`fephp.server.settings`) whose paths are absolute and
whose values are checked; anything wrong raises one :class:`ConfigError`
naming the file, the dotted key and the line YAML found it on.  The checks
of a section live in one method of :class:`_Validator`, built from the value
checkers above them.  ``docs/configuration.md`` describes every key.
"""

from __future__ import annotations

import base64
import difflib
import math
import os
import re
import shutil
from dataclasses import replace
import ssl
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

import yaml
from twisted.internet.endpoints import serverFromString

from .. import __version__
from .._twisted import endpoint_arguments
from ..backend.endpoints import normalize_client_endpoint, parse_client_endpoint
from ..cgi.realip import HEADERS as REAL_IP_HEADERS
from ..cgi.realip import parse_trusted
from ..process.binaries import find_php, php_cli_for
from ..web.compress import CODINGS
from ..web.sendfile import SendfileRoot
from ..web.static import CacheRule
from ..acme import Storage
from .acme import storage_folder
from .listeners import load_tls
from .rules_config import parse_rules
from .settings import (
    AcmeConfig,
    AdminConfig,
    BackendConfig,
    CompressionConfig,
    Config,
    ConfigError,
    LimitsConfig,
    LoggingConfig,
    PHPConfig,
    ServerConfig,
    SiteConfig,
    StaticConfig,
    TimeoutsConfig,
    TLSConfig,
    WorkerConfig,
)
from .tls import ENGINES as TLS_ENGINES
from .tls import context_from_description
from .watch import glob_regex

#: Config and ConfigError are re-exported: what load_config returns and raises.
__all__ = ["Config", "ConfigError", "config_from_dict", "load_config"]

LOG_LEVELS = ("debug", "info", "warn", "error")
ACCESS_LOG_FORMATS = ("combined", "json")
LOG_FORMATS = ("text", "json")
#: A query parameter's name as ``logging.secret_query`` takes it.
_QUERY_NAME = re.compile(r"^[^&=\s]+$")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
#: The largest php.backends weight: a backend holds RING_POINTS x weight points on the affinity ring.
MAX_WEIGHT = 100
_BACKEND_KEYS = ("address", "weight", "pool_size", "drain")
# php-fpm.conf is an ini file: a key outside this set, or a newline in a value,
# could add directives of its own to the generated configuration.
_INI_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: A user or group name php-fpm's pool may switch to (POSIX portable names).
_POSIX_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,31}$")
#: A site's name: the metrics label and part of its php-fpm pool's name.
_SITE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: A host name of sites[].hosts, lowercased: letters, digits, '-', '_' in dot-separated labels,
#: optionally behind "*." (any name ending so); or an IPv6 literal in brackets.
_HOST_NAME = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
_IPV6_HOST = re.compile(r"^\[[0-9a-f:.]+\]$")
#: The keys of one site of ``sites``.
_SITE_KEYS = ("name", "hosts", "default", "root", "index", "front_controller", "deny", "server_name",
              "x_sendfile_roots", "early_hints", "early_hints_max_routes", "php", "static", "compression",
              "access_log", "tls", "rules")

#: An environment variable's name in php.worker.env.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Path = tuple[Any, ...]  # ("php", "ini", "memory_limit") or ("server", "listen", 0)


def config_from_dict(data: Any, *, source: str = "<dict>", base_dir: Optional[str] = None) -> Config:
    """Validate *data* (what YAML would give); relative paths resolve against *base_dir*.

    *base_dir* defaults to the directory of *source* when that is a file,
    else the current directory.  Errors carry no line numbers.
    """
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(source)) if os.path.isfile(source) else os.getcwd()
    return _Validator(source, base_dir, {}).config(data)


def load_config(path: str, text: Optional[str] = None) -> Config:
    """Read, parse and validate the YAML file at *path*.

    With *text*, that is the file's content and the file is not read again
    (a worker process validates the text its parent read at start, so a file
    edited since then never splits a running server into two configurations).
    """
    source = os.path.abspath(path)
    if text is None:
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(source, None, None, f"cannot read the file: {_strerror(e)}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(filter(None, [e.context, e.problem]))
        raise ConfigError(source, None, line, f"not valid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(source, None, None, f"not valid YAML: {e}") from None
    lines: dict[Path, int] = {}
    if node is not None:
        _index_lines(source, node, (), lines)
    return _Validator(source, os.path.dirname(source), lines).config(data)


def _strerror(e: Exception) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def _index_lines(source: str, node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    """Record the line of every key and list item under *node*; refuse duplicate keys."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(source, _dotted((*path, key)), line, "duplicate key")
            seen.add(key)
            lines[(*path, key)] = line
            _index_lines(source, value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _index_lines(source, item, (*path, i), lines)


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


_SECTIONS = ("server", "php", "timeouts", "limits", "logging", "admin", "compression", "static")
#: A media type as Content-Type names it (RFC 9110 8.3.1), or ``type/*``.
#: nginx's time units for ``expires``: s, m, h, d, w, M (30 days), y (365 days).
_DURATION = re.compile(r"^(-?\d+)\s*([smhdwMy]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400, "y": 365 * 86400}
_MEDIA_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]+/([a-z0-9!#$&^_.+-]+|\*)$")
#: Listener types a worker can adopt from its parent: stream sockets, and ``ssl:`` with
#: ``server.tls_engine: stdlib`` (each worker wraps the adopted TCP socket in fephp.server.tls itself).
_SHAREABLE = ("tcp", "tcp6", "unix", "systemd")


class _Validator:
    """Checks one document, turning each problem into a ConfigError at its key's line."""

    def __init__(self, source: str, base_dir: str, lines: dict[Path, int]) -> None:
        self.source = source
        self.base_dir = base_dir
        self.lines = lines
        self.workers_count = 1
        self.tls_engine = ServerConfig().tls_engine

    def error(self, path: Path, problem: str) -> ConfigError:
        line = self.lines.get(()) if not path else None
        for n in range(len(path), 0, -1):  # a default has no line: use its section's
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        return ConfigError(self.source, _dotted(path) or None, line, problem)

    # -- the document ---------------------------------------------------------

    def config(self, data: Any) -> Config:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error((), f"the top level must be a mapping of sections, not {_describe(data)}")
        self.known(data, (), (*_SECTIONS, "rules", "sites"))
        sections = {name: self.section(data, name) for name in _SECTIONS}
        has_sites = data.get("sites") is not None
        config = Config(
            server=self.server(sections["server"], has_sites=has_sites),
            php=self.php(sections["php"]),
            timeouts=self.timeouts(sections["timeouts"]),
            limits=self.limits(sections["limits"]),
            logging=self.logging(sections["logging"]),
            admin=self.admin(sections["admin"], sections["server"]),
            compression=self.compression(sections["compression"]),
            static=self.static(sections["static"]),
            rules=parse_rules(self, ("rules",), data.get("rules")),
            source=self.source,
        )
        if not has_sites:
            return config
        self.workers_count = config.server.workers  # tls.acme on demand needs one process
        self.tls_engine = config.server.tls_engine
        return replace(config, sites=self.sites(("sites",), data["sites"], config, sections["php"]))

    #: A value as an error names it ("a mapping", "the string 'x'"), for the parsers outside this class.
    describe = staticmethod(_describe)

    def known(self, data: dict[Any, Any], path: Path, names: tuple[str, ...]) -> None:
        for key in data:
            if key not in names:
                hint = difflib.get_close_matches(str(key), names, n=1)
                expected = f"did you mean {hint[0]!r}?" if hint else "expected one of: " + ", ".join(names)
                raise self.error((*path, key), f"unknown key; {expected}")

    def section(self, data: dict[Any, Any], name: str) -> dict[Any, Any]:
        value = data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error((name,), f"must be a mapping, not {_describe(value)}")
        return value

    # -- value checkers ---------------------------------------------------------

    def integer(self, path: Path, value: Any, *, minimum: int) -> int:
        # YAML's true/false are bools, and bool is an int in Python: refuse them.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"must be an integer, not {_describe(value)}")
        if value < minimum:
            raise self.error(path, f"must be at least {minimum}, not {value}")
        return value

    def seconds(self, path: Path, value: Any, *, allow_zero: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(path, f"must be a number of seconds, not {_describe(value)}")
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = "zero or more" if allow_zero else "more than zero"
            raise self.error(path, f"must be {bound} seconds, not {value}")
        return float(value)

    def size(self, path: Path, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(path, f"must be a size in bytes (like 65536 or 64m), not {_describe(value)}")
        if isinstance(value, str):
            match = _SIZE.match(value)
            if not match:
                raise self.error(path, f"must be a size in bytes (like 65536 or 64m), not {value!r}")
            value = int(match[1]) * _SIZE_FACTORS[match[2].lower()]
        if value <= 0:
            raise self.error(path, f"must be more than zero bytes, not {value}")
        return value

    def boolean(self, path: Path, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"must be true or false, not {_describe(value)}")
        return value

    def string(self, path: Path, value: Any, *, nullable: bool = False) -> Optional[str]:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            kind = "a string or null" if nullable else "a string"
            raise self.error(path, f"must be {kind}, not {_describe(value)}")
        if not value.strip():
            raise self.error(path, "must not be empty")
        if any(c in value for c in "\r\n\0"):
            raise self.error(path, "must not contain a line break or NUL")
        return value

    def string_list(self, path: Path, value: Any, check: Callable[[Path, str], str]) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.error(path, f"must be a list of strings, not {_describe(value)}")
        out = []
        for i, item in enumerate(value):
            text = self.string((*path, i), item)
            assert text is not None
            out.append(check((*path, i), text))
        return tuple(out)

    def url_prefix(self, path: Path, value: str) -> str:
        if not value.startswith("/"):
            raise self.error(path, f"must start with '/', not {value!r}")
        return value

    def absolute(self, value: str) -> str:
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))

    # -- sections ---------------------------------------------------------------

    def server(self, data: dict[Any, Any], *, has_sites: bool = False) -> ServerConfig:
        p = ("server",)
        defaults = ServerConfig()
        self.known(data, p, ("listen", "root", "index", "front_controller", "deny",
                             "server_software", "server_name", "shutdown_grace", "workers", "http2",
                             "x_sendfile_roots", "early_hints", "early_hints_max_routes",
                             "trusted_proxies", "real_ip_header", "unknown_host", "tls_engine"))
        workers = self.workers((*p, "workers"), data.get("workers", defaults.workers))
        tls_engine = self.choice((*p, "tls_engine"), data.get("tls_engine", defaults.tls_engine), TLS_ENGINES)

        def endpoint(path: Path, text: str) -> str:
            kind = text.split(":", 1)[0]
            if workers > 1 and kind == "ssl" and tls_engine != "stdlib":
                raise self.error(
                    path,
                    f"ssl: listeners are shared by {workers} workers (server.workers) with server.tls_engine: stdlib"
                    f" only, not {tls_engine}; or set server.workers to 1",
                )
            if workers > 1 and kind not in (*_SHAREABLE, "ssl"):
                raise self.error(
                    path,
                    f"{kind}: listeners cannot be shared by {workers} workers (server.workers);"
                    " use tcp:, tcp6:, unix:, systemd: or ssl: (server.tls_engine: stdlib),"
                    " or set server.workers to 1",
                )
            text = self.server_endpoint(path, text)
            if kind == "ssl" and tls_engine == "stdlib":
                self.stdlib_tls(path, text)
            return text

        listen = self.string_list((*p, "listen"), data.get("listen", list(defaults.listen)), endpoint)
        if not listen:
            raise self.error((*p, "listen"), "must name at least one endpoint to listen on")
        if "root" in data:
            root_text = self.string((*p, "root"), data["root"])
            assert root_text is not None
            root = self.absolute(root_text)
        elif has_sites:
            root = ""  # each site has its own (sites[].root)
        else:
            root = os.path.join(self.base_dir, "public")
        if root and not os.path.isdir(root):
            what = "does not exist" if not os.path.exists(root) else "is not a directory"
            default = "" if "root" in data else " (the default: public/ beside the config file)"
            raise self.error((*p, "root"), f"the document root {root}{default} {what}")
        index = self.string_list((*p, "index"), data.get("index", list(defaults.index)), self.index_name)
        front_controller = self.string((*p, "front_controller"), data.get("front_controller", defaults.front_controller), nullable=True)
        if front_controller is not None:
            self.url_prefix((*p, "front_controller"), front_controller)
        deny = self.string_list((*p, "deny"), data.get("deny", []), self.url_prefix)
        software = self.string((*p, "server_software"), data.get("server_software", f"fephp/{__version__}"))
        assert software is not None
        name = self.string((*p, "server_name"), data.get("server_name"), nullable=True)
        grace = self.seconds((*p, "shutdown_grace"), data.get("shutdown_grace", defaults.shutdown_grace), allow_zero=True)
        http2 = self.boolean((*p, "http2"), data.get("http2", defaults.http2))
        roots = self.string_list((*p, "x_sendfile_roots"), data.get("x_sendfile_roots") or [], lambda path, text: text)
        sendfile_roots = tuple(self.sendfile_root((*p, "x_sendfile_roots", i), text) for i, text in enumerate(roots))
        trusted = self.string_list((*p, "trusted_proxies"), data.get("trusted_proxies", []), self.trusted_proxy)
        real_ip_header = self.real_ip_header((*p, "real_ip_header"), data.get("real_ip_header", defaults.real_ip_header))
        early_hints = self.boolean((*p, "early_hints"), data.get("early_hints", defaults.early_hints))
        max_routes = self.integer(
            (*p, "early_hints_max_routes"), data.get("early_hints_max_routes", defaults.early_hints_max_routes), minimum=1
        )
        unknown_host = data.get("unknown_host", defaults.unknown_host)
        if unknown_host not in (404, 421) or isinstance(unknown_host, bool):
            raise self.error((*p, "unknown_host"), f"must be 404 or 421, not {_describe(unknown_host)}")
        return ServerConfig(
            listen, root, index, front_controller, deny, software, name, grace, workers,
            unknown_host=unknown_host,
            http2=http2,
            x_sendfile_roots=sendfile_roots,
            early_hints=early_hints,
            early_hints_max_routes=max_routes,
            trusted_proxies=trusted,
            real_ip_header=real_ip_header,
            tls_engine=tls_engine,
        )

    def index_name(self, path: Path, name: str) -> str:
        if "/" in name or name in (".", ".."):
            raise self.error(path, f"must be a file name without '/', not {name!r}")
        return name

    # -- sites ------------------------------------------------------------------

    def sites(self, p: Path, value: Any, top: Config, top_php: dict[Any, Any]) -> tuple[SiteConfig, ...]:
        """``sites``: each site's keys, the top-level ones standing in for those it leaves out."""
        if not isinstance(value, list):
            raise self.error(p, f"must be a list of sites (each with hosts or default: true), not {_describe(value)}")
        if not value:
            raise self.error(p, "must name at least one site (or leave sites out for one site of the top-level keys)")
        sites = [self.site((*p, i), item, top, top_php) for i, item in enumerate(value)]
        names: dict[str, int] = {}
        hosts: dict[str, int] = {}
        default: Optional[int] = None
        for i, site in enumerate(sites):
            if site.name in names:
                raise self.error((*p, i, "name"), f"{site.name!r} is the name of sites[{names[site.name]}] already")
            names[site.name] = i
            for j, host in enumerate(site.hosts):
                if host in hosts:
                    raise self.error((*p, i, "hosts", j), f"{host!r} is a host of sites[{hosts[host]}] already")
                hosts[host] = i
            if site.default:
                if default is not None:
                    raise self.error((*p, i, "default"), f"sites[{default}] is the default site already")
                default = i
        return tuple(sites)

    def site(self, p: Path, data: Any, top: Config, top_php: dict[Any, Any]) -> SiteConfig:
        """One site; a key it leaves out is the top-level one (``server.root``, ``php``, ``static``...)."""
        if not isinstance(data, dict):
            raise self.error(p, f"must be a mapping (hosts, root, php...), not {_describe(data)}")
        self.known(data, p, _SITE_KEYS)
        server = top.server
        hosts = self.string_list((*p, "hosts"), data.get("hosts", []), self.site_host)
        for j, host in enumerate(hosts):
            if host in hosts[:j]:
                raise self.error((*p, "hosts", j), f"{host!r} is named twice")
        default = self.boolean((*p, "default"), data.get("default", False))
        if not hosts and not default:
            raise self.error(p, "names no hosts: give hosts, or default: true for the site of unknown hosts")
        name = self.string((*p, "name"), data.get("name", hosts[0].lstrip("*.") if hosts else "default"))
        assert name is not None
        if not _SITE_NAME.match(name):
            raise self.error((*p, "name"), f"must be letters, digits, '_', '.' or '-' (at most 64), not {name!r}")
        if "root" in data:
            root_text = self.string((*p, "root"), data["root"])
            assert root_text is not None
            root = self.absolute(root_text)
        elif server.root:
            root = server.root
        else:
            raise self.error(p, "has no root (sites[].root, or server.root for every site)")
        if not os.path.isdir(root):
            what = "does not exist" if not os.path.exists(root) else "is not a directory"
            raise self.error((*p, "root"), f"the document root {root} {what}")
        index = (self.string_list((*p, "index"), data["index"], self.index_name)
                 if "index" in data else server.index)
        front_controller = (self.string((*p, "front_controller"), data["front_controller"], nullable=True)
                            if "front_controller" in data else server.front_controller)
        if front_controller is not None:
            self.url_prefix((*p, "front_controller"), front_controller)
        deny = self.string_list((*p, "deny"), data["deny"], self.url_prefix) if "deny" in data else server.deny
        server_name = (self.string((*p, "server_name"), data["server_name"], nullable=True)
                       if "server_name" in data else server.server_name)
        if "x_sendfile_roots" in data:
            roots = self.string_list((*p, "x_sendfile_roots"), data["x_sendfile_roots"] or [], lambda path, text: text)
            sendfile_roots = tuple(self.sendfile_root((*p, "x_sendfile_roots", i), t) for i, t in enumerate(roots))
        else:
            sendfile_roots = server.x_sendfile_roots
        early_hints = (self.boolean((*p, "early_hints"), data["early_hints"])
                       if "early_hints" in data else server.early_hints)
        max_routes = (self.integer((*p, "early_hints_max_routes"), data["early_hints_max_routes"], minimum=1)
                      if "early_hints_max_routes" in data else server.early_hints_max_routes)
        php = top.php
        if data.get("php") is not None:
            own = data["php"]
            if not isinstance(own, dict):
                raise self.error((*p, "php"), f"must be a mapping, not {_describe(own)}")
            inherited = dict(top_php)
            if any(k in own for k in ("fpm_socket", "backends", "use_fpm")):
                # The site names its own PHP: none of the top level's addresses.
                for k in ("fpm_socket", "backends", "status_path", "ping_path", "session_affinity"):
                    inherited.pop(k, None)
            php = self.php({**inherited, **own}, (*p, "php"))
        static = self.static(data["static"] or {}, (*p, "static")) if "static" in data else top.static
        compression = (self.compression(data["compression"] or {}, (*p, "compression"))
                       if "compression" in data else top.compression)
        access_log = self.access_log((*p, "access_log"), data["access_log"]) if "access_log" in data else None
        tls = self.site_tls((*p, "tls"), data["tls"], hosts) if data.get("tls") is not None else None
        rules = parse_rules(self, (*p, "rules"), data["rules"]) if "rules" in data else top.rules
        return SiteConfig(
            name=name, hosts=hosts, default=default, root=root, index=index,
            front_controller=front_controller, deny=deny, server_name=server_name,
            x_sendfile_roots=sendfile_roots, early_hints=early_hints, early_hints_max_routes=max_routes,
            php=php, static=static, compression=compression, access_log=access_log, tls=tls, rules=rules,
        )

    def site_host(self, path: Path, text: str) -> str:
        """A name of sites[].hosts: ``example.com``, ``*.example.com``, an IP address; lowercased, no port."""
        host = text.strip().lower().rstrip(".")
        if not (_HOST_NAME.match(host) or _IPV6_HOST.match(host)) or host.startswith("*.*"):
            raise self.error(path, f"must be a host name like example.com or *.example.com (no port, no path), not {text!r}")
        return host

    def site_tls(self, path: Path, value: Any, hosts: tuple[str, ...] = ()) -> TLSConfig:
        """sites[].tls: certificate and key files (PEM), read now so that a bad pair fails here; or acme (and
        storage): the certificate for the site's hosts comes from an ACME CA."""
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping with certificate and key, not {_describe(value)}")
        self.known(value, path, ("certificate", "key", "acme", "storage"))
        if value.get("acme") is not None:
            return self.site_acme(path, value, hosts)
        if "storage" in value:
            raise self.error((*path, "storage"), "is the folder of acme's certificates: it needs tls.acme")
        files = {}
        for key in ("certificate", "key"):
            if key not in value:
                raise self.error(path, f"needs {key} (a PEM file)")
            text = self.string((*path, key), value[key])
            assert text is not None
            files[key] = self.absolute(text)
            if not os.path.isfile(files[key]):
                raise self.error((*path, key), f"{files[key]} is not an existing file")
        tls = TLSConfig(files["certificate"], files["key"])
        try:
            load_tls(tls)
        except Exception as e:
            raise self.error(path, f"cannot use this certificate and key: {_strerror(e) or type(e).__name__}") from None
        return tls

    def site_acme(self, path: Path, value: dict[Any, Any], hosts: tuple[str, ...]) -> TLSConfig:
        """sites[].tls.acme and tls.storage: the CA, the account, the challenges; the files the certificate for
        *hosts* will be stored in."""
        for key in ("certificate", "key"):
            if key in value:
                raise self.error((*path, key), "cannot be given with acme, which stores its own certificate")
        if not hosts:
            raise self.error((*path, "acme"), "needs the site's hosts: the names to obtain a certificate for")
        p = (*path, "acme")
        acme = value["acme"]
        if not isinstance(acme, dict):
            raise self.error(p, f"must be a mapping (email, directory, eab...), not {_describe(acme)}")
        self.known(acme, p, ("email", "directory", "eab", "key_type", "challenges", "redirect", "ca_root",
                             "on_demand"))
        on_demand = self.on_demand((*p, "on_demand"), acme["on_demand"]) if acme.get("on_demand") is not None else None
        if on_demand is not None and self.workers_count > 1:
            # The names come from handshakes in the workers, and only the parent orders.
            raise self.error((*p, "on_demand"), f"needs server.workers: 1 (names obtained at a handshake are not"
                             f" handed from {self.workers_count} workers to the parent)")
        for host in hosts:
            if host.startswith("*.") and on_demand is None:
                raise self.error((*path, "acme"), f"cannot obtain {host!r}: a wildcard needs DNS-01, which fephp does"
                                 " not answer; name the hosts one by one, or obtain each name on demand (on_demand)")
        d = AcmeConfig()
        email = self.string((*p, "email"), acme.get("email"), nullable=True)
        if email is not None and ("@" not in email or any(c in email for c in " <>,")):
            raise self.error((*p, "email"), f"must be one e-mail address, not {email!r}")
        directory = self.string((*p, "directory"), acme.get("directory", d.directory))
        assert directory is not None
        if not directory.startswith("https://"):
            raise self.error((*p, "directory"), f"must be an https:// URL (RFC 8555 6.1), not {directory!r}")
        kid, hmac_key = None, None
        if acme.get("eab") is not None:
            eab = acme["eab"]
            if not isinstance(eab, dict):
                raise self.error((*p, "eab"), f"must be a mapping with kid and hmac_key, not {_describe(eab)}")
            self.known(eab, (*p, "eab"), ("kid", "hmac_key"))
            for key in ("kid", "hmac_key"):
                if key not in eab:
                    raise self.error((*p, "eab"), f"needs {key} (as the CA gave it)")
            kid = self.string((*p, "eab", "kid"), eab["kid"])
            encoded = self.string((*p, "eab", "hmac_key"), eab["hmac_key"])
            assert encoded is not None
            try:
                hmac_key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except ValueError:
                hmac_key = b""
            if len(hmac_key) < 16 or not re.fullmatch(r"[A-Za-z0-9_=-]+", encoded):
                raise self.error((*p, "eab", "hmac_key"), "must be the CA's HMAC key in base64url (16 bytes or more)")
        key_type = acme.get("key_type", d.key_type)
        if key_type not in ("ecdsa-p256", "rsa-2048"):
            raise self.error((*p, "key_type"), f"must be ecdsa-p256 or rsa-2048, not {_describe(key_type)}")
        challenges = self.string_list((*p, "challenges"), acme.get("challenges", list(d.challenges)), self.challenge)
        if not challenges or len(set(challenges)) != len(challenges):
            raise self.error((*p, "challenges"), "must name http-01, tls-alpn-01 or both, each once")
        redirect = self.boolean((*p, "redirect"), acme.get("redirect", d.redirect))
        ca_root = None
        if acme.get("ca_root") is not None:
            text = self.string((*p, "ca_root"), acme["ca_root"])
            assert text is not None
            ca_root = self.absolute(text)
            if not os.path.isfile(ca_root):
                raise self.error((*p, "ca_root"), f"{ca_root} is not an existing file")
        ask, rate, period = on_demand if on_demand is not None else (None, 10, 3600.0)
        config = AcmeConfig(email, directory, kid, hmac_key, key_type, challenges, redirect, ca_root, ask, rate, period)
        storage_text = self.string((*path, "storage"), value.get("storage", "acme"))
        assert storage_text is not None
        storage = self.absolute(storage_text)
        if os.path.exists(storage) and not os.path.isdir(storage):
            raise self.error((*path, "storage"), f"{storage} is not a folder")
        exact = [host for host in hosts if not host.startswith("*.")] or list(hosts)  # on demand: wildcards apart
        folder = Storage(storage_folder(storage, directory)).folder_for(exact)
        return TLSConfig(str(folder / "chain.pem"), str(folder / "key.pem"), acme=config, storage=storage)

    def on_demand(self, path: Path, value: Any) -> tuple[str, int, float]:
        """tls.acme.on_demand: the operator's ask URL, and at most rate asks per period seconds."""
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping with ask (a URL), rate and period, not {_describe(value)}")
        self.known(value, path, ("ask", "rate", "period"))
        if "ask" not in value:
            raise self.error(path, "needs ask: the URL that approves each name (GET <ask>?domain=<name> answering 200)")
        ask = self.string((*path, "ask"), value["ask"])
        assert ask is not None
        if not ask.startswith(("http://", "https://")):
            raise self.error((*path, "ask"), f"must be an http:// or https:// URL, not {ask!r}")
        rate = self.integer((*path, "rate"), value.get("rate", 10), minimum=1)
        period = self.seconds((*path, "period"), value.get("period", 3600.0))
        return ask, rate, period

    def challenge(self, path: Path, text: str) -> str:
        if text not in ("http-01", "tls-alpn-01"):
            raise self.error(path, f"must be http-01 or tls-alpn-01 (dns-01 is not answered), not {text!r}")
        return text

    def access_log(self, path: Path, value: Any) -> Optional[str]:
        access = self.string(path, value, nullable=True)
        if access is not None and access != "-":
            access = self.absolute(access)
            folder = os.path.dirname(access)
            if not os.path.isdir(folder):
                raise self.error(path, f"the folder {folder} does not exist")
            if os.path.isdir(access):
                raise self.error(path, f"{access} is a directory")
        return access

    def stdlib_tls(self, path: Path, text: str) -> None:
        """An ``ssl:`` string's files as the standard library's ssl loads them (server.tls_engine: stdlib)."""
        try:
            context_from_description(text)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise self.error(
                path, f"the standard library's ssl (server.tls_engine: stdlib) cannot load {text!r} ({_strerror(e) or type(e).__name__})"
            ) from None

    def sendfile_root(self, path: Path, text: str) -> SendfileRoot:
        """``/srv/files`` (X-Sendfile) or ``/srv/files=/protected/`` (also X-Accel-Redirect of /protected/...)."""
        folder, eq, uri = text.partition("=")
        folder = folder.strip()
        if not folder:
            raise self.error(path, f"must be a folder, or folder=/uri-prefix/, not {text!r}")
        resolved = os.path.realpath(self.absolute(folder))
        if not os.path.isdir(resolved):
            what = "does not exist" if not os.path.exists(resolved) else "is not a directory"
            raise self.error(path, f"the folder {resolved} {what}")
        if resolved == "/":
            raise self.error(path, "must not be / (every file of the machine)")
        prefix: Optional[str] = None
        if eq:
            prefix = uri.strip()
            if not prefix.startswith("/") or any(c in prefix for c in "?#%,= "):
                raise self.error(path, f"the URI prefix must be a path starting with '/' (no ?, #, %, ',', '=' or space), not {prefix!r}")
            if not prefix.endswith("/"):
                prefix += "/"
        return SendfileRoot(resolved, prefix)

    def trusted_proxy(self, path: Path, value: str) -> str:
        try:
            parse_trusted(value)
        except ValueError:
            raise self.error(path, f"must be an IP address, a CIDR range (10.0.0.0/8) or 'unix:', not {value!r}") from None
        return value

    def real_ip_header(self, path: Path, value: Any) -> str:
        for name in REAL_IP_HEADERS:
            if isinstance(value, str) and value.lower() == name.lower():
                return name
        raise self.error(path, f"must be one of {', '.join(REAL_IP_HEADERS)}, not {_describe(value)}")

    def workers(self, path: Path, value: Any) -> int:
        if value == "auto":
            return os.cpu_count() or 1
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(path, f"must be an integer of 1 or more, or 'auto', not {_describe(value)}")
        return value

    def server_endpoint(self, path: Path, text: str) -> str:
        # Building the endpoint parses the string (and loads TLS keys) without
        # listening; it only keeps the reactor, so none is needed.
        try:
            if text.split(":", 1)[0] == "systemd":
                self.systemd_endpoint(path, text)
            else:
                serverFromString(None, text)
        except ConfigError:
            raise
        except Exception as e:
            raise self.error(path, f"not a server endpoint string: {text!r} ({_strerror(e) or type(e).__name__})") from None
        return text

    def systemd_endpoint(self, path: Path, text: str) -> None:
        """Check a ``systemd:`` string's arguments only.

        Building it needs the sockets systemd passes (LISTEN_FDS), which a
        ``check-config`` run outside the unit does not have.
        """
        args, kwargs = endpoint_arguments(text)
        if args or kwargs.get("domain") not in ("INET", "INET6", "UNIX"):
            raise self.error(path, f"not a server endpoint string: {text!r} (domain must be INET, INET6 or UNIX)")
        if ("index" in kwargs) == ("name" in kwargs):
            raise self.error(path, f"not a server endpoint string: {text!r} (give index or name, not both)")
        if "index" in kwargs and not str(kwargs["index"]).isdigit():
            raise self.error(path, f"not a server endpoint string: {text!r} (index must be a number)")

    def php(self, data: dict[Any, Any], p: Path = ("php",)) -> PHPConfig:
        d = PHPConfig()
        self.known(data, p, ("use_fpm", "fpm_socket", "worker_pool_size", "queue_size",
                             "php_fpm_binary", "php_cgi_binary", "max_requests", "ini",
                             "status_path", "ping_path",
                             "backends", "session_affinity", "session_cookie", "ping_interval", "worker",
                             "user", "group"))
        use_fpm = self.boolean((*p, "use_fpm"), data.get("use_fpm", d.use_fpm))
        size = self.integer((*p, "worker_pool_size"), data.get("worker_pool_size", d.worker_pool_size), minimum=1)
        socket, backends = self.php_backends(p, data, size)
        queue = self.integer((*p, "queue_size"), data.get("queue_size", d.queue_size), minimum=0)
        max_requests = self.integer((*p, "max_requests"), data.get("max_requests", d.max_requests), minimum=0)
        fpm_binary = self.string((*p, "php_fpm_binary"), data.get("php_fpm_binary"), nullable=True)
        cgi_binary = self.string((*p, "php_cgi_binary"), data.get("php_cgi_binary"), nullable=True)
        worker = self.worker((*p, "worker"), data["worker"], fpm_binary) if data.get("worker") is not None else None
        # Only the binary the chosen mode runs must exist (none of php-fpm's when workers take every request).
        external = socket is not None or bool(backends)
        if use_fpm and not external and not (worker is not None and not worker.match):
            fpm_binary = self.binary((*p, "php_fpm_binary"), fpm_binary, "php-fpm")
        elif not use_fpm:
            cgi_binary = self.binary((*p, "php_cgi_binary"), cgi_binary, "php-cgi")
        ini = self.ini((*p, "ini"), data.get("ini", {}))
        affinity = self.boolean((*p, "session_affinity"), data.get("session_affinity", d.session_affinity))
        if affinity and not backends:
            raise self.error((*p, "session_affinity"),
                             "needs several php-fpm backends (a list in php.fpm_socket, or php.backends)")
        cookie = self.string((*p, "session_cookie"), data.get("session_cookie", d.session_cookie))
        assert cookie is not None
        if any(c in cookie for c in "=;, \t"):
            raise self.error((*p, "session_cookie"), f"is not a cookie name: {cookie!r}")
        paths = {}
        for key in ("status_path", "ping_path"):
            path = self.string((*p, key), data.get(key), nullable=True)
            if path is not None:
                self.url_prefix((*p, key), path)
                if socket is None and not backends:
                    # The managed pool has fephp's own; php-cgi has neither.
                    raise self.error((*p, key), "applies to an external pool only (php.fpm_socket or php.backends)")
            paths[key] = path
        ping_interval = self.seconds((*p, "ping_interval"), data.get("ping_interval", d.ping_interval))
        identity = {}
        for key in ("user", "group"):
            name = self.string((*p, key), data.get(key), nullable=True)
            if name is not None:
                if not use_fpm or external:
                    raise self.error((*p, key), "applies to the managed php-fpm only (no php.fpm_socket or php.backends)")
                if not _POSIX_NAME.match(name):
                    raise self.error((*p, key), f"is not a user or group name: {name!r}")
            identity[key] = name
        return PHPConfig(use_fpm, socket, size, queue, fpm_binary, cgi_binary, max_requests, ini,
                         backends=backends, session_affinity=affinity, session_cookie=cookie,
                         ping_interval=ping_interval, worker=worker, **paths, **identity)

    def worker(self, path: Path, data: Any, fpm_binary: Optional[str]) -> WorkerConfig:
        """``php.worker``: the worker script, the command that runs it, the pool's size and limits, ``match``."""
        if not isinstance(data, dict):
            raise self.error(path, f"must be a mapping (script, command, count...), not {_describe(data)}")
        d = WorkerConfig("", ())
        self.known(data, path, ("script", "command", "count", "max_jobs", "max_memory", "ttl", "idle_ttl",
                                "exec_timeout", "max_consecutive_failures", "env", "match", "watch",
                                "upload_dir", "max_form_parts", "max_form_header_size", "max_form_field_size"))
        if "script" not in data:
            raise self.error(path, "needs a script (the worker's PHP entry point)")
        text = self.string((*path, "script"), data["script"])
        assert text is not None
        script = self.absolute(text)
        if not os.path.isfile(script):
            raise self.error((*path, "script"), f"the worker script {script} is not an existing file")
        command = self.worker_command((*path, "command"), data.get("command"), fpm_binary)

        def limit(key: str) -> int:
            value = data.get(key, 0)
            return 0 if value == 0 else self.size((*path, key), value)

        def seconds(key: str, default: float) -> float:
            return self.seconds((*path, key), data.get(key, default), allow_zero=default == 0)

        env = self.worker_env((*path, "env"), data.get("env"))
        return WorkerConfig(
            script=script,
            command=command,
            count=self.integer((*path, "count"), data.get("count", d.count), minimum=1),
            max_jobs=self.integer((*path, "max_jobs"), data.get("max_jobs", 0), minimum=0),
            max_memory=limit("max_memory"),
            ttl=seconds("ttl", 0.0),
            idle_ttl=seconds("idle_ttl", 0.0),
            exec_timeout=seconds("exec_timeout", d.exec_timeout),
            max_consecutive_failures=self.integer(
                (*path, "max_consecutive_failures"), data.get("max_consecutive_failures", d.max_consecutive_failures), minimum=1
            ),
            env=env,
            match=self.string_list((*path, "match"), data.get("match", []), self.url_prefix),
            watch=self.string_list((*path, "watch"), data.get("watch", []), self.watch_glob),
            upload_dir=self.upload_dir((*path, "upload_dir"), data.get("upload_dir")),
            max_form_parts=self.integer((*path, "max_form_parts"), data.get("max_form_parts", d.max_form_parts),
                                        minimum=1),
            max_form_header_size=self.size((*path, "max_form_header_size"),
                                           data.get("max_form_header_size", d.max_form_header_size)),
            max_form_field_size=self.size((*path, "max_form_field_size"),
                                          data.get("max_form_field_size", d.max_form_field_size)),
        )

    def upload_dir(self, path: Path, value: Any) -> Optional[str]:
        """``php.worker.upload_dir``: an existing folder (relative to the config file), or null for the temp folder."""
        text = self.string(path, value, nullable=True)
        if text is None:
            return None
        folder = self.absolute(text)
        if not os.path.isdir(folder):
            raise self.error(path, f"{folder} is not an existing folder")
        return folder

    def watch_glob(self, path: Path, value: str) -> str:
        """A ``php.worker.watch`` glob, made absolute from the configuration file's folder."""
        pattern = self.absolute(value)
        try:
            glob_regex(pattern)
        except ValueError as e:
            raise self.error(path, str(e)) from None
        return pattern

    def worker_env(self, path: Path, value: Any) -> Mapping[str, str]:
        """``php.worker.env``: variables added to the workers' environment (names as a shell takes them)."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping of environment variables, not {_describe(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise self.error((*path, key), "is not an environment variable name (letters, digits, '_', not first a digit)")
            if isinstance(item, bool) or not isinstance(item, (int, float, str)):
                raise self.error((*path, key), f"must be a string or a number, not {_describe(item)}")
            text = str(item)
            if "\0" in text:
                raise self.error((*path, key), "must not contain NUL")
            out[key] = text
        return MappingProxyType(out)

    def worker_command(self, path: Path, value: Any, fpm_binary: Optional[str]) -> tuple[str, ...]:
        """``php.worker.command``: a list (or a string split on spaces), its first item the php binary."""
        if value is None:
            fpm = fpm_binary
            if fpm is not None:
                fpm = shutil.which(fpm) if "/" not in fpm else self.absolute(fpm)
            found = php_cli_for(fpm or find_php("php-fpm"))
            if found is None:
                raise self.error(path, "no php command-line binary found (php8.2-cli); install it or give php.worker.command")
            return (found,)
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list) or not value:
            raise self.error(path, f"must be the php binary and its arguments, as a list or a string, not {_describe(value)}")
        args = []
        for i, item in enumerate(value):
            text = self.string((*path, i), item) if not isinstance(item, (int, float)) or isinstance(item, bool) else str(item)
            assert text is not None
            args.append(text)
        return (self.binary((*path, 0), args[0], "php"), *args[1:])

    def php_backends(self, p: Path, data: dict[Any, Any], size: int) -> tuple[Optional[str], tuple[BackendConfig, ...]]:
        """``php.fpm_socket`` (one address, or a list of them) and ``php.backends``: the one address or the several."""
        value = data.get("fpm_socket")
        if "backends" in data and value is not None:
            raise self.error((*p, "backends"), "give php.fpm_socket or php.backends, not both")
        if isinstance(value, list):
            if not value:
                raise self.error((*p, "fpm_socket"), "must name at least one php-fpm address")
            entries = [BackendConfig(self.fpm_address((*p, "fpm_socket", i), item), 1, size)
                       for i, item in enumerate(value)]
            return None, self.distinct_backends((*p, "fpm_socket"), entries)
        if "backends" in data:
            return None, self.backends((*p, "backends"), data["backends"], size)
        if value is None:
            return None, ()
        if not isinstance(value, str):
            raise self.error((*p, "fpm_socket"), f"must be an address, a list of addresses, or null, not {_describe(value)}")
        return self.fpm_address((*p, "fpm_socket"), value), ()

    def fpm_address(self, path: Path, value: Any) -> str:
        text = self.string(path, value)
        assert text is not None
        try:
            parse_client_endpoint(None, text)
        except ValueError as e:
            raise self.error(path, f"not a php-fpm address: {e}") from None
        return text

    def backends(self, path: Path, value: Any, size: int) -> tuple[BackendConfig, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(path, f"must be a list of backends (each with an address), not {_describe(value)}")
        entries = []
        for i, item in enumerate(value):
            at = (*path, i)
            if not isinstance(item, dict):
                raise self.error(at, f"must be a mapping with an address (and weight, pool_size, drain), not {_describe(item)}")
            self.known(item, at, _BACKEND_KEYS)
            if "address" not in item:
                raise self.error(at, "has no address")
            weight = self.integer((*at, "weight"), item.get("weight", 1), minimum=1)
            if weight > MAX_WEIGHT:
                raise self.error((*at, "weight"), f"must be at most {MAX_WEIGHT}, not {weight}")
            entries.append(BackendConfig(
                self.fpm_address((*at, "address"), item["address"]),
                weight,
                self.integer((*at, "pool_size"), item.get("pool_size", size), minimum=1),
                self.boolean((*at, "drain"), item.get("drain", False)),
            ))
        backends = self.distinct_backends(path, entries, key="address")
        if all(b.drain for b in backends):
            raise self.error(path, "every backend drains: at least one must take requests")
        return backends

    def distinct_backends(self, path: Path, entries: list[BackendConfig], key: Optional[str] = None) -> tuple[BackendConfig, ...]:
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            same = normalize_client_endpoint(entry.address)
            if same in seen:
                at = (*path, i, key) if key else (*path, i)
                raise self.error(at, f"the same php-fpm as {_dotted((*path, seen[same]))}")
            seen[same] = i
        return tuple(entries)

    def binary(self, path: Path, value: Optional[str], what: str) -> str:
        if value is None:
            found = find_php(what)
            if found is None:
                raise self.error(path, f"no {what} binary found on PATH or in the usual folders; install it or give its path")
            return found
        resolved = shutil.which(value) if "/" not in value else self.absolute(value)
        if resolved is None or not os.path.isfile(resolved):
            raise self.error(path, f"{value!r} is not an existing file")
        if not os.access(resolved, os.X_OK):
            raise self.error(path, f"{resolved} is not executable")
        return os.path.abspath(resolved)

    def ini(self, path: Path, value: Any) -> Mapping[str, str]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping of PHP ini settings, not {_describe(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _INI_KEY.match(key):
                raise self.error((*path, key), "is not a PHP ini setting name (letters, digits, '_', '.', '-')")
            if isinstance(item, bool):
                text = "1" if item else "0"
            elif isinstance(item, (int, float, str)):
                text = str(item)
            else:
                raise self.error((*path, key), f"must be a string or a number, not {_describe(item)}")
            if any(c in text for c in "\r\n\0"):
                raise self.error((*path, key), "must not contain a line break or NUL")
            out[key] = text
        return MappingProxyType(out)

    def timeouts(self, data: dict[Any, Any]) -> TimeoutsConfig:
        p = ("timeouts",)
        d = TimeoutsConfig()
        names = ("connect", "response", "idle", "queue", "ping", "client_header", "client_body", "client_send", "keepalive")
        self.known(data, p, names)
        return TimeoutsConfig(*(self.seconds((*p, k), data.get(k, getattr(d, k))) for k in names))

    def limits(self, data: dict[Any, Any]) -> LimitsConfig:
        p = ("limits",)
        d = LimitsConfig()
        self.known(data, p, ("max_body_size", "max_header_size"))
        return LimitsConfig(
            self.size((*p, "max_body_size"), data.get("max_body_size", d.max_body_size)),
            self.size((*p, "max_header_size"), data.get("max_header_size", d.max_header_size)),
        )

    def logging(self, data: dict[Any, Any]) -> LoggingConfig:
        p = ("logging",)
        self.known(data, p, ("access_log", "level", "access_log_format", "access_log_duration", "format", "secret_query"))
        access = self.access_log((*p, "access_log"), data.get("access_log"))
        level = data.get("level", "info")
        if level not in LOG_LEVELS:
            raise self.error((*p, "level"), f"must be one of {', '.join(LOG_LEVELS)}, not {_describe(level)}")
        access_format = self.choice((*p, "access_log_format"), data.get("access_log_format", "combined"), ACCESS_LOG_FORMATS)
        duration = self.boolean((*p, "access_log_duration"), data.get("access_log_duration", False))
        log_format = self.choice((*p, "format"), data.get("format", "text"), LOG_FORMATS)

        def query_name(path: Path, name: str) -> str:
            if not _QUERY_NAME.match(name):
                raise self.error(path, f"must be a query parameter name (no '&', '=' or space), not {name!r}")
            return name

        secret = self.string_list((*p, "secret_query"), data.get("secret_query", []), query_name)
        return LoggingConfig(access, level, access_format, duration, log_format, secret)

    def choice(self, path: Path, value: Any, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.error(path, f"must be one of {', '.join(choices)}, not {_describe(value)}")
        return str(value)

    def admin(self, data: dict[Any, Any], server: dict[Any, Any]) -> AdminConfig:
        p = ("admin",)
        self.known(data, p, ("listen",))
        listen = self.string_list((*p, "listen"), data.get("listen") or [], self.server_endpoint)
        public = server.get("listen", list(ServerConfig().listen))
        public = {public} if isinstance(public, str) else set(public) if isinstance(public, list) else set()
        for i, description in enumerate(listen):
            # Metrics and status name backends, sockets and load: never for the public.
            if description in public:
                raise self.error((*p, "listen", i), f"{description!r} is also in server.listen; the admin listener must be another one")
        return AdminConfig(listen)

    def compression(self, data: dict[Any, Any], p: Path = ("compression",)) -> CompressionConfig:
        d = CompressionConfig()
        self.known(data, p, ("enabled", "algorithms", "min_size", "gzip_level", "brotli_level",
                             "zstd_level", "types", "precompressed"))

        def coding(path: Path, name: str) -> str:
            if name not in CODINGS:
                raise self.error(path, f"must be one of {', '.join(CODINGS)}, not {name!r}")
            return name

        algorithms = self.string_list((*p, "algorithms"), data.get("algorithms", list(d.algorithms)), coding)
        if not algorithms:
            raise self.error((*p, "algorithms"), "must name at least one coding (set compression.enabled: false for none)")
        for i, name in enumerate(algorithms):
            if name in algorithms[:i]:
                raise self.error((*p, "algorithms", i), f"{name!r} is named twice")

        def media_type(path: Path, text: str) -> str:
            lowered = text.strip().lower()
            if not _MEDIA_TYPE.match(lowered):
                raise self.error(path, f"must be a media type like text/html or text/*, not {text!r}")
            return lowered

        types = self.string_list((*p, "types"), data.get("types", list(d.types)), media_type)

        def level(key: str, low: int, high: int) -> int:
            value = self.integer((*p, key), data.get(key, getattr(d, key)), minimum=low)
            if value > high:
                raise self.error((*p, key), f"must be at most {high}, not {value}")
            return value

        return CompressionConfig(
            enabled=self.boolean((*p, "enabled"), data.get("enabled", d.enabled)),
            algorithms=algorithms,
            min_size=self.size((*p, "min_size"), data.get("min_size", d.min_size)),
            gzip_level=level("gzip_level", 1, 9),
            brotli_level=level("brotli_level", 0, 11),
            zstd_level=level("zstd_level", 1, 19),
            types=types,
            precompressed=self.boolean((*p, "precompressed"), data.get("precompressed", d.precompressed)),
        )

    def static(self, data: dict[Any, Any], p: Path = ("static",)) -> StaticConfig:
        self.known(data, p, ("cache", "memory_cache_size"))
        d = StaticConfig()
        memory = data.get("memory_cache_size", d.memory_cache_size)
        if memory != 0:  # 0 switches the cache off
            memory = self.size((*p, "memory_cache_size"), memory)
        rules = data.get("cache") or []
        if not isinstance(rules, list):
            raise self.error((*p, "cache"), f"must be a list of rules (prefix, cache_control, expires), not {_describe(rules)}")
        out: list[CacheRule] = []
        for i, rule in enumerate(rules):
            path = (*p, "cache", i)
            if not isinstance(rule, dict):
                raise self.error(path, f"must be a mapping with prefix and cache_control or expires, not {_describe(rule)}")
            self.known(rule, path, ("prefix", "cache_control", "expires"))
            if "prefix" not in rule:
                raise self.error(path, "needs a prefix (a URL path starting with '/')")
            prefix = self.string((*path, "prefix"), rule["prefix"])
            assert prefix is not None
            self.url_prefix((*path, "prefix"), prefix)
            if "cache_control" not in rule and "expires" not in rule:
                raise self.error(path, "needs cache_control, expires or both")
            control = self.string((*path, "cache_control"), rule["cache_control"]) if "cache_control" in rule else None
            expires = self.expires((*path, "expires"), rule["expires"]) if "expires" in rule else None
            if any(r.prefix == prefix for r in out):
                raise self.error((*path, "prefix"), f"{prefix!r} has a rule already")
            out.append(CacheRule(prefix, control, expires))
        return StaticConfig(tuple(out), memory_cache_size=memory)

    def expires(self, path: Path, value: Any) -> "int | str":
        """nginx's ``expires``: seconds, a number with a unit (30d, 1y, -1), ``max`` or ``epoch``."""
        if value in ("max", "epoch"):
            return str(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        match = _DURATION.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise self.error(path, f"must be a time like 3600, 30d or 1y (s, m, h, d, w, M, y), max or epoch, not {_describe(value)}")
        return int(match[1]) * _DURATION_UNITS[match[2]]
