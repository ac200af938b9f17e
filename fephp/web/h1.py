"""fephp's own HTTP/1.x server protocol, from the server's side: a Twisted Protocol over the sans-io codec whose requests are Exchanges.

:class:`H1Protocol` feeds what the client sends to :class:`fephp.http.ServerConnection`
and turns each whole request (head and body, the body buffered within the
site's limits) into an :class:`H1Exchange`, which the site's resource
renders.  It replaced, for HTTP/1.x, Twisted's HTTPChannel and Request as
fephp bent them, which the tests keep as the reference the differential
tests compare it with (tests/support/reference_http1.py): the same bytes to
the client, with the state in one field of each object.

The codec holds RFC 9112's framing and smuggling refusals; this module
holds what needs a socket or a clock: the client_header, client_body,
client_send and keep-alive timeouts (the site's settings, on the site's
reactor), pipelining (the next request is read once the one in hand is
answered, and the socket is not read meanwhile, nor while the client
takes none of our bytes), the held response head
that leaves with the first body bytes in one send, the TLS connection whose
ALPN chose "h2" (handed to :class:`fephp.web.http2.H2Connection`), and the
graceful stop.
"""

from __future__ import annotations

import enum
import time
from typing import Any, Callable, Optional, Sequence, Union

from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from zope.interface import implementer

from .._twisted import header_name, idle_socket, send_now, send_pieces_now
from ..http import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Framing,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    ServerConnection,
    State,
)
from .carrier import (
    BODY_IN_MEMORY,
    CarriedExchange,
    RequestBody,
    address,
    render,
    take_real_ip,
    take_request_id,
)
from .compress import Compression
from .errors import raw_error_response, send_error
from .exchange import Address, Body, ExchangeState, HeaderList
from .http2 import H2Connection
from .heads import valid_host

__all__ = ["BODY_IN_MEMORY", "H1Exchange", "H1Protocol", "Phase"]

_monotonic = time.monotonic

#: Above this many bytes a response's pieces are sent gathered (sendmsg)
#: rather than joined: copying a small body costs less than the iovec.
_GATHER_FROM = 16 * 1024
#: Seconds a closing connection has to take its last bytes before it is
#: aborted (Twisted's HTTPChannel.abortTimeout).
ABORT_AFTER = 15.0
#: A TLS connection's state before ALPN's answer is read (and a default no transport attribute has).
_ALPN_PENDING = object()
_NO_BODY_STATUSES = frozenset((204, 304))

# Enum members bound once: on CPython 3.11 each member lookup is a descriptor call.
_RECEIVED = ExchangeState.RECEIVED
_RESPONDING = ExchangeState.RESPONDING
_FINISHED = ExchangeState.FINISHED
_LOST = ExchangeState.LOST


class Phase(enum.Enum):
    """Where an HTTP/1.x connection is.

    WAITING: between requests (fresh, or an idle keep-alive), or a head
    begun; READING: a request's body is being read; ANSWERING: the site has
    the request (later bytes are only buffered); CLOSING: the connection is
    being closed (a refusal sent, the last response done); HTTP2: ALPN chose
    "h2" and every byte goes to the HTTP/2 connection.
    """

    WAITING = "waiting"
    READING = "reading"
    ANSWERING = "answering"
    CLOSING = "closing"
    HTTP2 = "http2"


_WAITING, _READING, _ANSWERING, _CLOSING, _HTTP2 = Phase


#: Lowercase response field names and how Twisted's Headers spelt them on the wire (bounded: names are PHP's).
_spelt: dict[bytes, bytes] = {}


def _spell(name: bytes) -> bytes:
    """*name* as Twisted's Headers spelt it ("x-request-id" -> "X-Request-Id"), remembered for the next response."""
    found = header_name(name)
    if len(_spelt) < 1000:
        _spelt[name] = found
    return found


