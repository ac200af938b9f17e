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
from twisted.web.server import Request

from .._twisted import headers_raw
from .accesslog import AccessLog
from .compress import Compression
from .errors import send_error

__all__ = ["HostDispatch", "HostMap", "VirtualSite", "connection_server_name", "host_name"]

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


def connection_server_name(request: Request) -> Optional[bytes]:
    """The name the client asked for in TLS (SNI) on *request*'s connection, lowercase; None without TLS or SNI."""
    channel: Any = request.channel
    transport = getattr(channel, "transport", None)
    if transport is None:  # an HTTP/2 stream: its connection has the transport
        transport = getattr(getattr(channel, "_connection", None), "transport", None)
    handle = transport.getHandle() if transport is not None else None
    get = getattr(handle, "get_servername", None)  # an OpenSSL Connection (TLSMemoryBIOProtocol's handle)
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

    def __init__(self, name: str, app: Any, *, compression: Optional[Compression], access_log: Optional[str] = None) -> None:
        self.name = name
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

    # ``_access`` is set only when the site has its own log: else it is the FrontSite's.
    _own_log = False

    def open_log(self, call_later: Callable[..., Any]) -> None:
        if self.access_log_path is not None and not self._own_log:
            self._own_log = True
            self._access = AccessLog(self.access_log_path, call_later)

    def close_log(self) -> None:
        access = self.__dict__.pop("_access", None)
        self._own_log = False
        if access is not None:
            access.close()

    def reopen_log(self) -> None:
        access = self.__dict__.get("_access")
        if access is not None:
            access.reopen()


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
        #: The FrontSite reads it for the Server header.
        self.server_software = server_software

    def bind(self, front: Any) -> None:
        """Each site stands for *front*, the FrontSite that serves them, in what it does not have of its own."""
        for site in self.sites:
            site.bind(front)

    def site_for(self, request: Request) -> "tuple[Optional[VirtualSite], int]":
        """The site of *request*, or None and the status to answer (the unknown host's, or 421)."""
        given = headers_raw(request.requestHeaders).get(b"Host")
        site = self.hosts.find(host_name(given[0]) if given else None)
        if site is None:
            return None, self.unknown_status
        if request.isSecure():
            server_name = connection_server_name(request)
            if server_name is not None and self.hosts.find(server_name) is not site:
                return None, 421
        return site, 200

    def render(self, request: Request) -> Any:
        site, status = self.site_for(request)
        if site is None:
            return send_error(request, status)
        request.site = site  # type: ignore[assignment]  # its compression and access log (FrontSite.log reads the latter)
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
