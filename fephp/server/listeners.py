"""Listening ports that a reload can hand to a new site without closing them, from the server's side.

A :class:`Listener` binds one ``server.listen`` (or ``admin.listen``)
endpoint string before twistd drops privileges, as twistd's own strports
services do, and raises when it cannot.  :meth:`Listener.use` gives the
port a new factory: connections accepted from then on go to the new site,
the socket stays open (no connection is refused during a reload), and a TLS
listener reads its certificate and key files again.

With several sites, a TLS listener shows each site's certificate to the
clients that name it (SNI, :class:`SNIMap`): the endpoint string's own
certificate is for the names no site with ``tls`` has.

An ``ssl:`` listener runs Twisted's TLS (pyOpenSSL) or, with
``server.tls_engine: stdlib``, the standard library's (:mod:`fephp.server.tls`):
both are a TCP port whose factory wraps the site's, so a reload can switch
from one to the other on the same socket.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional, Sequence

import twisted
from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet import ssl
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from ..acme import TlsAlpnResponder
from ..web.hosts import HostMap, host_name
from .settings import SiteConfig, TLSConfig
from .tls import SNIHook, TLSServerFactory, context_from_description, listen_ssl, server_context

__all__ = ["Listener", "SNIMap", "load_tls", "tls_context"]

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def load_tls(tls: TLSConfig, protocols: Sequence[bytes] = ()) -> SSL.Context:
    """A server context with *tls*'s chain and key, offering *protocols* by ALPN; raises when they do not load or match.

    Twisted's CertificateOptions makes it, with its defaults (TLS 1.2 and
    up, its cipher list); the ALPN choice is set on each site's context, as
    a context switched to by SNI answers ALPN itself.
    """
    with open(tls.certificate, "rb") as f:
        blocks = _PEM_CERTIFICATE.findall(f.read())
    if not blocks:
        raise ValueError(f"{tls.certificate} holds no PEM certificate")
    with open(tls.key, "rb") as f:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, f.read())
    chain = [ssl.Certificate.loadPEM(block).original for block in blocks]
    options = ssl.CertificateOptions(
        privateKey=key, certificate=chain[0], extraCertChain=chain[1:],
        acceptableProtocols=list(protocols) or None,
    )
    return options.getContext()


class SNIMap:
    """The TLS contexts of the sites with ``tls``, by the names their hosts give; the default site's for the rest.

    *obtained* is where certificates a site did not name come in, by site
    name (ACME's, issue 20: the chain and key its state folder holds, as a
    TLSConfig); a site's own ``tls`` files are overridden by them.  A site
    whose certificate comes from ACME (``tls.acme``) is in the map once its
    files are stored; until then its names get the default's context (or
    the ``ssl:`` listener's own), and :meth:`install` puts in each
    certificate the ACME service obtains, for the handshakes from then on.
    With *alpn*, every pyOpenSSL context (and the listener's own) answers
    TLS-ALPN-01 handshakes (RFC 8737) through it.
    """

    def __init__(self, sites: Sequence[SiteConfig], protocols: Sequence[bytes],
                 obtained: Optional[Mapping[str, TLSConfig]] = None,
                 alpn: Optional[TlsAlpnResponder] = None,
                 on_demand: Optional[Callable[[str, str], object]] = None) -> None:
        if obtained:
            sites = [replace(site, tls=obtained.get(site.name, site.tls)) for site in sites]
        self.protocols = list(protocols)
        self.alpn = alpn
        self._acme = any(site.tls is not None and site.tls.acme is not None for site in sites)
        #: Told (site name, name) of a handshake naming a wildcard host of an on-demand site, without a certificate
        #: of its own yet (fephp.acme.ondemand).
        self.on_demand = on_demand
        self._demand: HostMap[str] = HostMap([
            ([h for h in site.hosts if h.startswith("*.")], site.name) for site in sites
            if site.tls is not None and site.tls.acme is not None and site.tls.acme.on_demand_ask is not None
        ])
        self._sites = tuple(site for site in sites if site.tls is not None and _present(site.tls))
        self._hook: Optional[SNIHook] = None
        self._entries: list[tuple[tuple[str, ...], bool, TLSConfig, Any]] = []
        for site in self._sites:
            assert site.tls is not None
            context = load_tls(site.tls, protocols)
            self._watch(context)
            self._entries.append((site.hosts, site.default, site.tls, context))
        self._rebuild()

    def _watch(self, context: SSL.Context) -> None:
        if self.alpn is not None:
            self.alpn.install(context, _first_offered(self.protocols))

    def _rebuild(self) -> None:
        default = next((context for _, is_default, _, context in self._entries if is_default), None)
        self.contexts: HostMap[Any] = HostMap([(hosts, context) for hosts, _, _, context in self._entries], default)
        self._stdlib: Optional[HostMap[Any]] = None

    def install(self, hosts: Sequence[str], default: bool, tls: TLSConfig) -> None:
        """Show the certificate in *tls*'s files to the clients naming one of *hosts* from now on (ACME's new one)."""
        context = load_tls(tls, self.protocols)
        self._watch(context)
        self._entries = [e for e in self._entries if e[0] != tuple(hosts)] + [(tuple(hosts), default, tls, context)]
        self._rebuild()

    def __bool__(self) -> bool:
        # Sites with tls.acme count before their certificates come: install() puts them in later.
        return bool(self.contexts.exact or self.contexts.wildcards or self.contexts.default is not None or self._acme)

    def choose(self, connection: SSL.Connection) -> None:
        """OpenSSL's server name callback: switch *connection* to the context of the name the client gave."""
        name = connection.get_servername()
        key = host_name(name) if name else None
        context = self.contexts.find(key)
        if key and self.on_demand is not None:
            self._seen(key)
        if context is not None:
            connection.set_context(context)
        elif self.alpn is not None and _TWISTED_SETS_ALPN_PER_CONNECTION:
            # Twisted before 26 sets its own ALPN callback on the listener's context for each connection
            # (TLSMemoryBIOFactory._applyProtocolNegotiation), after this map's: put TLS-ALPN-01's back.
            self._watch(connection.get_context())

    def _seen(self, key: bytes) -> None:
        """On-demand TLS: a name of a wildcard host of an on-demand site, with no certificate of its own, is told."""
        if key not in self.contexts.exact:
            site = self._demand.find(key)
            if site is not None and self.on_demand is not None:
                self.on_demand(site, key.decode("ascii"))

    def stdlib_hook(self) -> SNIHook:
        """The same choice for server.tls_engine stdlib: the sites' files loaded by the standard library (once per
        set of certificates: again after :meth:`install`)."""
        if self._hook is None:

            def choose(name: Optional[str]) -> Optional[Any]:
                if self._stdlib is None:
                    default = None
                    entries = []
                    for hosts, is_default, tls, _ in self._entries:
                        context = server_context(tls.certificate, tls.key)
                        entries.append((hosts, context))
                        if is_default:
                            default = context
                    self._stdlib = HostMap(entries, default)
                key = host_name(name.encode("ascii")) if name else None
                if key and self.on_demand is not None:
                    self._seen(key)
                return self._stdlib.find(key)

            self._hook = choose
        return self._hook


