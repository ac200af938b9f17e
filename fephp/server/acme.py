"""Automatic HTTPS, from the server's side: ACME certificates for the sites that ask, HTTP-01 answers, HTTP->HTTPS.

:func:`build_acme` makes one :class:`~fephp.acme.AcmeService` per ACME
account (sites with the same ``tls.acme`` and ``tls.storage`` share one),
each keeping one certificate per site (its ``hosts``, one order per name
set), and hands every certificate to an ``installed(site, stored)``
callback that swaps it into the TLS listeners' SNI map
(:meth:`~fephp.server.listeners.SNIMap.install`).  :class:`AcmeFront`
sits in front of the sites' resource: ``/.well-known/acme-challenge/``
is answered from the tokens before any rule or PHP, and a plain-HTTP
request for an ACME site is redirected to HTTPS (308) unless the site
switched that off.  TLS-ALPN-01 is answered by a
:class:`~fephp.acme.TlsAlpnResponder` the SNI map installs on each TLS context.

With ``server.workers`` the parent alone runs the AcmeServices (one order
per name set however many workers start) and serves no request: its
HTTP-01 key authorizations go through :class:`ChallengeFiles`, which the
workers read.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ..acme import (
    CHALLENGE_PATH,
    AccountKey,
    AcmeClient,
    AcmeService,
    ChallengeSolver,
    ChallengeTokens,
    ExternalAccount,
    Http01,
    KeyType,
    Storage,
    Stored,
    TlsAlpnResponder,
    renewal_due_at,
)
from ..acme.ondemand import OnDemand
from ..acme.storage import FOLDER_MODE, write_atomically
from ..web.adapt import exchange_of
from ..web.errors import send_error
from .doctor import Finding
from .settings import AcmeConfig, Config, SiteConfig
from .tls import ssl_arguments

__all__ = [
    "AcmeFront", "AcmeSite", "ChallengeFiles", "acme_findings", "acme_sites", "build_acme", "challenge_folder",
    "front_for", "storage_folder",
]


@dataclass(frozen=True)
class AcmeSite:
    """A site whose certificate comes from ACME: its name (for logs and metrics), its hosts, its ACME settings."""

    name: str
    hosts: tuple[str, ...]
    default: bool
    acme: AcmeConfig
    #: ``tls.storage``, absolute.
    storage: str

    @property
    def exact_hosts(self) -> tuple[str, ...]:
        """The hosts ordered as one name set (sorted): all but the wildcards, whose names come on demand."""
        return tuple(sorted(set(host for host in self.hosts if not host.startswith("*."))))

    @property
    def wildcards(self) -> tuple[str, ...]:
        """The ``*.`` hosts, whose names are obtained on demand (with ``on_demand``)."""
        return tuple(host for host in self.hosts if host.startswith("*."))


def acme_sites(sites: Sequence[SiteConfig]) -> list[AcmeSite]:
    """The sites among *sites* whose certificate comes from ACME."""
    return [
        AcmeSite(site.name, site.hosts, site.default, site.tls.acme, site.tls.storage or "")
        for site in sites
        if site.tls is not None and site.tls.acme is not None
    ]


def front_for(resource: Any, sites: Sequence[AcmeSite], tokens: ChallengeTokens) -> Any:
    """*resource* behind an :class:`AcmeFront` when some sites use ACME; else *resource* itself."""
    if not sites:
        return resource
    redirect = frozenset(host for site in sites if site.acme.redirect for host in site.hosts)
    return AcmeFront(resource, tokens, redirect)


def _redirected(name: str, hosts: frozenset[str]) -> bool:
    """Whether *name* is one of *hosts* or under one of their ``*.`` wildcards (as HostMap matches them)."""
    if name in hosts:
        return True
    labels = name.split(".")
    return any(f"*.{'.'.join(labels[i:])}" in hosts for i in range(1, len(labels)))


def storage_folder(storage: str, directory: str) -> Path:
    """The state folder of one CA under ``tls.storage``: a folder per directory URL, so that certificates from
    Let's Encrypt's staging are never served once the directory is production's."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", directory.split("://", 1)[-1]).strip("_")
    return Path(storage) / slug


def challenge_folder(sites: Sequence[AcmeSite]) -> Path:
    """Where the parent of ``server.workers`` leaves HTTP-01 key authorizations for its workers: ``http-01`` under
    the first ACME site's ``tls.storage`` (the parent writes there already, and its workers can read it)."""
    return Path(sites[0].storage) / "http-01"


#: A token as RFC 8555 8.1 makes it: base64url, no padding (128 bits or more; 64 characters is plenty of room).
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{1,64}")
#: A key authorization is the token, a dot and a base64url SHA-256 thumbprint (RFC 8555 8.1).
_MAX_KEY_AUTHORIZATION = 256


