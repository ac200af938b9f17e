"""The HTTP server side of fephp on Twisted Web: the Site its HTTP/1.x and HTTP/2 connections serve, bounded and quiet as a front server must be."""

from __future__ import annotations

import secrets
import time
from typing import Any, Callable, Optional, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.web import http, server
from twisted.web.resource import IResource

from .._deferreds import Waiters
from ..cgi.realip import RealIP
from .adapt import exchange_of
from .compress import Compression
from .accesslog import AccessLog, combined_line, json_line, logged_request, secret_names
from .figures import SiteFigures
from .h1 import H1Protocol
from .heads import MAX_REQUEST_ID, valid_request_id
from .http2 import SPILL_TOTAL, H2Connection, HeldBytes

__all__ = ["FrontSite", "MAX_REQUEST_ID", "valid_request_id"]

_monotonic = time.monotonic


class FrontSite(server.Site):
    """The Site: a bounded request head, no form parsing, request ids, an optional access log and figures.

    Twisted's default would parse every form body into ``request.args`` (PHP
    does that itself) and log every request through the global log; we log
    only to the configured access log (:mod:`fephp.web.accesslog`), in
    Combined Log Format or JSON.  With *figures* (the admin listener is on),
    every finished request is counted there.
    """

    #: What makes the protocol of each HTTP/1.x connection (and of a TLS one
    #: until ALPN chooses "h2"): called with the site.  The tests give
    #: Twisted's HTTPChannel path, kept as their reference, here
    #: (tests/support/reference_http1.py).
    http1_protocol: Callable[["FrontSite"], Any] = H1Protocol
    #: One site's figures apart from the whole's, and its own access log: only a VirtualSite has them.
    site_figures: Optional[SiteFigures] = None
    own_access: Optional[AccessLog] = None

    def __init__(
        self,
        resource: IResource,
        *,
        access_log: Optional[str] = None,
        max_body_size: Optional[int] = None,
        max_header_size: int = 16 * 1024,
        timeout: Optional[float] = 60.0,
        reactor: Any = None,
        http2: bool = True,
        compression: Optional[Compression] = None,
        access_log_format: str = "combined",
        access_log_duration: bool = False,
        secret_query: Sequence[str] = (),
        figures: Optional[SiteFigures] = None,
        real_ip: Optional[RealIP] = None,
        client_header_timeout: Optional[float] = 60.0,
        client_body_timeout: Optional[float] = 60.0,
        client_send_timeout: Optional[float] = 60.0,
        http1: Optional[Callable[["FrontSite"], Any]] = None,
    ) -> None:
        kwargs: dict[str, Any] = {"timeout": timeout}
        if reactor is not None:
            kwargs["reactor"] = reactor
        super().__init__(resource, parsePOSTFormSubmission=False, **kwargs)
        if reactor is None:
            from twisted.internet import reactor
        self._call_later = reactor.callLater
        self.access_log = access_log
        self.access_log_format = access_log_format
        self.access_log_duration = access_log_duration
        self.secret_query = secret_names(secret_query)
        self.figures = figures
        self._access: Optional[AccessLog] = None
        # Unique per process start; the counter makes each id of this process unique.
        self._id_prefix = secrets.token_hex(8).encode()
        self._id_count = 0
        self.max_body_size = max_body_size
        self.max_header_size = max_header_size
        # timeouts.client_header, client_body and client_send (timeout is
        # timeouts.keepalive, Twisted's idle timer); None: no limit.
        self.client_header_timeout = client_header_timeout
        self.client_body_timeout = client_body_timeout
        self.client_send_timeout = client_send_timeout
        #: Offer HTTP/2 over TLS (ALPN "h2"); ``server.http2``.
        self.http2 = http2
        #: What the HTTP/2 streams of all its connections hold of PHP's output past their buffer.
        self.h2_held = HeldBytes(SPILL_TOTAL)
        #: Who may say who the client is (``server.trusted_proxies``); None: nobody.
        self.real_ip = real_ip
        #: The response compression policy, or None for none.
        self.compression = compression
        software = getattr(resource, "server_software", "fephp").encode("latin-1", "replace")
        # Sanitized once, as Headers would every time (the protocols send it as it is).
        self.server_header = [b" ".join(software.splitlines())]
        self._date_second = -1
        self._date = b""
        # (Read from the class, a function given there stays unbound.)
        self.http1_protocol = http1 if http1 is not None else type(self).http1_protocol
        self._channels: set[Any] = set()
        self._all_closed: Waiters[None] = Waiters()
        #: The sites of several (fephp.web.hosts.VirtualSite) whose access logs open and close with this one's.
        self.virtual_sites: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted's name
        protocol = self.http1_protocol(self)
        self._channels.add(protocol)
        return protocol

    def acceptableProtocols(self) -> list[bytes]:  # noqa: N802 - Twisted's name
        """What a TLS listener offers by ALPN (IProtocolNegotiationFactory), the preferred first."""
        return [b"h2", b"http/1.1"] if self.http2 else [b"http/1.1"]
    def new_request_id(self) -> bytes:
        """32 hex digits: this process's random prefix and a counter."""
        self._id_count += 1
        return b"%s%016x" % (self._id_prefix, self._id_count)

    def adopt_channels(self, old: "FrontSite") -> None:
        """Take *old*'s open client connections: their next requests come here (a reload's new site)."""
        if old is self:
            return
        for channel in old._channels:
            channel.site = self  # type: ignore[attr-defined]
            channel.factory = self
            self._channels.add(channel)
        old._channels.clear()

    def activity(self) -> "tuple[int, int]":
        """Open client connections, and requests received on them and not yet answered."""
        # fephp.web.h1's protocols say busy, Twisted's channels hold requests.
        busy = sum(
            1 for channel in self._channels if getattr(channel, "busy", None) or getattr(channel, "requests", None)
        )
        return len(self._channels), busy

    def http_date(self) -> bytes:
        """The Date header's value, formatted once a second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = http.datetimeToString(now)
        return self._date

    def _channel_closed(self, channel: Any) -> None:
        self._channels.discard(channel)
        if not self._channels:
            self._all_closed.fire(None)

    def close_connections(self) -> "Deferred[None]":
        """Close every client connection once what was written to it is sent.

        Used at shutdown: the reactor's own teardown would drop connections
        with their last bytes still unsent.  An HTTP/2 connection gets a
        GOAWAY and closes; an HTTP/1.1 one closes now if it is an idle
        keep-alive, after the request it holds otherwise (fresh ones too:
        a worker that accepted a connection just before it stopped
        listening answers the request on it).
        """
        if not self._channels:
            return succeed(None)
        d = self._all_closed.wait()
        for channel in list(self._channels):
            h2 = getattr(channel, "_h2", None)
            if isinstance(h2, H2Connection):
                h2.say_goodbye()  # GOAWAY first: the client knows which requests were answered
            if channel.transport is None:
                continue
            if isinstance(h2, H2Connection) or not hasattr(channel, "close_when_done"):
                # The channel's loseConnection unregisters it (or the HTTP/2
                # connection) as the transport's producer first: a TLS
                # transport does not close while a producer is registered.
                channel.loseConnection()
            else:
                channel.close_when_done()
        return d

    def startFactory(self) -> None:  # noqa: N802 - Twisted's name
        super().startFactory()
        self.logFile = None  # type: ignore[assignment]  # Twisted's; ours is self._access
        if self.access_log:
            self._access = AccessLog(self.access_log, self._call_later)
        for virtual in self.virtual_sites:
            virtual.open_log(self._call_later)

    def stopFactory(self) -> None:  # noqa: N802 - Twisted's name
        super().stopFactory()
        access, self._access = self._access, None
        if access is not None:
            access.close()
        for virtual in self.virtual_sites:
            virtual.close_log()

    def reopen_logs(self) -> None:
        """Write what the access log holds and open its file anew (SIGUSR1, after logrotate)."""
        if self._access is not None:
            self._access.reopen()
        for virtual in self.virtual_sites:
            virtual.reopen_log()

    def log(self, request: Any) -> None:
        """One finished request: counted in the figures, written to the access log (both from its Exchange)."""
        exchange = exchange_of(request)  # fephp's own exchanges are their own requests
        now = _monotonic()
        figures = self.figures
        # One site of several (fephp.web.hosts.VirtualSite): its own figures and log, or this one's log.
        view = getattr(request, "site", None) or self
        if figures is not None:
            figures.exchange_done(exchange, now)
            if view.site_figures is not None:
                view.site_figures.exchange_done(exchange, now)
        access = view.own_access or self._access
        if access is None:
            return
        entry = logged_request(exchange, now, self.secret_query)
        if self.access_log_format == "json":
            access.write(json_line(entry))
        else:
            access.write(combined_line(entry, duration=self.access_log_duration))
