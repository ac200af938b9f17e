"""Twisted Web's HTTPChannel path as fephp bent it, kept in the tests only as the reference its own HTTP/1.x protocol is compared with.

This was fephp's HTTP/1.x engine before fephp.web.h1 (issue 18): a
Twisted ``HTTPChannel`` (:class:`ReferenceChannel`) and ``server.Request``
(:class:`ReferenceRequest`) with fephp's answers (414/431/400 for bad heads,
framing refusals, 413, the client_* timeouts, HTTP/1.0 keep-alive, raw UTF-8
targets, the held head sent with the first body bytes) and its one-step
parser of a whole bodiless head.  The differential and fuzz tests feed the
same bytes to it and to fephp.web.h1 and compare what the app and the client
get; a test that needs the reference serves with
``FrontSite(..., http1=reference_http1)``.  It reaches into Twisted's
private state through the functions below (once ``fephp._twisted``'s):
tests/unit/web/test_reference_http1.py checks each against the installed
Twisted, so that an upgrade that changes one fails there by name.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Optional, Sequence, Union

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.iweb import INonQueuedRequestFactory

from fephp._twisted import header_name, headers_raw, idle_socket, send_now, send_pieces_now
from fephp.cgi.realip import UNIX, RealIP
from fephp.web.adapt import RequestExchange
from fephp.web.errors import raw_error_response, send_error
from fephp.web.framing import framing_refusal
from fephp.web.heads import REQUEST_ID as _REQUEST_ID
from fephp.web.heads import origin_form, valid_host
from fephp.web.http2 import H2Connection

__all__ = [
    "ReferenceChannel",
    "ReferenceExchange",
    "ReferenceRequest",
    "reference_exchange",
    "reference_http1",
]

_monotonic = time.monotonic
_NO_BODY_CODES = http.NO_BODY_CODES


# -- Twisted's private state, as the reference reads and writes it ------------------------------------------------


def channel_between_requests(channel: Any) -> bool:
    """Whether an HTTPChannel waits for the first line of a new request, with nothing buffered.

    Relies on LineReceiver's ``_buffer`` and ``_busyReceiving`` and on
    HTTPChannel's ``_handlingRequest`` and its name-mangled ``__first_line``
    (1 before a request line, 2 after one tolerated empty line, 0 inside a
    head), all in twisted.web.http since Twisted 16.
    """
    return bool(
        channel.line_mode
        and not channel._buffer
        and not channel._busyReceiving
        and not channel._handlingRequest
        and channel._HTTPChannel__first_line == 1
    )


def channel_dispatch(channel: Any, request: Any, method: bytes, target: bytes, version: bytes) -> None:
    """Hand *request*, whose whole bodiless head was parsed elsewhere, to its channel.

    What HTTPChannel.allContentReceived does once a head and an empty body
    are in: the idle timeout is saved and stopped while the request is
    handled (``_savedTimeOut``, restored by requestDone), the channel is
    marked busy (``_handlingRequest``: later bytes are buffered for the next
    request) and put in raw mode, then the request is told it has arrived.
    """
    if channel.timeOut:
        channel._savedTimeOut = channel.setTimeout(None)
    channel._handlingRequest = True
    channel.setRawMode()
    request.requestReceived(method, target, version)


def channel_head_progress(channel: Any) -> tuple[bool, int]:
    """Where Twisted's parser of an HTTPChannel is in a request head: (before the request line, bytes so far).

    Relies on HTTPChannel's name-mangled ``__first_line`` (nonzero until the
    request line is read) and ``_receivedHeaderSize`` (the bytes of the
    head's lines so far, checked against ``totalHeadersSize``), both in
    twisted.web.http since Twisted 16.
    """
    return bool(channel._HTTPChannel__first_line), int(channel._receivedHeaderSize)


def channel_partial_line(channel: Any) -> bytes:
    """The bytes of a line an HTTPChannel has begun and not ended (LineReceiver's ``_buffer``, since Twisted 16)."""
    return bytes(channel._buffer)


def channel_receiving(channel: Any) -> Optional[str]:
    """What an HTTPChannel is reading: ``"head"`` (a request head has begun), ``"body"`` (its body), or None.

    None means between requests with nothing buffered, or answering a
    request (later bytes are then only buffered).  Relies on HTTPChannel's
    ``_handlingRequest`` and name-mangled ``__first_line`` (0 once a request
    line was read) and on LineReceiver's ``line_mode`` (raw mode while a
    body is read) and ``_buffer`` (a line begun), since Twisted 16.
    """
    if channel._handlingRequest:
        return None
    if not channel.line_mode:
        return "body"
    if channel._buffer or channel._HTTPChannel__first_line == 0:
        return "head"
    return None


def chunk_left(channel: Any) -> Optional[int]:
    """Bytes of the current chunk of a chunked request body that its size line announced and that have not come yet.

    None outside a chunk's data.  Relies on HTTPChannel's
    ``_transferDecoder`` (the body's decoder while a body is read) and on
    ``_ChunkedTransferDecoder``'s ``state`` ("BODY" inside a chunk's data)
    and ``length`` (what is left of it), since Twisted 16.
    """
    decoder = channel._transferDecoder
    if decoder is None or getattr(decoder, "state", None) != "BODY":
        return None
    return int(decoder.length)


def refuse_malformed_heads_with(channel_class: Any, refuse: Any) -> None:
    """Make HTTPChannel answer a malformed request head by calling ``refuse(channel, 400)``.

    Twisted's own answer (``_respondToBadRequestAndDisconnect``, since
    Twisted 16) is a bare "400 Bad Request" with no body and no
    Connection: close; fephp's pages say what they are and close.
    """
    channel_class._respondToBadRequestAndDisconnect = lambda channel: refuse(channel, 400)


def request_disconnected(request: Any) -> bool:
    """Whether the client of a twisted.web Request has gone (``Request._disconnected``, since Twisted 8)."""
    return bool(request._disconnected)


def headers_from_raw(raw: dict[bytes, list[bytes]]) -> Headers:
    """A Headers holding *raw* itself (no copy), whose names and values are as :func:`fephp._twisted.headers_raw` requires."""
    headers = Headers()
    headers._rawHeaders = raw
    return headers


def site_request_write(request: Any, data: bytes) -> None:
    """``twisted.web.server.Request.write(request, data)``, past its two header lookups when they can change nothing.

    server.Request's write adds a default Content-Type (nothing to add when
    ``defaultContentType`` is None, as ReferenceRequest's), drops the body of
    a HEAD it is faking as a GET (``_inFakeHead``, since Twisted 8) and runs
    the resource's encoder (``_encoder``, since Twisted 9); without those it
    is http.Request's write.
    """
    if request.defaultContentType is None and not request._inFakeHead and not request._encoder:
        _http_write(request, data)
    else:
        _site_write(request, data)


# Bound once: twisted.web.http is a deprecation proxy whose every attribute
# lookup is a Python call.
_http_write = http.Request.write
_site_write = server.Request.write


# -- the reference's Exchange -----------------------------------------------------------------------------------------


class ReferenceExchange(RequestExchange):
    """RequestExchange over a :class:`ReferenceRequest`, with what its channel does better than a plain Request.

    The held head sent with the first bytes, ``write_pieces`` gathered,
    ``when_lost`` without a Deferred, 103 through the channel's
    ``write_informational``, the socket for ``os.sendfile``, the site's
    compression and the request's own id and start.
    """

    def __init__(self, request: Any) -> None:
        self.request = request
        self.method = request.method
        self.target = request.uri
        self.version = request.clientproto
        self.response_headers = []
        site = getattr(request, "site", None)  # set by process(); None for a head refused before it
        if site is not None:
            self.compression = site.compression
        self.request_id = request.request_id
        self._started_at = request.started_at
        request.exchange = self

    def write_pieces(self, pieces: Sequence[Union[bytes, memoryview]]) -> None:
        if self.first_byte_at is not None and self._encoder is None:
            self.request.write_pieces(pieces)  # one gathered send on the channel
            return
        super().write_pieces(pieces)

    def informational(self, status: int, headers: Any) -> None:
        # RFC 9110 15.2: never a 1xx to an HTTP/1.0 client.
        if self.request.clientproto == b"HTTP/1.0" or self.first_byte_at is not None:
            return
        self.request.channel.write_informational(status, headers)

    def when_lost(self, call: Callable[[], object]) -> None:
        self.request.when_lost(call)

    def sendfile_socket(self) -> Optional[Any]:
        channel = self.request.channel
        if self.first_byte_at is None:
            self.write(b"")  # the head (and compression's decision), held by the channel...
        if self._encoder is not None:
            return None  # the bytes sent are not the file's own
        channel.flush_head()  # ...and sent before the file's bytes go past it
        return idle_socket(channel.transport)


def reference_exchange(request: Any) -> ReferenceExchange:
    """The exchange of *request* (a ReferenceRequest), made if it has none yet (a head refused before process())."""
    found = request.exchange
    return found if found is not None else ReferenceExchange(request)


# -- the reference's Request and channel ------------------------------------------------------------------------------


class _Discard:
    """Where the body of a request refused as too large goes."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


class ReferenceRequest(server.Request):
    """A Request that refuses bodies over the site's ``max_body_size`` with 413.

    The check runs on the announced Content-Length before any of the body is
    read, on each chunk size a chunked body announces (:class:`ReferenceChannel`),
    and on the running total of a chunked body.
    """

    # PHP always sends its own Content-Type; static files get theirs from File.
    defaultContentType = None
    _received = 0
    _refused = False
    #: The scheme a trusted proxy's X-Forwarded-Proto gave, if any.
    _forwarded_https: Optional[bool] = None
    #: The X-Request-Id of this request (the client's when well-formed, else one of ours).
    request_id = b""
    #: ``time.monotonic()`` at the end of the request head.
    started_at = 0.0
    #: The Exchange the site's resource and the access log see (made in :meth:`process`).
    exchange: Optional[ReferenceExchange] = None

    #: Called once if the client goes before the response is finished (when_lost).
    _on_lost: Optional[Callable[[], object]] = None

    def when_lost(self, call: Callable[[], object]) -> None:
        """Have *call*() run if the client goes away before the response is finished.

        What ``notifyFinish().addErrback(...)`` does, without a Deferred
        made, and fired when the request finishes, for every request.
        """
        self._on_lost = call

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        super().connectionLost(reason)
        exchange = self.exchange
        if exchange is not None:
            exchange.lost()
        call = self._on_lost
        if call is not None:
            self._on_lost = None
            call()

    def write(self, data: bytes) -> None:
        """Write body bytes (compression is the Exchange's: :class:`fephp.web.adapt.RequestExchange`)."""
        site_request_write(self, data)

    def finish(self) -> None:
        """Finish, with an exchange for the site's log (which reads the status from it) even when none was made."""
        exchange = reference_exchange(self)
        if exchange.status == 0 and self.startedWriting:
            exchange.status = self.code  # Twisted's Request answered itself (processingFailed's 500)
        super().finish()

    def gotLength(self, length: Optional[int]) -> None:  # noqa: N802 - Twisted's name
        self.started_at = _monotonic()
        if self._refused:
            return  # its head was refused (ReferenceChannel.checkPersistence)
        limit = self.channel.site.max_body_size  # type: ignore[attr-defined]
        if length is not None and limit is not None and length > limit:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self._refused:
            return
        self._received += len(data)
        limit = self.channel.site.max_body_size  # type: ignore[attr-defined]
        if limit is not None and self._received > limit:
            self._refuse()
            return
        self.content.write(data)  # type: ignore[attr-defined]  # a file once gotLength made it

    def body_left(self, announced: int) -> None:
        """A chunk size line announced *announced* more bytes: 413 at once if they would cross the limit."""
        limit = self.channel.site.max_body_size  # type: ignore[attr-defined]
        if not self._refused and limit is not None and self._received + announced > limit:
            self._refuse()

    def _refuse(self, status: int = 413) -> None:
        self._refused = True
        self.content = _Discard()  # type: ignore[assignment]
        # Twisted would send "100 Continue" after the refusal (allHeadersReceived).
        self.requestHeaders.removeHeader(b"expect")
        self.channel.refuse(status)  # type: ignore[union-attr,attr-defined]  # ReferenceChannel's

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802 - Twisted's name
        # A target with raw non-ASCII bytes went through Twisted's parser
        # under an ASCII stand-in (ReferenceChannel.lineReceived): the real one.
        raw = getattr(self.channel, "raw_target", None)
        if raw is not None:
            self.channel.raw_target = None  # type: ignore[union-attr,attr-defined]
            path = raw
        super().requestReceived(command, path, version)

    def process(self) -> None:
        """Render the site's one leaf resource, without Twisted's traversal.

        Twisted's own process() splits and unquotes the path into
        ``postpath`` for child lookups and formats the Date header anew for
        every request; PHPApp routes the raw path itself, so neither is needed.
        """
        if self._refused:
            return
        site = self.channel.site  # type: ignore[attr-defined]
        self.site = site
        self.prepath = []
        self.postpath = []
        # Straight into the Headers' dicts: the names are Headers' own
        # spellings, the values ours (checked once) or a client's single
        # line (no CR or LF).
        response = headers_raw(self.responseHeaders)
        request = headers_raw(self.requestHeaders)
        response[b"Server"] = [site.server_header[0]]
        response[b"Date"] = [site.http_date()]
        given = request.get(b"X-Request-Id")
        if given is not None and len(given) == 1 and _REQUEST_ID.fullmatch(given[0]):
            request_id = given[0]
        else:
            # PHP sees the id the log and the client see (HTTP_X_REQUEST_ID).
            request_id = site.new_request_id()
            request[b"X-Request-Id"] = [request_id]
        self.request_id = request_id
        response[b"X-Request-Id"] = [request_id]
        if not self.started_at:  # gotLength not called (a Request made by hand)
            self.started_at = _monotonic()
        if site.real_ip is not None:
            self._take_real_ip(site.real_ip)
        hosts = request.get(b"Host")
        if not hosts:
            # RFC 9112 3.2: an HTTP/1.1 request without Host is answered 400.
            bad = self.clientproto != b"HTTP/1.0"
        else:
            # Two Hosts (RFC 9112 3.2), or one that is no host[:port]: apps
            # build links and password-reset URLs from SERVER_NAME.
            bad = len(hosts) != 1 or not valid_host(hosts[0])
        if bad:
            self._answer(400)
            return
        uri = self.uri
        if uri[:1] != b"/" and uri[:4].lower() == b"http":
            # RFC 9112 3.2.2: a server MUST accept the absolute form; PHP
            # gets the origin form in REQUEST_URI, as from nginx.
            self.uri = origin_form(uri)
            self.path = self.uri.partition(b"?")[0]
        ReferenceExchange(self)  # becomes self.exchange, which the resource serves
        try:
            self.render(site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def _take_real_ip(self, real_ip: RealIP) -> None:
        """From a trusted proxy: its client's address (REMOTE_ADDR, the access log) and scheme (HTTPS)."""
        peer = getattr(self.client, "host", UNIX)  # a UNIX-socket peer has no host
        headers = self.requestHeaders
        values = headers.getRawHeaders(real_ip.header_name)
        proto = headers.getRawHeaders(b"x-forwarded-proto")
        if values is None and proto is None:
            return
        found = real_ip.client(peer, values or (), proto or ())
        if found is None:
            return
        if found.host is not None:
            kind = IPv6Address if ":" in found.host else IPv4Address
            self.client = kind("TCP", found.host, found.port)
        if found.https is not None:
            self._forwarded_https = found.https

    def isSecure(self) -> bool:  # noqa: N802 - Twisted's name
        # X-Forwarded-Proto from a trusted proxy (TLS ended there) wins.
        if self._forwarded_https is not None:
            return self._forwarded_https
        return bool(super().isSecure())

    def write_pieces(self, pieces: list[Any]) -> None:
        """``write(b"".join(pieces))``, where *pieces* are bytes or memoryviews, without joining them.

        On fephp's own HTTP/1.1 channel the pieces (in a chunk's framing
        when chunked) reach the socket in one gathered send.  The first
        write (the head, and compression's decision over the first bytes),
        HEAD and bodiless statuses, a finished or gone
        request and any other channel get the pieces joined, through
        :meth:`write`, as usual.
        """
        channel = self.channel
        if (
            not self.startedWriting
            or type(channel) is not ReferenceChannel
            or self.finished
            or request_disconnected(self)
            or self.method == b"HEAD"
            or self.code in _NO_BODY_CODES
        ):
            self.write(pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes else b"".join(pieces))
            return
        size = sum(map(len, pieces))
        if not size:
            return
        self.sentLength += size
        if self.chunked:
            channel.writeSequence([b"%x\r\n" % size, *pieces, b"\r\n"])
        else:
            channel.writeSequence(pieces)

    def _answer(self, status: int) -> None:
        channel = self.channel
        if channel is not None:
            channel.persistent = False  # type: ignore[attr-defined]  # the close the header announces
        send_error(reference_exchange(self), status, [(b"connection", b"close")])


#: Reason phrases of the 1xx responses fephp sends itself (RFC 8297 for 103).
_INFORMATIONAL = {103: b"Early Hints"}
#: What no line of a request head may hold.
_NEVER_IN_A_LINE = re.compile(rb"[\r\n\x00]")
#: Control bytes, DEL included (RFC 5234's CTL).
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
#: RFC 9110 5.6.2's token: a method or a header name.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A request target as nginx takes it: printable ASCII and any byte above
#: it (raw UTF-8 that a client did not percent-encode), no space.
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
#: Header names seen (all valid tokens), and how Headers spells each one.
_canonical_names: dict[bytes, bytes] = {}


def _canonical_name(name: bytes) -> bytes:
    """*name*, a valid token, as Headers stores it ("user-agent" -> "User-Agent")."""
    found = header_name(name)
    if len(_canonical_names) < 1000:  # bounded: names are the client's to choose
        _canonical_names[name] = found
    return found


#: A TLS channel's state before ALPN's answer is read (and a default no transport attribute has).
_ALPN_PENDING = object()

#: Above this many bytes a response's pieces are sent gathered (sendmsg)
#: rather than joined: copying a small body costs less than the iovec.
_GATHER_FROM = 16 * 1024


class ReferenceChannel(http.HTTPChannel):
    """An HTTPChannel that tells its site when it is gone, and writes a response in few sends.

    Its addresses are read once: Twisted asks for them on every request,
    which costs a getsockname() each time.

    The response head is held until the first body bytes (or the end of the
    response) and goes out in the same send, straight to the socket when
    nothing is queued (:func:`fephp._twisted.send_now`): a small response
    costs one ``send`` and no ``epoll_ctl``, where Twisted would queue the
    head and the body and send them on the reactor's next turn.
    """

    _host: Any = None
    _peer: Any = None
    _secure: Optional[bool] = None
    #: The response head, waiting for the first body bytes.
    _head: Optional[bytes] = None
    #: The HTTP/2 connection every byte goes to once ALPN chose "h2"; or
    #: _ALPN_PENDING on a TLS connection before its first bytes; or None.
    _h2: Any = None
    #: The raw target of the request line being parsed by Twisted, when it
    #: holds bytes Twisted refuses (non-ASCII); ReferenceRequest takes it back.
    raw_target: Optional[bytes] = None
    #: An HTTP/1.0 client asked for keep-alive on the request being answered.
    _keep_alive_10 = False
    #: The Transfer-Encoding and Content-Length values of the head being
    #: read (None: none yet), judged at its end by framing_refusal.
    _framing_te: Optional[list[bytes]] = None
    _framing_cl: Optional[list[bytes]] = None
    #: Pending calls that end a client too slow with its head, its body, or
    #: taking the response (the site's client_header, client_body and
    #: client_send timeouts); the body's idle time counts from _body_last.
    _head_timer: Any = None
    _body_timer: Any = None
    _body_last = 0.0
    _send_timer: Any = None
    #: Bytes have come from the client: a connection between requests that
    #: has heard nothing yet is fresh, one that has is an idle keep-alive.
    _heard = False
    #: A graceful stop asked this connection to close after the request it
    #: is reading or answering (:meth:`close_when_done`).
    _closing = False

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        super().connectionMade()
        # A TLS transport (possibly behind a PROXY protocol wrapper, which
        # lends its attributes) knows the ALPN answer once the handshake is
        # done, which is before the first application bytes arrive.
        if self.site.http2 and getattr(self.transport, "negotiatedProtocol", _ALPN_PENDING) is not _ALPN_PENDING:  # type: ignore[attr-defined]
            self._h2 = _ALPN_PENDING

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """Take a whole bodiless request head in one step; anything else goes to Twisted's parser.

        Twisted's HTTPChannel reads a request line by line, one method call
        and one Headers update per line.  Most requests are a GET whose head
        arrives whole in one read: that case is parsed here at once, into the
        same Request state Twisted's parser builds.  Whatever this path does
        not accept exactly (a body, folded lines, an invalid name, a state
        other than waiting for a new request...) is handed untouched to
        Twisted, which answers it as it always has.

        On a TLS connection whose ALPN chose "h2", every byte goes to the
        HTTP/2 connection instead (:meth:`_negotiated`).
        """
        self._heard = True
        h2 = self._h2
        if h2 is not None:
            if h2 is _ALPN_PENDING:
                h2 = self._negotiated()
            if h2 is not None:
                h2.dataReceived(data)
                return
        if (
            data[-4:] == b"\r\n\r\n"
            and self.persistent
            and not self.paused
            and channel_between_requests(self)
            and self.transport is not None
            and not self.transport.disconnecting  # type: ignore[attr-defined]
            and self._take_head(data)
        ):
            return
        super().dataReceived(data)
        self._watch_pace()

    def _watch_pace(self) -> None:
        """After a read on Twisted's path: time the head or body being received, check a chunk's size, refuse a bare LF.

        A head has ``client_header`` seconds in all from its first read; a
        body may go ``client_body`` seconds without a byte (as nginx's
        client_header_timeout and client_body_timeout); either is then
        answered 408 and the connection closed.  Each byte a slow client
        drips restarts Twisted's own idle timer, never these.
        """
        transport: Any = self.transport
        receiving = None if transport is None or transport.disconnecting else channel_receiving(self)
        if receiving == "head":
            if b"\n" in channel_partial_line(self):
                # RFC 9112 2.2: a bare LF may be taken as a line end, or the
                # request refused; two readers that differ on it disagree on
                # where the head ends.
                self.refuse(400)
                return
            timeout = self.site.client_header_timeout  # type: ignore[attr-defined]
            if self._head_timer is None and timeout is not None:
                self._head_timer = self.callLater(timeout, self._head_late)
            return
        self._stop_timer("_head_timer")
        if receiving != "body":
            self._stop_timer("_body_timer")
            return
        left = chunk_left(self)
        if left is not None and self.requests:
            self.requests[-1].body_left(left)
            if transport.disconnecting:
                return
        timeout = self.site.client_body_timeout  # type: ignore[attr-defined]
        if timeout is not None:
            self._body_last = self.site.reactor.seconds()  # type: ignore[attr-defined]
            if self._body_timer is None:
                self._body_timer = self.callLater(timeout, self._body_idle)

    def _body_idle(self) -> None:
        self._body_timer = None
        if channel_receiving(self) != "body":
            return
        timeout = self.site.client_body_timeout  # type: ignore[attr-defined]
        left = self._body_last + timeout - self.site.reactor.seconds()  # type: ignore[attr-defined]
        if left > 0:
            self._body_timer = self.callLater(left, self._body_idle)
            return
        self._too_slow("body")

    def _head_late(self) -> None:
        self._head_timer = None
        self._too_slow("head")

    def _too_slow(self, what: str) -> None:
        """The client took too long with its request's *what*: 408, then close (RFC 9110 15.5.9)."""
        if channel_receiving(self) == what:
            self._give_up(408)

    def _give_up(self, status: int) -> None:
        """Refuse with *status*, and abort the connection if the client has not taken the answer after abortTimeout."""
        self.refuse(status)
        if self.abortTimeout is not None:
            self.callLater(self.abortTimeout, self.abort_response)

    def _stop_timer(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None:
            setattr(self, name, None)
            if call.active():
                call.cancel()

    def timeoutConnection(self) -> None:  # noqa: N802 - Twisted's name
        # Twisted's idle timer is the keep-alive timeout; a head or a body
        # on its way has its own deadline (_watch_pace).
        if channel_receiving(self) is not None:
            self.resetTimeout()
            return
        super().timeoutConnection()

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        # The transport's buffer is full: the client is not taking the
        # response.  It has client_send seconds to take some (nginx's
        # send_timeout), or the connection is cut and PHP's request abandoned.
        super().pauseProducing()
        timeout = self.site.client_send_timeout  # type: ignore[attr-defined]
        if timeout is not None and self._send_timer is None:
            self._send_timer = self.callLater(timeout, self._send_stalled)

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._stop_timer("_send_timer")
        super().resumeProducing()

    def _send_stalled(self) -> None:
        self._send_timer = None
        self.abort_response()

    def _negotiated(self) -> Optional[H2Connection]:
        """The HTTP/2 connection to hand this transport to, if ALPN chose "h2"; None to stay HTTP/1.1."""
        self._h2 = None
        if getattr(self.transport, "negotiatedProtocol", None) != b"h2":
            return None
        self.setTimeout(None)  # the HTTP/2 connection keeps its own
        # HTTPChannel registered itself as the transport's producer; the
        # HTTP/2 connection takes its place.
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        site = self.site  # type: ignore[attr-defined]
        h2 = H2Connection(
            site,
            clock=site.reactor,
            max_header_size=self.totalHeadersSize,
            max_line_length=min(self.MAX_LENGTH, self.totalHeadersSize),
        )
        self._h2 = h2
        h2.makeConnection(self.transport)
        return h2

    def refuse(self, status: int) -> None:
        """Answer *status* with its page straight away and close: the request cannot be read on."""
        transport: Any = self.transport
        transport.write(raw_error_response(status))
        transport.loseConnection()

    def abort_response(self) -> None:
        """Cut the connection: a response already begun cannot end well, and must not look whole."""
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def _take_head(self, data: bytes) -> bool:
        head = data[:-4]
        if b"\r\n\r\n" in head or len(head) > self.totalHeadersSize:
            return False
        # No NUL anywhere, and every CR and LF part of a line end (RFC 9110
        # 5.5 for values; the request line is checked below).
        crlf = head.count(b"\r\n")
        if b"\0" in head or head.count(b"\r") != crlf or head.count(b"\n") != crlf:
            return False
        lines = head.split(b"\r\n")
        if len(lines) > self.maxHeaders or max(map(len, lines)) > self.MAX_LENGTH:
            return False
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return False
        method, target, version = parts
        if (
            (version != b"HTTP/1.1" and version != b"HTTP/1.0")
            or not _TOKEN.fullmatch(method)
            or not _TARGET.fullmatch(target)
        ):
            return False
        raw: dict[bytes, list[bytes]] = {}
        canonical = _canonical_names
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            known = canonical.get(name)
            if known is None:
                if not colon or not _TOKEN.fullmatch(name):
                    return False  # also a folded line, which starts with a space
                known = _canonical_name(name)
            elif not colon:
                return False
            name = known
            value = value.strip(b" \t")
            values = raw.get(name)
            if values is None:
                raw[name] = [value]
            else:
                values.append(value)
        # raw's names are Headers' own spellings.
        if b"Content-Length" in raw or b"Transfer-Encoding" in raw or b"Expect" in raw:
            return False  # a body (or a wish to send one): Twisted's parser reads it
        # Names as Headers spells them, values without CR or LF (split on
        # CRLF above, no bare CR or LF): what Headers(raw) would store.
        headers = headers_from_raw(raw)
        # What HTTPChannel's lineReceived, allHeadersReceived and
        # allContentReceived do for such a request, in that order.
        self.resetTimeout()
        if INonQueuedRequestFactory.providedBy(self.requestFactory):
            request = self.requestFactory(self)
        else:
            request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        request.requestHeaders = headers
        if b"Cookie" in raw:
            request.parseCookies()
        self.persistent = self.checkPersistence(request, version)
        request.gotLength(0)
        channel_dispatch(self, request, method, target, version)
        return True

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted's name
        """Twisted's line parser, with nginx's answers to a head too long and its leniency for raw UTF-8.

        A request line that does not fit is 414 (RFC 9110 15.5.15), a head
        that does not fit 431 (RFC 6585 5), where Twisted answers a bare 400.
        A target with bytes above ASCII is passed to Twisted as an ASCII
        stand-in and given back whole to the request (nginx passes such
        targets to PHP as received; browsers encode them, other clients
        may not).  A folded header line and a bare LF are refused (400).
        """
        request_line, so_far = channel_head_progress(self)
        if so_far + len(line) > self.totalHeadersSize:
            self.refuse(414 if request_line else 431)
            return
        if _NEVER_IN_A_LINE.search(line) or (not request_line and line[:1] in (b" ", b"\t")):
            # RFC 9112 2.2 (a bare LF or CR) and 5.2 (obs-fold): either may
            # be read another way by another server on the path, such as a
            # folded Transfer-Encoding; nginx refuses both too.  NUL: RFC
            # 9110 5.5.  (Twisted checks values itself only since 26.)
            self.refuse(400)
            return
        if request_line and _CONTROL.search(line):
            # RFC 9112 3.2: no control byte (DEL included) in a request
            # line; Twisted lets DEL through, the one-step parser does not.
            self.refuse(400)
            return
        if request_line and not line.isascii():
            parts = line.split(b" ")
            if len(parts) == 3 and parts[0].isascii() and parts[2].isascii():
                self.raw_target = parts[1]
                stand_in = parts[1].decode("latin-1").encode("ascii", "backslashreplace")
                line = b" ".join((parts[0], stand_in, parts[2]))
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:  # noqa: N802 - Twisted's name
        """A header line of the head being read; Content-Length and Transfer-Encoding are kept for framing_refusal.

        Twisted sees a framing header only while the head is unambiguous so
        far (the first Content-Length, or a first Transfer-Encoding that is
        exactly "chunked", with no other framing header), so that it sets up
        the body's decoder for those alone and refuses nothing itself: the
        verdict, with fephp's statuses, comes at the end of the head
        (checkPersistence), before any of the body is read.
        """
        name, colon, value = line.partition(b":")
        if colon and len(name) in (14, 17):
            lowered = name.lower()
            if lowered == b"content-length" or lowered == b"transfer-encoding":
                te, cl = self._framing_te, self._framing_cl
                clean = te is None and cl is None
                value = value.strip(b" \t")
                if lowered == b"content-length":
                    self._framing_cl = (cl or []) + [value]
                    clean = clean and value.isdigit()
                else:
                    self._framing_te = (te or []) + [value]
                    clean = clean and value.lower() == b"chunked"
                if not clean:
                    return True
        return bool(super().headerReceived(line))

    def checkPersistence(self, request: Any, version: bytes) -> bool:  # noqa: N802 - Twisted's name
        # Both parsers come here once a head is in, before its body: the
        # place to judge how it frames the body (fephp/web/framing.py).
        te, cl = self._framing_te, self._framing_cl
        if te is not None or cl is not None:
            self._framing_te = self._framing_cl = None
            refusal = framing_refusal(version, te or (), cl or ())
            if refusal is not None:
                request._refuse(refusal.status)
                return False
        if self._closing:
            # A graceful stop: this request is answered, then the connection closes.
            headers_raw(request.responseHeaders)[b"Connection"] = [b"close"]
            self._keep_alive_10 = False
            return False
        # Twisted closes every HTTP/1.0 connection; nginx keeps one whose
        # client asked (Connection: keep-alive, as ab -k sends), when the
        # response can be delimited (writeHeaders).
        self._keep_alive_10 = False
        if version == b"HTTP/1.0":
            for value in request.requestHeaders.getRawHeaders(b"connection", ()):
                if b"keep-alive" in (token.strip().lower() for token in value.split(b",")):
                    self._keep_alive_10 = True
                    return True
            return False
        if version != b"HTTP/1.1":
            return False
        # HTTPChannel.checkPersistence's rule (its tokens split on spaces
        # alone), read from the Headers' dicts.
        connection = headers_raw(request.requestHeaders).get(b"Connection")
        if connection and b"close" in [token.lower() for token in connection[0].split(b" ")]:
            headers_raw(request.responseHeaders)[b"Connection"] = [b"close"]
            return False
        return True

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:  # noqa: N802
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)  # Twisted's old form, never ours
            return
        if self._keep_alive_10 and self.persistent:
            # An HTTP/1.0 body without a length ends when the connection
            # does (RFC 9112 6.3); with one, the connection is kept.
            request = self.requests[0] if self.requests else None
            if b"close" in b",".join(headers.getRawHeaders(b"connection", ())).lower():
                self.persistent = False  # a refusal that closes (ReferenceRequest._answer)
            elif (
                headers.hasHeader(b"content-length")
                or code in (b"204", b"304")
                or (request is not None and request.method == b"HEAD")
            ):
                headers.setRawHeaders(b"connection", [b"keep-alive"])
            else:
                self.persistent = False
        lines = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        self._head = b"".join(lines)

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) > _GATHER_FROM:
                send_pieces_now(self.transport, [head, data])
                return
            data = head + data
        send_now(self.transport, data)

    def writeSequence(self, iovec: Any) -> None:  # noqa: N802 - Twisted's name
        """The pieces in one gathered send (a chunk's framing and its data, a large response's pieces)."""
        pieces = list(iovec)
        head = self._head
        if head is not None:
            self._head = None
            pieces.insert(0, head)
        if sum(map(len, pieces)) > _GATHER_FROM:
            send_pieces_now(self.transport, pieces)
        else:
            send_now(self.transport, b"".join(pieces))

    def write_informational(self, code: int, headers: "list[tuple[bytes, bytes]]") -> None:
        """Send a 1xx response (103 Early Hints) ahead of the response being made."""
        lines = [b"HTTP/1.1 %d %s\r\n" % (code, _INFORMATIONAL.get(code, b"Informational"))]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        send_now(self.transport, b"".join(lines))

    def flush_head(self) -> None:
        """Send a held response head now (before bytes that bypass the channel, such as a sendfile)."""
        self._flush_head()

    def _flush_head(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            send_now(self.transport, head)

    def requestDone(self, request: Any) -> None:  # noqa: N802 - Twisted's name
        # A response with no body (HEAD, 204, 304, an empty page) ends here.
        self._flush_head()
        super().requestDone(request)

    def loseConnection(self) -> None:  # noqa: N802 - Twisted's name
        self._flush_head()
        super().loseConnection()

    def close_when_done(self) -> None:
        """A graceful stop: close an idle keep-alive connection now, any other after its request.

        A connection between requests that has already been answered is
        closed at once, as nginx does (a client retries a request it sends
        on a keep-alive connection closing under it, RFC 9112 9.3.1).  A
        fresh one, or one reading or answering a request, is left to finish
        that request and then closes: closing it now would drop a request
        whose bytes may already wait in the socket, answered with a reset.
        The shutdown's deadline bounds the wait.
        """
        if self._heard and channel_between_requests(self):
            self.loseConnection()
            return
        self._closing = True
        if self.requests:
            self.persistent = False  # the request in hand is the last

    def getHost(self) -> Any:  # noqa: N802 - Twisted's name
        if self._host is None:
            self._host = self.transport.getHost()  # type: ignore[union-attr]
        return self._host

    def isSecure(self) -> bool:  # noqa: N802 - Twisted's name
        # Asked for every request; the adaptation behind it costs, the answer never changes.
        secure = self._secure
        if secure is None:
            secure = self._secure = super().isSecure()
        return secure

    def getPeer(self) -> Any:  # noqa: N802 - Twisted's name
        if self._peer is None:
            self._peer = self.transport.getPeer()  # type: ignore[union-attr]
        return self._peer

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        for timer in ("_head_timer", "_body_timer", "_send_timer"):
            self._stop_timer(timer)
        h2 = self._h2
        if h2 is not None and h2 is not _ALPN_PENDING:
            h2.connectionLost(reason)
        super().connectionLost(reason)
        self.site._channel_closed(self)  # type: ignore[attr-defined]

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802 - Twisted's name
        # One line longer than any may be: say so instead of Twisted's
        # silent close, 414 for the request line (RFC 9110 15.5.15), 431 for
        # a header (RFC 6585 5).
        if self.transport is not None:
            self.refuse(414 if channel_head_progress(self)[0] else 431)


refuse_malformed_heads_with(ReferenceChannel, ReferenceChannel.refuse)



def reference_http1(site: Any) -> ReferenceChannel:
    """A reference channel for *site* (a FrontSite): what its ``http1`` parameter takes in place of fephp.web.h1's H1Protocol."""
    channel = ReferenceChannel()
    # What twisted.web's Site.buildProtocol sets up (HTTPFactory's reactor and timeout, the site and its requests).
    channel.factory = site
    channel.callLater = site.reactor.callLater  # type: ignore[method-assign]
    channel.timeOut = site.timeOut
    channel.requestFactory = ReferenceRequest
    channel.site = site  # type: ignore[attr-defined]
    # Bounds the request line and headers together (Twisted answers 431/400).
    channel.totalHeadersSize = site.max_header_size
    return channel
