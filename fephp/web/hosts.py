"""Several sites behind one listener, from the HTTP side: the Host (HTTP/2's :authority) and the TLS name choose the site.

:class:`HostMap` finds the site of a name (exact names first, then
``*.example.com`` wildcards longest first, then the default);
:class:`HostDispatch` is the one leaf resource of a FrontSite that serves
several sites, each a :class:`VirtualSite` with its own app, compression
and access log.  With one site, the build step serves the app itself and
none of this is on the request path.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterable, Optional, Sequence, TypeVar

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .accesslog import AccessLog
from .adapt import exchange_of
from .compress import Compression
from .errors import send_error
from .figures import SiteFigures

__all__ = ["HostDispatch", "HostMap", "VirtualSite", "connection_server_name", "host_name"]

#: Bound on the Host values whose site HostDispatch remembers: past it, the memory starts again empty.
HOST_CACHE_SIZE = 1024

T = TypeVar("T")


def host_name(value: bytes) -> bytes:
    """The name a Host header's value (or a TLS server name) gives: lowercase, no port, no final dot.

    ``[::1]:8080`` is ``[::1]`` (RFC 3986 3.2.2: an IPv6 literal sits in
    brackets, its colons are not the port's).
    """
    value = value.lower()
    if value[:1] == b"[":
        end = value.find(b"]")
        return value[: end + 1] if end > 0 else value
    colon = value.find(b":")
    if colon >= 0:
        value = value[:colon]
    return value[:-1] if value[-1:] == b"." else value


class HostMap(Generic[T]):
    """Names to sites: an exact name first, then the longest ``*.suffix`` wildcard that matches, then the default.

    A wildcard ``*.example.com`` matches ``a.example.com`` and
    ``a.b.example.com``, not ``example.com`` itself (as nginx's
    ``*.example.com``).  Names are given lowercase without a port.
    """

    def __init__(self, entries: Iterable[tuple[Sequence[str], T]], default: Optional[T] = None) -> None:
        self.exact: dict[bytes, T] = {}
        wildcards: list[tuple[bytes, T]] = []
        for names, site in entries:
            for name in names:
                if name.startswith("*."):
                    wildcards.append((name[1:].encode("ascii"), site))  # ".example.com"
                else:
                    self.exact[name.encode("ascii")] = site
        #: Suffixes, the longest first: the most specific wildcard wins.
        self.wildcards = sorted(wildcards, key=lambda w: -len(w[0]))
        self.default = default

    def find(self, name: Optional[bytes]) -> Optional[T]:
        """The site of *name* (a :func:`host_name`), the default's for an unknown one or None, or None."""
        if not name:
            return self.default
        site = self.exact.get(name)
        if site is not None:
            return site
        for suffix, candidate in self.wildcards:
            if name.endswith(suffix):
                return candidate
        return self.default


def connection_server_name(request: Any) -> Optional[bytes]:
    """The name the client asked for in TLS (SNI) on *request*'s connection, lowercase; None without TLS or SNI.

    *request* is a twisted.web Request (its ``transport``, or an HTTP/2
    stream's connection's) or fephp's own HTTP/1.x exchange (its ``transport``).
    """
    transport = getattr(request, "transport", None)
    if transport is None:  # an HTTP/2 stream: its connection has the transport
        transport = getattr(getattr(getattr(request, "channel", None), "_connection", None), "transport", None)
    if transport is None:
        return None
    given = getattr(transport, "server_name", None)  # fephp.server.tls's TLSServerProtocol (tls_engine: stdlib)
    if isinstance(given, str):
        return host_name(given.encode("ascii", "replace"))
    get = getattr(transport.getHandle(), "get_servername", None)  # an OpenSSL Connection (TLSMemoryBIOProtocol's)
    if get is None:
        return None
    name = get()
    return host_name(name) if name else None


class VirtualSite:
    """One site of several: its app (a leaf resource), its compression, and its own access log if it has one.

    It is what the site's requests see as ``request.site``: its own
    ``compression`` and access log, every other attribute the FrontSite's
    (:meth:`bind`), so that the request path reads one attribute either way.
    """

    def __init__(self, name: str, app: Any, *, compression: Optional[Compression], access_log: Optional[str] = None,
                 figures: Optional[SiteFigures] = None) -> None:
        self.name = name
        #: This site's requests counted apart (the admin side's ``site`` label), when figures are kept.
        self.site_figures = figures
        self.app = app
        self.compression = compression
        self.access_log_path = access_log
        self._front: Any = None

    def bind(self, front: Any) -> None:
        """Stand for *front* (the FrontSite) in what this site does not have of its own."""
        self._front = front

    def __getattr__(self, name: str) -> Any:
        front = self.__dict__.get("_front")
        if front is None:
            raise AttributeError(name)
        return getattr(front, name)

    # -- the access log, opened and closed with the FrontSite's ------------------------

    #: The site's own access log while open; None: the FrontSite's is written.
    own_access: Optional[AccessLog] = None

    def open_log(self, call_later: Callable[..., Any]) -> None:
        if self.access_log_path is not None and self.own_access is None:
            self.own_access = AccessLog(self.access_log_path, call_later)

    def close_log(self) -> None:
        access, self.own_access = self.own_access, None
        if access is not None:
            access.close()

    def reopen_log(self) -> None:
        if self.own_access is not None:
            self.own_access.reopen()


_UNSEEN: Any = object()


class HostDispatch(Resource):
    """The one leaf resource of several sites: the Host chooses the site, whose app renders the request.

    An unknown Host without a default site gets *unknown_status* (421 or
    404), never another site's page.  On a TLS connection whose server
    name (SNI) chose another site than the Host does, the answer is 421
    Misdirected Request (RFC 9110 15.5.20): a client that coalesced
    HTTP/2 connections (RFC 9113 9.1.1) opens one for that name instead.
    """

    isLeaf = True

    def __init__(self, sites: Sequence[VirtualSite], hosts: HostMap[VirtualSite], *, unknown_status: int = 421,
                 server_software: str = "fephp") -> None:
        super().__init__()
        self.sites = list(sites)
        self.hosts = hosts
        self.unknown_status = unknown_status
        #: Host value as sent -> its site (or None): most requests repeat a few values.
        self._by_value: dict[bytes, Optional[VirtualSite]] = {}
        #: The FrontSite reads it for the Server header.
        self.server_software = server_software

    def bind(self, front: Any) -> None:
        """Each site stands for *front*, the FrontSite that serves them, in what it does not have of its own."""
        for site in self.sites:
            site.bind(front)

    def site_for(self, exchange: Any, request: Any) -> "tuple[Optional[VirtualSite], int]":
        """The site of *exchange* (*request*'s), or None and the status to answer (the unknown host's, or 421)."""
        value = exchange.header(b"host")  # one at most: the channel refused two
        if value:
            cache = self._by_value
            site = cache.get(value, _UNSEEN)
            if site is _UNSEEN:
                site = self.hosts.find(host_name(value))
                if len(cache) >= HOST_CACHE_SIZE:
                    cache.clear()  # a client sending ever new names cannot grow it
                cache[value] = site
        else:
            site = self.hosts.default
        if site is None:
            return None, self.unknown_status
        if exchange.scheme == b"https":
            server_name = connection_server_name(request)
            if server_name is not None and self.hosts.find(server_name) is not site:
                return None, 421
        return site, 200

    def render(self, request: Any) -> Any:
        """Serve *request* (a twisted.web Request, or fephp's own HTTP/1.x exchange) with its Host's site's resource."""
        exchange = exchange_of(request)
        site, status = self.site_for(exchange, request)
        if site is None:
            send_error(exchange, status)
            return NOT_DONE_YET
        request.site = site  # its access log and figures (FrontSite.log reads them)
        exchange.compression = site.compression  # the exchange's write path decides with the site's own
        return site.app.render(request)

    # -- what the service asks of its app --------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests handed to PHP and not yet finished, all sites together."""
        return sum(site.app.in_flight for site in self.sites)

    def wait_idle(self) -> "Deferred[None]":
        """Fires when no site has a PHP request in flight."""
        busy = [site.app.wait_idle() for site in self.sites if site.app.in_flight]
        if not busy:
            return succeed(None)
        return DeferredList(busy).addCallback(lambda _: None)

    @property
    def backend(self) -> Any:
        """The first site's backend (what a caller that knows one site asks for)."""
        return self.sites[0].app.backend