#: Twisted's TLSMemoryBIOFactory of releases before 26 (PyPy 3.9's newest is 25.5) replaces the ALPN select
#: callback of a connection's context when the connection is made.
_TWISTED_SETS_ALPN_PER_CONNECTION = isinstance(twisted.version.major, int) and twisted.version.major < 26


def _present(tls: TLSConfig) -> bool:
    """Whether *tls*'s files are there: always for a site's own files (checked with the configuration), not yet for
    ACME's before the first certificate is stored."""
    return tls.acme is None or (os.path.isfile(tls.certificate) and os.path.isfile(tls.key))


def _first_offered(protocols: Sequence[bytes]) -> Callable[[SSL.Connection, Sequence[bytes]], bytes]:
    """The ALPN choice of a listener offering *protocols* (preferred first): the first the client offers too."""

    def select(connection: SSL.Connection, offered: Sequence[bytes]) -> bytes:
        for protocol in protocols:
            if protocol in offered:
                return protocol
        return b""  # no overlap: as Twisted's own callback answers

    return select


class _SNIContextFactory:
    """An ``ssl:`` endpoint's context factory whose context asks :class:`SNIMap` for each client's certificate."""

    def __init__(self, base: Any, sni: SNIMap) -> None:
        self._context = base.getContext()
        self._context.set_tlsext_servername_callback(sni.choose)
        sni._watch(self._context)  # a name under TLS-ALPN-01 validation has no context of its own yet

    def getContext(self) -> Any:  # noqa: N802 - Twisted's name
        return self._context