class ChallengeFiles(ChallengeTokens):
    """HTTP-01 answers as files in *folder*, one per token: written by the parent of ``server.workers``, read by
    whichever worker accepts the CA's connection.

    Files rather than a pipe command: :meth:`put` returns once the file is
    in place (0600, renamed into place), and the ACME client tells the CA to
    validate only after it returns, so no worker can be asked before it can
    answer, even a busy one or one started since; a line on each worker's
    pipe would race with the CA's connection.  A request reads one small
    file, and only on the challenge path.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def put(self, token: str, key_authorization: str) -> None:
        """Answer *key_authorization* for *token* from now on, in every worker."""
        if not _TOKEN.fullmatch(token.encode()):
            raise ValueError(f"not an ACME token: {token!r}")
        self.folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        write_atomically(self.folder / token, key_authorization.encode())
        super().put(token, key_authorization)

    def remove(self, token: str) -> None:
        """Stop answering for *token*."""
        super().remove(token)
        if _TOKEN.fullmatch(token.encode()):
            (self.folder / token).unlink(missing_ok=True)

    def answer(self, path: bytes) -> Optional[bytes]:
        """The key authorization stored for the token in *path*, or None (no such token, not a token at all)."""
        if not path.startswith(CHALLENGE_PATH):
            return None
        token = path[len(CHALLENGE_PATH):]
        if not _TOKEN.fullmatch(token):
            return None  # nothing but a token names a file here: no "..", no "/"
        try:
            fd = os.open(self.folder / token.decode("ascii"), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            return os.read(fd, _MAX_KEY_AUTHORIZATION)
        finally:
            os.close(fd)


def _http_client(reactor: Any, ca_root: Optional[str]) -> HTTPClient:
    """treq over an Agent that trusts the platform's roots, or only the PEM root in *ca_root* (a private CA)."""
    if ca_root is None:
        return HTTPClient(Agent(reactor))
    with open(ca_root, "rb") as f:
        root = ssl.Certificate.loadPEM(f.read())
    return HTTPClient(Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=root)))


def build_acme(
    sites: Sequence[AcmeSite],
    reactor: Any,
    tokens: ChallengeTokens,
    alpn: Optional[TlsAlpnResponder],
    installed: Callable[[Optional[AcmeSite], Stored], object],
) -> "tuple[list[AcmeService], dict[str, OnDemand]]":
    """One AcmeService per ACME account among *sites*, each keeping its sites' certificates valid (TLS-ALPN-01 only
    with *alpn*: the listeners' engine can answer it); and, by site name, the on-demand names of the sites with
    ``on_demand``.  *installed* is called with the site (None for a name obtained on demand) and the certificate."""
    groups: dict[tuple[AcmeConfig, str], list[AcmeSite]] = {}
    for site in sites:
        groups.setdefault((site.acme, site.storage), []).append(site)
    services = []
    on_demand: dict[str, OnDemand] = {}
    for (acme, storage_path), members in groups.items():
        storage = Storage(storage_folder(storage_path, acme.directory))
        key_type = KeyType(acme.key_type)
        http = _http_client(reactor, acme.ca_root)
        client = AcmeClient(http, acme.directory, AccountKey(storage.account_key(key_type)), reactor)
        solvers: list[ChallengeSolver] = []
        for challenge in acme.challenges:
            if challenge == "http-01":
                solvers.append(Http01(tokens))
            elif alpn is not None:
                solvers.append(alpn)
        # A site's exact hosts are one name set, ordered at start; its wildcards' names come on demand.
        by_names = {site.exact_hosts: site for site in members if site.exact_hosts}

        def install(stored: Stored, by_names: dict[tuple[str, ...], AcmeSite] = by_names) -> None:
            installed(by_names.get(stored.names), stored)

        eab = ExternalAccount(acme.eab_kid, acme.eab_hmac_key) if acme.eab_kid and acme.eab_hmac_key else None
        service = AcmeService(
            client=client, storage=storage, name_sets=list(by_names), solvers=solvers, installed=install,
            clock=reactor, email=acme.email, eab=eab, key_type=key_type,
        )
        services.append(service)
        for site in members:
            if acme.on_demand_ask is not None:
                on_demand[site.name] = OnDemand(
                    acme.on_demand_ask, HTTPClient(Agent(reactor)), reactor, _adder(service),
                    rate=acme.on_demand_rate, period=acme.on_demand_period,
                )
    return services, on_demand


def _adder(service: AcmeService) -> "Callable[[str], Deferred[None]]":
    def add(name: str) -> "Deferred[None]":
        return service.add([name])

    return add