class _PullProducer:
    """A pull producer driven as a push one: ``resumeProducing`` once per reactor turn while not paused (Twisted's _PullToPush)."""

    _call: Any = None
    _paused = False
    _stopped = False

    def __init__(self, producer: Any, call_later: Callable[..., Any]) -> None:
        self._producer = producer
        self._call_later = call_later
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self._paused and not self._stopped:
            self._call = self._call_later(0, self._pull)

    def _pull(self) -> None:
        self._call = None
        if self._paused or self._stopped:
            return
        self._producer.resumeProducing()
        self._schedule()

    def pause(self) -> None:
        self._paused = True
        self._cancel()

    def resume(self) -> None:
        self._paused = False
        self._schedule()

    def stop(self) -> None:
        self._stopped = True
        self._cancel()

    def _cancel(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()


class H1Exchange(CarriedExchange):
    """One HTTP/1.x request and its response: the Exchange (fephp.web.exchange) over fephp's own protocol.

    The request side is filled by :class:`H1Protocol` before the site's
    resource is called; the response side drives the codec.  The head is
    held from ``start_response`` until the first body bytes (or ``finish``)
    and leaves with them in one send.  States: :class:`ExchangeState`.
    """

    _pull: Optional[_PullProducer] = None

    def __init__(self, protocol: "H1Protocol", request: Request, body: Body, started_at: float) -> None:
        self._protocol = protocol
        self._codec = protocol.codec
        self.method = request.method
        target = self.target = request.target
        path, _, query = target.partition(b"?")
        self.path = path
        self.query = query
        self.version = request.version
        self.headers: HeaderList = request.headers
        self.body = body
        self.client: Address = protocol.peer  # type: ignore[assignment]  # set before any exchange is made
        self.server: Address = protocol.host  # type: ignore[assignment]
        if protocol.secure:
            self.scheme = b"https"
        self.started_at = started_at
        #: The site's response compression policy (fephp.web.compress), None for none.
        self.compression: Optional[Compression] = protocol.site.compression

    def _begin(self, data: bytes) -> "tuple[bytes, bytes]":
        """The first body bytes (b"" at a finish with none): compression decides, then the head; returns (head, data)."""
        data = self._first_bytes(data)
        reason = self.reason
        if reason is None:
            reason = RESPONSES.get(self.status, b"Unknown Status")
        # Spelt on the wire as Twisted's Headers spelt them (the same bytes as before).
        known = _spelt
        spelt = [(known.get(name) or _spell(name), value) for name, value in self.response_headers]
        return self._codec.send_response_head(self.status, spelt, reason), data

    def write(self, data: bytes) -> None:
        """Send body bytes (the held head first, in the same send)."""
        if self.state is not _RESPONDING:
            if self.state is not _RECEIVED:
                return
            self.start_response(200, [])
        head: Optional[bytes] = None
        try:
            if self.first_byte_at is None:
                head, data = self._begin(data)
            elif self._encoder is not None:
                data = self._encoder.compress(data)
            framed = self._codec.send_data(data)
        except LocalProtocolError:
            # A field with CR or LF, more body than the Content-Length: the app's bug, never the client's to see.
            self._protocol.log.failure("a response fephp cannot send", Failure())
            self.abort()
            return
        if framed:
            self.bytes_sent += len(data)
        transport = self._protocol.transport
        if head is not None:
            if len(framed) > _GATHER_FROM:
                send_pieces_now(transport, [head, framed])
                return
            framed = head + framed
        if framed:
            send_now(transport, framed)

    def write_pieces(self, pieces: Sequence[Union[bytes, memoryview]]) -> None:
        """Send body bytes given as pieces: one gathered send once the head is out, else joined through write."""
        if self.first_byte_at is None or self._encoder is not None or self.state is not _RESPONDING:
            self.write(pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes else b"".join(pieces))
            return
        try:
            framed = self._codec.send_data_pieces(list(pieces))
        except LocalProtocolError:
            self._protocol.log.failure("more body than the response's Content-Length", Failure())
            self.abort()
            return
        if not framed:
            return
        self.bytes_sent += sum(map(len, pieces))
        transport = self._protocol.transport
        if sum(map(len, framed)) > _GATHER_FROM:
            send_pieces_now(transport, framed)
        else:
            send_now(transport, b"".join(framed))

    def finish(self) -> None:
        """The response is complete: its end goes out (with the head if still held), then the next request is read."""
        state = self.state
        if state is _RECEIVED:
            self.start_response(200, [])
        elif state is not _RESPONDING:
            return
        codec = self._codec
        try:
            if self.first_byte_at is None:
                head, data = self._begin(b"")
                end = head + codec.send_data(data) if data else head
                if data:
                    self.bytes_sent += len(data)
            else:
                end = b""
            encoder = self._encoder
            if encoder is not None:
                self._encoder = None
                tail = encoder.finish()
                if tail:
                    end += codec.send_data(tail)
                    self.bytes_sent += len(tail)
            end += codec.send_end()
        except LocalProtocolError:
            # Less body than its Content-Length: the client must see a cut, not a whole response.
            self._protocol.log.failure("a response fephp cannot end", Failure())
            self.abort()
            return
        self.state = _FINISHED
        if end:
            send_now(self._protocol.transport, end)
        self._stop_producer()
        self._protocol.exchange_done(self)

    def abort(self) -> None:
        """Cut the connection: a response already begun cannot end well, and must not look whole."""
        if self.state is _FINISHED or self.state is _LOST:
            return
        self.state = _LOST
        self._stop_producer()
        self._protocol.abort()

    def informational(self, status: int, headers: HeaderList) -> None:
        """Send a 1xx response (103 Early Hints) now; nothing to an HTTP/1.0 client."""
        if self.state is not _RECEIVED:
            return
        data = self._codec.send_informational(status, headers)
        if data:
            send_now(self._protocol.transport, data)

    def register_producer(self, producer: Any, streaming: bool) -> None:
        """Have *producer* paused and resumed as the client takes the response."""
        self._producer = producer
        if not streaming:
            self._pull = _PullProducer(producer, self._protocol.site.reactor.callLater)
            if self._protocol.send_paused:
                self._pull.pause()
        elif self._protocol.send_paused:
            producer.pauseProducing()

    def unregister_producer(self) -> None:
        """Forget the producer registered last."""
        pull = self._pull
        if pull is not None:
            self._pull = None
            pull.stop()
        self._producer = None

    def _stop_producer(self) -> None:
        if self._producer is not None:
            self.unregister_producer()

    def pause_producer(self) -> None:
        pull = self._pull
        if pull is not None:
            pull.pause()
        elif self._producer is not None:
            self._producer.pauseProducing()

    def resume_producer(self) -> None:
        pull = self._pull
        if pull is not None:
            pull.resume()
        elif self._producer is not None:
            self._producer.resumeProducing()

    def sendfile_socket(self) -> Optional[Any]:
        """The socket to ``os.sendfile`` an uncompressed Content-Length body into (the head sent first), or None."""
        if self.state is not _RESPONDING:
            return None
        transport = self._protocol.transport
        if self.first_byte_at is None:
            try:
                head, data = self._begin(b"")
            except LocalProtocolError:
                self._protocol.log.failure("a response head fephp cannot send", Failure())
                self.abort()
                return None
            if data:  # compression chose to compress: bytes past the encoder would be wrong
                send_now(transport, head + self._codec.send_data(data))
                self.bytes_sent += len(data)
                return None
            send_now(transport, head)
        if self._encoder is not None or self._codec.response_framing is not Framing.LENGTH:
            return None
        return idle_socket(transport)

    def sent_directly(self, count: int) -> None:
        """*count* body bytes went out on sendfile_socket's socket."""
        if self.first_byte_at is None:
            self.first_byte_at = _monotonic()
        self.bytes_sent += count
        self._codec.sent_elsewhere(count)

    @property
    def transport(self) -> Any:
        """The connection's transport, as Twisted's Request has it (fephp.web.hosts reads its TLS server name)."""
        return self._protocol.transport


@implementer(IPushProducer)
class H1Protocol(Protocol):
    """One HTTP/1.x client connection: the codec's events in, Exchanges to the site's resource, responses out.

    The site (a :class:`fephp.web.site.FrontSite`) gives the limits, the
    timeouts, the resource and the access log; ``site`` may change between
    requests (a reload's new site adopts the connection).  The phase of the
    connection is :class:`Phase`.
    """

    log = Logger()

    phase = _WAITING
    #: The exchange the site has, while ANSWERING.
    exchange: Optional[H1Exchange] = None
    #: The transport asked us to stop writing (its buffer is full).
    send_paused = False
    #: Requests answered on this connection (a graceful stop closes an idle kept one at once).
    answered = 0
    #: A graceful stop asked this connection to close after the request it is reading or answering.
    _closing = False
    _body: Optional[RequestBody] = None
    _request: Optional[Request] = None
    _started_at = 0.0
    _head_timer: Any = None
    _body_timer: Any = None
    _body_last = 0.0
    _send_timer: Any = None
    _idle_timer: Any = None
    #: When the connection last became idle (the keep-alive time runs from there).
    _idle_since = 0.0
    _abort_timer: Any = None
    _reading_paused = False
    #: While _advance runs: an exchange finished inside it is followed by its loop, not by a nested call.
    _advancing = False
    _h2: Any = None
    secure = False
    #: The client's and our address, read at the first request.
    peer: Optional[Address] = None
    host: Optional[Address] = None

    def __init__(self, site: Any) -> None:
        self.site = site
        self.factory = site

    # -- Twisted's side --------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        site = self.site
        transport: Any = self.transport
        self.codec = ServerConnection(max_header_size=site.max_header_size, max_body_size=site.max_body_size)
        # A TLS transport (possibly behind a PROXY protocol wrapper, which
        # lends its attributes) knows the ALPN answer once the handshake is
        # done, which is before the first application bytes arrive.
        negotiated = getattr(transport, "negotiatedProtocol", _ALPN_PENDING)
        if negotiated is not _ALPN_PENDING:
            self.secure = True
            if site.http2:
                self._h2 = _ALPN_PENDING
        transport.registerProducer(self, True)
        if ITCPTransport.providedBy(transport):
            # Nagle's algorithm held the last segment of a large answer until
            # the client's delayed ACK (40 ms on Linux): a 1 MiB or 60 KB page
            # took 40 ms more. nginx's tcp_nodelay is on for the same reason;
            # a small answer is one send either way.
            transport.setTcpNoDelay(True)
        self._idle()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        h2 = self._h2
        if h2 is not None:
            if h2 is _ALPN_PENDING:
                h2 = self._negotiated()
            if h2 is not None:
                h2.dataReceived(data)
                return
        phase = self.phase
        if phase is _CLOSING:
            return
        self.codec.receive_data(data)
        if phase is _ANSWERING:
            # Pipelined bytes wait in the codec until the request in hand is
            # answered; the socket is not read meanwhile (a bound on them).
            self._pace_reading()
            return
        # The keep-alive timer is left running: _idle_over looks at what
        # the connection does when it fires (see _idle).
        self._advance()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        for timer in ("_head_timer", "_body_timer", "_send_timer", "_idle_timer", "_abort_timer"):
            self._stop(timer)
        self.phase = _CLOSING
        h2 = self._h2
        if h2 is not None and h2 is not _ALPN_PENDING:
            h2.connectionLost(reason)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.lost()
        self.site._channel_closed(self)

    # -- IPushProducer: the transport tells us when its buffer is full ---------------------

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        # The client is not taking the response: it has client_send seconds
        # to take some (nginx's send_timeout), or the connection is cut.
        self.send_paused = True
        exchange = self.exchange
        if exchange is not None:
            exchange.pause_producer()
        timeout = self.site.client_send_timeout
        if timeout is not None and self._send_timer is None:
            self._send_timer = self._call_later(timeout, self._send_stalled)
        self._pace_reading()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.send_paused = False
        self._stop("_send_timer")
        exchange = self.exchange
        if exchange is not None:
            exchange.resume_producer()
        self._pace_reading()

    def _pace_reading(self) -> None:
        """Read the socket unless the client is not taking our bytes, or bytes wait behind the request being answered.

        As Twisted's HTTPChannel: a client that pipelines requests and
        reads no responses would otherwise grow the transport's buffer
        with answers until client_send ends it.
        """
        stop = self.send_paused or (self.phase is _ANSWERING and self.codec.pending > 0)
        if stop is not self._reading_paused:
            self._reading_paused = stop
            transport: Any = self.transport
            if stop:
                transport.pauseProducing()
            else:
                transport.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        exchange = self.exchange
        if exchange is not None and exchange._producer is not None:
            exchange._producer.stopProducing()

    # -- reading requests ---------------------------------------------------------------------

    def _advance(self) -> None:
        """Take the codec's events until it needs bytes, a request goes to the site, or the connection closes."""
        if self._advancing:
            return
        self._advancing = True
        try:
            self._events()
        finally:
            self._advancing = False

    def _events(self) -> None:
        codec = self.codec
        while self.phase is _WAITING or self.phase is _READING:
            try:
                event = codec.next_event()
            except RemoteProtocolError as error:
                self._refuse(error.status)
                return
            kind = type(event)
            if kind is Request:
                self._stop("_head_timer")
                self._request = event  # type: ignore[assignment]
                self._started_at = _monotonic()
                self._body = None
                self.phase = _READING
                go_on = codec.send_continue()
                if go_on:
                    send_now(self.transport, go_on)
            elif kind is Data:
                body = self._body
                if body is None:
                    body = self._body = RequestBody()
                body.add(event.data)  # type: ignore[union-attr]
            elif kind is EndOfMessage:
                self._stop("_body_timer")
                self._dispatch()
            elif event is NEED_DATA:
                self._pace()
                return
            elif event is PAUSED:
                return  # cannot be: a request is read only once the one before is answered
            else:
                assert kind is ConnectionClosed
                self._close()
                return

    def _pace(self) -> None:
        """Waiting for bytes: time the head or body being received (client_header in all, client_body idle), else keep-alive."""
        receiving = self.codec.receiving
        site = self.site
        if receiving == "head":
            timeout = site.client_header_timeout
            if self._head_timer is None and timeout is not None:
                self._head_timer = self._call_later(timeout, self._too_slow, "head")
        elif receiving == "body":
            timeout = site.client_body_timeout
            if timeout is not None:
                self._body_last = site.reactor.seconds()
                if self._body_timer is None:
                    self._body_timer = self._call_later(timeout, self._body_idle)
        elif self.phase is _WAITING:
            self._idle()

    def _body_idle(self) -> None:
        self._body_timer = None
        if self.codec.receiving != "body" or self.phase is not _READING:
            return
        left = self._body_last + self.site.client_body_timeout - self.site.reactor.seconds()
        if left > 0:
            self._body_timer = self._call_later(left, self._body_idle)
            return
        self._too_slow("body")

    def _too_slow(self, what: str) -> None:
        """The client took too long with its request's *what*: 408, then close (RFC 9110 15.5.9)."""
        if what == "head":
            self._head_timer = None
        if self.codec.receiving == what and self.phase is not _CLOSING and self.phase is not _ANSWERING:
            self._refuse(408)

    def _idle(self) -> None:
        """Between requests: the keep-alive timeout (the site's ``timeout``) runs from now.

        One timer serves every request of the connection: it is not
        cancelled when a request comes nor made anew after each answer
        (a DelayedCall made and cancelled per request is thousands of
        instructions on CPython); when it fires, _idle_over closes the
        connection if it has been idle that long, else sets it again.
        """
        site = self.site
        timeout = site.timeOut
        if timeout is None:
            return
        self._idle_since = site.reactor.seconds()
        if self._idle_timer is None:
            self._idle_timer = self._call_later(timeout, self._idle_over)

    def _idle_over(self) -> None:
        self._idle_timer = None
        if self.phase is not _WAITING or self.codec.receiving is not None:
            return  # reading or answering a request: _idle sets the timer again after it
        site = self.site
        timeout = site.timeOut
        if timeout is None:
            return
        left = self._idle_since + timeout - site.reactor.seconds()
        if left > 0:
            self._idle_timer = self._call_later(left, self._idle_over)
            return
        self._close()

    def _send_stalled(self) -> None:
        self._send_timer = None
        self.abort()

    # -- one request ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """A whole request: made an exchange, prepared (request id, Host, real IP), and given to the site's resource."""
        request = self._request
        assert request is not None
        body_buffer = self._body
        # No body is an empty one, as from Twisted's Request: php.py then
        # announces CONTENT_LENGTH 0 for a POST, as nginx does.
        body: Body = body_buffer.whole() if body_buffer is not None else b""
        self._request = self._body = None
        if self.peer is None:
            # Read at the first request, not at connectionMade: a PROXY
            # protocol wrapper knows the client only once its header is in.
            transport: Any = self.transport
            self.peer = address(transport.getPeer())
            self.host = address(transport.getHost())
        exchange = H1Exchange(self, request, body, self._started_at)
        self.exchange = exchange
        self.phase = _ANSWERING
        site = self.site
        if self._closing:
            # A graceful stop: this request is answered, then the connection closes.
            self.codec.keep_alive = False
        hosts = take_request_id(exchange, site)
        request_id = exchange.request_id
        fields = [(b"server", site.server_header[0]), (b"date", site.http_date()), (b"x-request-id", request_id)]
        if not self.codec.keep_alive and request.version == b"HTTP/1.1":
            # Where Twisted's channel put it: first, before the site's fields.
            fields.insert(0, (b"connection", b"close"))
        exchange.response_headers = fields
        if site.real_ip is not None:
            take_real_ip(exchange, site.real_ip)
        if not hosts:
            # RFC 9112 3.2: an HTTP/1.1 request without Host is answered 400.
            bad = request.version != b"HTTP/1.0"
        else:
            # Two Hosts (RFC 9112 3.2), or one that is no host[:port]: apps
            # build links and password-reset URLs from SERVER_NAME.
            bad = len(hosts) != 1 or not valid_host(hosts[0])
        if bad:
            send_error(exchange, 400, [(b"connection", b"close")])
            return
        render(exchange, site, self._logger)

    def exchange_done(self, exchange: H1Exchange) -> None:
        """*exchange* finished: logged, then the next request is read (or the connection closes)."""
        if exchange is not self.exchange:
            return
        self.exchange = None
        self.answered += 1
        try:
            self.site.log(exchange)
        except Exception:
            self.log.failure("logging a request", Failure())
        codec = self.codec
        if self.phase is not _ANSWERING:
            return
        if not codec.keep_alive or self._closing or codec.their_state is not State.DONE:
            self._close()
            return
        codec.start_next_cycle()
        codec.max_body_size = self.site.max_body_size  # a reload's new site may have another
        self.phase = _WAITING
        if self._reading_paused:
            self._pace_reading()
        if not self._advancing:
            self._advance()

    # -- closing ----------------------------------------------------------------------------------

    def _refuse(self, status: int) -> None:
        """Answer *status* with its page straight away and close: the request cannot be read on."""
        transport: Any = self.transport
        transport.write(raw_error_response(status))
        self._close()

    def _close(self) -> None:
        """Close once what was written is sent; abort if the client has not taken it after ABORT_AFTER."""
        if self.phase is _CLOSING:
            return
        self.phase = _CLOSING
        for timer in ("_head_timer", "_body_timer", "_idle_timer"):
            self._stop(timer)
        transport: Any = self.transport
        # A TLS transport does not close while a producer is registered.
        transport.unregisterProducer()
        transport.loseConnection()
        self._abort_timer = self._call_later(self.abortTimeout, self.abort)

    def abort(self) -> None:
        """Cut the connection now."""
        self._abort_timer = None
        self.phase = _CLOSING
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def loseConnection(self) -> None:  # noqa: N802 - what FrontSite.close_connections calls on any connection
        h2 = self._h2
        if h2 is not None and h2 is not _ALPN_PENDING:
            self.transport.unregisterProducer()  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._close()

    def close_when_done(self) -> None:
        """A graceful stop: close an idle keep-alive connection now, any other after its request.

        A connection between requests that has already been answered is
        closed at once, as nginx does (a client retries a request it sends
        on a keep-alive connection closing under it, RFC 9112 9.3.1).  A
        fresh one, or one reading or answering a request, is left to finish
        that request and then closes.  The shutdown's deadline bounds the wait.
        """
        if self.answered and self.phase is _WAITING and self.codec.receiving is None and not self.codec.pending:
            self._close()
            return
        self._closing = True
        if self.phase is _ANSWERING:
            self.codec.keep_alive = False

    @property
    def busy(self) -> bool:
        """A request is read or being answered (FrontSite.activity)."""
        return self.phase is _READING or self.phase is _ANSWERING

    def _negotiated(self) -> Optional[H2Connection]:
        """The HTTP/2 connection to hand this transport to, if ALPN chose "h2"; None to stay HTTP/1.1."""
        self._h2 = None
        transport: Any = self.transport
        if getattr(transport, "negotiatedProtocol", None) != b"h2":
            return None
        self.phase = _HTTP2
        self._stop("_idle_timer")  # the HTTP/2 connection keeps its own
        transport.unregisterProducer()  # the HTTP/2 connection takes our place
        site = self.site
        h2 = H2Connection(
            site,
            clock=site.reactor,
            max_header_size=site.max_header_size,
            max_line_length=min(self.codec_line_max, site.max_header_size),
        )
        self._h2 = h2
        h2.makeConnection(transport)
        return h2

    #: Twisted's name for ABORT_AFTER (HTTPChannel.abortTimeout), which the site's tests read.
    abortTimeout = ABORT_AFTER
    #: The longest line of a head (what HTTPChannel.MAX_LENGTH gave the HTTP/2 connection).
    codec_line_max = 16 * 1024

    def _logger(self) -> Logger:
        """The protocol's Logger (made at each read, so only read when something is logged)."""
        return self.log

    def _call_later(self, delay: float, call: Callable[..., object], *args: Any) -> Any:
        return self.site.reactor.callLater(delay, call, *args)

    def _stop(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None:
            setattr(self, name, None)
            if call.active():
                call.cancel()