class _ContextCatcher:
    """Stands in for the reactor so that an ``ssl:`` endpoint hands over the context factory it built."""

    def __init__(self) -> None:
        self.context: Any = None

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = "") -> None:  # noqa: N802,N803
        self.context = contextFactory


def tls_context(description: str) -> Optional[Any]:
    """The TLS context factory of an ``ssl:`` endpoint string, its files read now; None for any other kind."""
    if description.split(":", 1)[0] != "ssl":
        return None
    catcher = _ContextCatcher()
    serverFromString(catcher, description).listen(None)  # type: ignore[arg-type]
    return catcher.context


class Listener(Service):
    """One endpoint, listening from privilegedStartService on, whose factory can be replaced."""

    def __init__(self, reactor: Any, description: str, factory: Any, sni: Optional[SNIMap] = None,
                 tls_engine: str = "pyopenssl") -> None:
        self._reactor = reactor
        self.description = description
        self.factory = factory
        #: The sites' certificates by name (``ssl:`` only); :meth:`use` takes the one set here at that time.
        self.sni = sni
        #: server.tls_engine, for an ssl: description: "pyopenssl" or "stdlib".
        self.tls_engine = tls_engine
        self.port: Any = None

    @property
    def _stdlib_tls(self) -> bool:
        return self.tls_engine == "stdlib" and self.description.split(":", 1)[0] == "ssl"

    def privilegedStartService(self) -> None:  # noqa: N802 - Twisted's name
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self.port is not None:
            return
        if self._stdlib_tls:
            sni = self.sni.stdlib_hook() if self.sni else None
            self.port = listen_ssl(self._reactor, self.description, self.factory, sni=sni)
            return
        result: list[Any] = []
        serverFromString(self._reactor, self.description).listen(self.factory).addBoth(result.append)
        # Stream endpoints listen at once; a port that cannot be bound stops
        # twistd (or the reload) with the error.
        if not result:
            raise RuntimeError(f"{self.description}: the endpoint did not listen at once")
        if isinstance(result[0], Failure):
            result[0].raiseException()
        self.port = result[0]
        if self.sni and tls_context(self.description) is not None:
            self.use(self.factory)  # the same factory, behind a context that chooses by SNI

    def use(self, factory: Any) -> None:
        """Serve new connections with *factory* (a TLS listener re-reads its certificate and key, with its tls_engine now)."""
        self.factory = factory
        port = self.port
        if port is None:
            return
        wrapped: Any
        if self._stdlib_tls:
            sni = self.sni.stdlib_hook() if self.sni else None
            wrapped = TLSServerFactory(context_from_description(self.description), factory, self._reactor, sni=sni)
        else:
            context = tls_context(self.description)
            if context is not None and self.sni:
                context = _SNIContextFactory(context, self.sni)
            wrapped = TLSMemoryBIOFactory(context, False, factory) if context is not None else factory
        old = port.factory
        wrapped.doStart()  # what the port did for the old one when it started listening
        port.factory = wrapped
        old.doStop()

    def stopService(self) -> "Deferred[Any]":  # noqa: N802 - Twisted's name
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return port.stopListening() or succeed(None)