class AcmeFront(Resource):
    """In front of the sites: HTTP-01 answers (before any rule or PHP), then plain HTTP to HTTPS for ACME hosts.

    *redirect_hosts* are the lowercase names (no port) whose plain-HTTP
    requests get a 308 to the same URL on https (RFC 9110 15.4.9: the method
    and body are kept); the challenge path is never redirected, as the CA
    fetches it over plain HTTP on port 80 (RFC 8555 8.3).
    """

    isLeaf = True

    def __init__(self, inner: Any, tokens: ChallengeTokens, redirect_hosts: frozenset[str]) -> None:
        super().__init__()
        self.inner = inner
        self.tokens = tokens
        self.redirect_hosts = redirect_hosts
        #: Read by FrontSite for its Server header, as it reads the resource it serves.
        self.server_software = getattr(inner, "server_software", "fephp")

    def render(self, request: Any) -> Any:
        """Answer a challenge or redirect through *request*'s Exchange (a twisted.web Request's or fephp's own
        HTTP/1.x one), or hand *request* to the sites."""
        exchange = exchange_of(request)
        path = exchange.path
        if path.startswith(CHALLENGE_PATH):
            answer = self.tokens.answer(path)
            if answer is None:
                send_error(exchange, 404, [(b"cache-control", b"no-store")])
                return NOT_DONE_YET
            exchange.start_response(200, [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", b"%d" % len(answer)),
                (b"cache-control", b"no-store"),
            ])
            exchange.write(answer)
            exchange.finish()
            return NOT_DONE_YET
        if self.redirect_hosts and exchange.scheme != b"https":
            host = (exchange.header(b"host") or b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if _redirected(name.rstrip("."), self.redirect_hosts):
                location = b"https://" + name.encode("latin-1") + exchange.target
                send_error(exchange, 308, [(b"location", location), (b"cache-control", b"no-store")])
                return NOT_DONE_YET
        return self.inner.render(request)


def _listener_port(description: str) -> tuple[str, Optional[int]]:
    """The kind of a ``listen`` string and its port (None: a UNIX socket, systemd's, or no number)."""
    args, kwargs = ssl_arguments(description)
    kind = args[0] if args else ""
    port = kwargs.get("port", args[1] if len(args) > 1 else None)
    return kind, int(port) if port is not None and str(port).isdigit() else None


def acme_findings(config: Config, now: datetime.datetime) -> list[Finding]:
    """What ``check-config --probe`` says of each site with ``tls.acme``: whether its challenges can reach the
    listeners (the CA connects to port 80 for http-01, 443 for tls-alpn-01, RFC 8555 8.3 and RFC 8737 3) and what
    is stored (its expiry, when it is due), as of *now*."""
    listeners = [_listener_port(d) for d in config.server.listen]
    plain = [port for kind, port in listeners if kind in ("tcp", "tcp6", "systemd")]
    secure = [port for kind, port in listeners if kind == "ssl"]
    findings = []
    for site in acme_sites(config.sites):
        said = f"site {site.name}: ACME at {site.acme.directory}"
        reachable, unreachable = [], []
        for challenge in site.acme.challenges:
            if challenge == "http-01":
                ports = plain
                why = "no plain listener (tcp:80)" if not ports else f"no plain listener on port 80 ({ports})"
            else:
                ports = secure if config.server.tls_engine == "pyopenssl" else []
                why = ("server.tls_engine stdlib cannot answer it" if config.server.tls_engine != "pyopenssl"
                       else "no ssl: listener" if not ports else f"no ssl: listener on port 443 ({ports})")
            wanted = 80 if challenge == "http-01" else 443
            # A systemd socket's port is unknown here, as is a port forwarded from 80 or 443 by a firewall.
            if wanted in ports or None in ports:
                reachable.append(challenge)
            else:
                unreachable.append(f"{challenge}: {why}; forward port {wanted} to it or answer another challenge")
        if reachable:
            findings.append(Finding(False, f"{said}: the CA can reach fephp by {', '.join(reachable)}"
                                    + "".join(f"; not by {u}" for u in unreachable)))
        else:
            findings.append(Finding(True, f"{said}: no challenge can reach fephp ({'; '.join(unreachable)})"))
        if not site.exact_hosts:
            ask = site.acme.on_demand_ask
            findings.append(Finding(False, f"site {site.name}: every name on demand, asked of {ask}"))
            continue
        stored = Storage(storage_folder(site.storage, site.acme.directory)).load(site.exact_hosts)
        if stored is None:
            findings.append(Finding(False, f"site {site.name}: no certificate stored yet: obtained at the first start"))
            continue
        due = renewal_due_at(stored.not_before, stored.not_after, 0.0)
        left = (stored.not_after - now).total_seconds() / 86400
        findings.append(Finding(
            left <= 0,
            f"site {site.name}: certificate stored, valid until {stored.not_after.isoformat()} ({left:.1f} days),"
            f" renewal due from {(due - (stored.not_after - stored.not_before) / 30).isoformat()}"
            f" to {due.isoformat()} (the CA's renewal window first, if it offers one)",
        ))
    return findings
