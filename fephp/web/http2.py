"""HTTP/2 from the server's side: one TLS connection's streams, each served as an Exchange, over the sans-io h2 library.

The h2 library keeps the protocol state (frames, HPACK, stream states, flow
control windows); this module is the glue: bytes from the transport go to
``h2``, each stream (a :class:`_Stream`) reads its request and, once it is
whole, serves it as an :class:`~fephp.web.h2exchange.H2Exchange` (no
Twisted Request underneath), and what the exchange writes goes back out as
HEADERS and DATA frames.

A stream holds at most :data:`STREAM_BUFFER` bytes its client has not taken
(its flow-control window closed, or the connection's socket full); past that
its producer, the FastCGI connection of a PHP response or the file of a
static one, is paused until the bytes are sent.  A slow client therefore
slows PHP down instead of making fephp buffer the response, as over
HTTP/1.1.  A push producer (PHP's FastCGI connection) may go on past it up
to :data:`STREAM_SPILL`, while the whole process holds less than
:data:`SPILL_TOTAL` so (:class:`HeldBytes`, the site's): a response of a page or two then ends in PHP and
frees its FastCGI connection even if its client opens no window (a zero
window pins no pool), and ``timeouts.client_send`` ends the stream.  Request bodies are read as fast as they come, into the request's
body buffer (memory, then a temporary file), as over HTTP/1.1, bounded by ``limits.max_body_size`` (413).

Twisted has an HTTP/2 server of its own (``twisted.web._http2``, private and
"in early draft form"); fephp does not use it: it sends one frame per reactor
turn, lets a stream's queue grow with the peer's window (megabytes from a
browser) whatever the socket takes, and gives each stream no transport, so
nothing of it would carry fephp's bounds and errors.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from typing import Any, Optional

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .carrier import address
from .errors import error_page
from .exchange import Address
from .h2exchange import H2Exchange, RequestBody, serve
from .h2hpack import CachingDecoder, ResponseEncoder
from .h2server import FrameGuard, FrameRefused, ServerConnection, StreamRejected

_monotonic = time.monotonic

__all__ = ["H2Connection", "HeldBytes", "MAX_CONCURRENT_STREAMS", "SPILL_TOTAL", "STREAM_BUFFER", "STREAM_SPILL"]

#: Bytes of one response held for a client that does not take them (its
#: window closed, the socket full); past this the response's producer is
#: paused, and resumed once half of it is sent.
STREAM_BUFFER = 64 * 1024
#: What a push producer's response may hold past STREAM_BUFFER before it is
#: paused, and what all streams of the process may hold past theirs: PHP's
#: FastCGI connection is freed once its output is in (nginx reads an
#: upstream's answer into buffers the same way), within a bound of memory.
STREAM_SPILL = 1024 * 1024
SPILL_TOTAL = 32 * 1024 * 1024
#: Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS):
#: each may hold a FastCGI connection.  nginx's http2_max_concurrent_streams.
MAX_CONCURRENT_STREAMS = 128
#: The receive window of each stream and of the connection: request bodies
#: are read as they come (into the content file), so a large window costs
#: no memory and saves round trips on uploads.
RECEIVE_WINDOW = 1024 * 1024
#: The most the HPACK decoder unpacks for one header list, whatever
#: ``limits.max_header_size`` says (which is checked on the decoded list,
#: for a 431 like HTTP/1.1's); a list past this closes the connection.
MIN_DECODED_HEADER_LIST = 64 * 1024
#: Bytes a stream sends per turn of the round robin over the ready streams:
#: a large response does not hold a small one back.
SEND_QUANTUM = 16 * 1024
#: Stream resets a client may send (or streams it may open that we must
#: refuse) in a burst, and refills per second; past them the connection gets
#: GOAWAY(ENHANCE_YOUR_CALM) (HTTP/2 Rapid Reset, CVE-2023-44487).
RESET_BURST = 200
RESET_RATE = 20.0
#: Of those, resets of streams already handed to the site and not yet
#: answered: each leaves a PHP script running that nobody will read.  A
#: browser cancels a page's requests when it leaves it; a client doing it
#: over and over on one connection is closed.
ABORTED_BURST = 64
ABORTED_RATE = 8.0
#: Seconds a closed connection's transport has to go before it is aborted:
#: our GOAWAY leaves, and the client's close_notify is not waited for.
CLOSE_GRACE = 1.0

#: The part of an HTTP/1.1 request line around the method and the target
#: (" ", " HTTP/1.1\r\n"), so that a request measures the same in both.
_LINE_OVERHEAD = 12
#: The same for one header line (": ", "\r\n").
_HEADER_OVERHEAD = 4


class HeldBytes:
    """Bytes held past STREAM_BUFFER by every stream of a site (one per process), within *limit*."""

    __slots__ = ("limit", "held")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        """Count *size* more bytes held; False (and nothing counted) past the limit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class _Conn(enum.Enum):
    """Where an HTTP/2 connection is in its life."""

    OPEN = "open"  # streams come and go
    DRAINING = "draining"  # the client said GOAWAY(NO_ERROR): its open streams are answered, new ones refused
    CLOSING = "closing"  # we are done with it: nothing more is read, the transport goes after a grace
    LOST = "lost"  # the transport is gone


@implementer(IPushProducer)
class H2Connection(Protocol):
    """One HTTP/2 connection: the h2 state machine, its streams, and the transport's producer.

    Made by the HTTP/1.x protocol when ALPN chose "h2" on a TLS connection
    (:class:`fephp.web.h1.H1Protocol`, or the tests' reference engine over
    Twisted's HTTPChannel), which then passes it every byte it
    receives.  The idle timeout (the site's keep-alive) runs while no
    stream is open; a stream being answered stops it, as over HTTP/1.1.
    It costs no timer per stream: the connection notes when it went idle
    (or last read a byte while idle), and one timer, armed when it first
    goes idle, looks at that note when it fires and sleeps again for what
    is left (:meth:`_idle_check`).

    Every read goes through a :class:`FrameGuard` before h2 parses it, so
    an oversized frame, a header block past ``limits.max_header_size`` or a
    flood of control frames ends the connection at the frame's header.  A
    request whose END_STREAM arrived is handed to the site on the next
    reactor turn, with every stream that became whole in the same reads:
    a RST_STREAM right behind it (HTTP/2 Rapid Reset, CVE-2023-44487) then
    costs no PHP run.

    Outgoing bytes are sent by :meth:`_pump`, once per reactor turn in which
    anything was written: a small response's HEADERS and DATA (with
    END_STREAM) leave in one write.  The connection's state is :class:`_Conn`.
    """

    log = Logger()

    def __init__(self, site: Any, *, clock: Any, max_header_size: int, max_line_length: int) -> None:
        self.site = site
        self.factory = site
        self._clock = clock
        #: timeouts.keepalive: seconds a connection with no stream open is kept.
        self.timeOut: Optional[float] = getattr(site, "timeOut", None)
        #: When the connection went idle (or last read while idle); None while a stream is open.
        self._idle_since: Optional[float] = None
        self._idle_call: Any = None  # the one keep-alive timer, armed while idle (see _idle_check)
        #: timeouts.client_body and client_send, per stream as over HTTP/1.1 per connection.
        self.client_body_timeout: Optional[float] = getattr(site, "client_body_timeout", None)
        self.client_send_timeout: Optional[float] = getattr(site, "client_send_timeout", None)
        self.max_header_size = max_header_size
        self.max_line_length = max_line_length
        #: What the streams of every connection of the site hold past STREAM_BUFFER.
        self.spill: HeldBytes = site.h2_held
        # What a Request writes is checked already (Headers refuses CR and
        # LF, names are lower-cased and connection-specific ones dropped in
        # writeHeaders); h2's own outbound checks would cost a fifth of a
        # small response.  What the client sends is checked in full.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
        )
        self._conn = ServerConnection(config=config)
        decoded_bound = max(MIN_DECODED_HEADER_LIST, 2 * max_header_size)
        # The settings of the first SETTINGS frame: set before
        # initiate_connection, which sends them.
        self._conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: decoded_bound,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
            },
        )
        # Responses without a dynamic table or Huffman, each field's bytes
        # made once; a request block seen before decoded from memory
        # (fephp.web.h2hpack).
        self._conn.encoder = ResponseEncoder()  # type: ignore[assignment]
        self._conn.decoder = CachingDecoder(decoded_bound)
        now = clock.seconds()
        self._guard = FrameGuard(
            max_frame_size=self._conn.local_settings.max_frame_size, max_header_block=max_header_size, now=now
        )
        self._state = _Conn.OPEN
        self._streams: dict[int, _Stream] = {}
        #: Streams with a head, bytes or an end to send (a dict as an ordered set).
        self._ready: dict[int, _Stream] = {}
        #: Streams with bytes to send and no window to send them in.
        self._blocked: dict[int, _Stream] = {}
        #: Streams with a producer registered (of _streams): those the pump and the transport's pauses speak to.
        self._producing: dict[int, _Stream] = {}
        #: Streams whose request is whole, to hand to the site on the pump's turn.
        self._arrived: list[_Stream] = []
        self._pump_call: Any = None
        self._paused = False  # the transport takes no more for now
        self._send_timer: Any = None  # client_send, while the transport is paused
        self._close_timer: Any = None  # the abort after a close's grace
        self._resets = _Budget(RESET_BURST, RESET_RATE, now)
        self._aborts = _Budget(ABORTED_BURST, ABORTED_RATE, now)
        self._host: Any = None
        self._peer: Any = None
        #: The client's and our end as the exchanges state them, read at the first request.
        self.peer_address: Optional[Address] = None
        self.host_address: Optional[Address] = None

    # -- the transport's side ------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        transport = self.transport
        assert transport is not None
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        transport.registerProducer(self, True)  # type: ignore[attr-defined]  # every TCP or TLS transport is a consumer
        self._went_idle()
        conn = self._conn
        conn.initiate_connection()
        # The connection's window starts at 65535 whatever SETTINGS say
        # (RFC 9113 6.9.2); only WINDOW_UPDATE widens it.
        conn.increment_flow_control_window(RECEIVE_WINDOW - 65535)
        self._write_control()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        state = self._state
        if state is _Conn.CLOSING or state is _Conn.LOST:
            return  # done with it: not a byte more to h2 (a flood after GOAWAY costs nothing)
        now = self._clock.seconds()
        try:
            self._guard.feed(data, now)
            events = self._conn.receive_data(data)
        except FrameRefused as e:
            self.log.info("HTTP/2 client {peer} refused: {reason}", peer=str(self.getPeer()), reason=str(e))
            self._end(e.code)
            return
        except h2.exceptions.ProtocolError as e:
            # h2 has queued a GOAWAY with the error's code.
            self.log.debug("HTTP/2 protocol error from {peer}: {error}", peer=str(self.getPeer()), error=str(e))
            self._write_control()
            self._close(CLOSE_GRACE)
            return
        if self._idle_since is not None:
            self._idle_since = now  # a client still there (a PING, SETTINGS): idle from now
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._request_received(event)
            elif kind is h2.events.DataReceived:
                self._data_received(event)
            elif kind is h2.events.StreamEnded:
                stream = self._streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None and stream.request_whole():
                    self._arrived.append(stream)
                    self._schedule_pump()
            elif kind is h2.events.StreamReset:
                self._stream_reset(event.stream_id)  # type: ignore[attr-defined]
            elif kind is h2.events.WindowUpdated:
                self._window_opened(event.stream_id)  # type: ignore[attr-defined]
            elif kind is h2.events.RemoteSettingsChanged:
                if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:  # type: ignore[attr-defined]
                    self._window_opened(0)
            elif kind is StreamRejected:
                self.log.debug("HTTP/2 stream of {peer} reset: {reason}", peer=str(self.getPeer()), reason=event.reason)  # type: ignore[attr-defined]
                if not self._resets.spend(self._clock.seconds()):
                    self._calm("opens streams it may not")
            elif kind is h2.events.ConnectionTerminated:
                self._terminated(event.error_code)  # type: ignore[attr-defined]
            if self._state is _Conn.CLOSING or self._state is _Conn.LOST:
                return
        self._write_control()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        if self._state is _Conn.LOST:
            return
        self._state = _Conn.LOST
        self._idle_since = None
        for name in ("_pump_call", "_send_timer", "_close_timer", "_idle_call"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None and call.active():
                call.cancel()
        streams, self._streams = self._streams, {}
        self._ready.clear()
        self._blocked.clear()
        self._producing.clear()
        self._arrived.clear()
        for stream in streams.values():
            stream.connection_lost(reason)

    def timeoutConnection(self) -> None:  # noqa: N802 - Twisted's name
        self.log.info("Timing out HTTP/2 client: {peer}", peer=str(self.getPeer()))
        self._end(h2.errors.ErrorCodes.NO_ERROR)

    def say_goodbye(self) -> None:
        """GOAWAY with NO_ERROR and the last stream taken (RFC 9113 6.8): a server that stops says so."""
        if self._state is _Conn.OPEN or self._state is _Conn.DRAINING:
            self._conn.close_connection()
            self._write_control()

    def _terminated(self, error_code: int) -> None:
        """The client sent GOAWAY: with NO_ERROR its open streams are answered first (RFC 9113 6.8), else it is gone."""
        if error_code == h2.errors.ErrorCodes.NO_ERROR:
            self._state = _Conn.DRAINING
            self._maybe_idle()
        else:
            self._close(CLOSE_GRACE)

    def _end(self, code: int) -> None:
        """Send GOAWAY with *code* and close: nothing more is read from this client."""
        try:
            self._conn.close_connection(error_code=code)
        except h2.exceptions.ProtocolError:
            pass  # h2 has already closed its side
        self._write_control()
        self._close(CLOSE_GRACE)

    def _calm(self, why: str) -> None:
        """A client costing us work for nothing: GOAWAY(ENHANCE_YOUR_CALM), as nginx and Go answer floods."""
        self.log.warn("HTTP/2 client {peer} {why}; closing", peer=str(self.getPeer()), why=why)
        self._end(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def _close(self, grace: float) -> None:
        """Stop reading, close, and abort the transport if it is not gone after *grace* seconds.

        TLS's loseConnection waits for the peer's close_notify, and reads
        (and decrypts) what the peer sends until then; a client that never
        says it is done must not keep the connection, or our CPU, that long.
        """
        if self._state is _Conn.CLOSING or self._state is _Conn.LOST:
            return
        self._state = _Conn.CLOSING
        self._idle_since = None
        transport: Any = self.transport
        if transport is None:
            return
        transport.pauseProducing()  # read nothing more
        # A TLS transport does not close while a producer is registered.
        transport.unregisterProducer()
        transport.loseConnection()
        self._close_timer = self._clock.callLater(grace, self._abort)

    def _abort(self) -> None:
        self._close_timer = None
        if self._state is not _Conn.LOST and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # IPushProducer, for the transport: its buffer is full, or has room again.

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._paused = True
        for stream in list(self._producing.values()):
            stream.pause_producer()
        # Nor read what the client sends meanwhile: it could only make us
        # write more (PING and SETTINGS answers, new responses).
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is not None:
            pause()
        # A client that takes nothing for client_send seconds is cut, as
        # over HTTP/1.1 (nginx's send_timeout).
        timeout = self.client_send_timeout
        if timeout is not None and self._send_timer is None:
            self._send_timer = self._clock.callLater(timeout, self._send_stalled)

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._paused = False
        call, self._send_timer = self._send_timer, None
        if call is not None and call.active():
            call.cancel()
        if self._state is _Conn.CLOSING:
            return
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()
        self._schedule_pump()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._close(CLOSE_GRACE)

    def _send_stalled(self) -> None:
        self._send_timer = None
        self.log.info("HTTP/2 client {peer} took nothing for {timeout} s; closing", peer=str(self.getPeer()), timeout=self.client_send_timeout)
        self._abort()

    # -- what the streams see -------------------------------------------------------

    def getHost(self) -> Any:  # noqa: N802 - Twisted's name
        if self._host is None and self.transport is not None:
            self._host = self.transport.getHost()
        return self._host

    def getPeer(self) -> Any:  # noqa: N802 - Twisted's name
        if self._peer is None and self.transport is not None:
            self._peer = self.transport.getPeer()
        return self._peer

    def addresses(self) -> "tuple[Address, Address]":
        """The client's and our address (an exchange's client and server), read once per connection."""
        peer = self.peer_address
        if peer is None:
            peer = self.peer_address = address(self.getPeer())
            self.host_address = address(self.getHost())
        host = self.host_address
        assert host is not None
        return peer, host

    # -- events in ------------------------------------------------------------------

    def _request_received(self, event: Any) -> None:
        stream_id = event.stream_id
        method = path = authority = None
        fields: list[tuple[bytes, bytes]] = []
        size = 0
        for name, value in event.headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue  # :scheme: always https here (h2 only over TLS)
            size += len(name) + len(value) + _HEADER_OVERHEAD
            fields.append((name, value))
        stream = _Stream(self, stream_id, request_in=event.stream_ended is not None)
        self._streams[stream_id] = stream
        self._idle_since = None  # a stream is being answered: the keep-alive waits
        if method is None or path is None:
            # CONNECT (no :path); h2 refuses requests without :method.
            stream.refuse(405 if method == b"CONNECT" else 400)
            return
        line = len(method) + len(path) + _LINE_OVERHEAD
        if line > self.max_line_length:
            stream.refuse(414)
            return
        if line + size > self.max_header_size:
            stream.refuse(431)
            return
        if authority is not None:
            # :authority is the Host (RFC 9113 8.3.1); h2 has refused a
            # request whose Host header differs from it.
            fields = [(b"host", authority), *(field for field in fields if field[0] != b"host")]
        stream.start(method, path, fields, ended=event.stream_ended is not None)

    def _data_received(self, event: Any) -> None:
        stream_id = event.stream_id
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.body_received(event.data)
        # Read as it comes (the body goes to the content file): give the
        # window back at once, for the connection even if the stream is gone.
        try:
            self._conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        except h2.exceptions.StreamClosedError:
            pass

    def _stream_reset(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        self._ready.pop(stream_id, None)
        self._blocked.pop(stream_id, None)
        self._producing.pop(stream_id, None)
        now = self._clock.seconds()
        costly = False
        if stream is not None:
            costly = stream.working()
            stream.connection_lost(Failure(ConnectionLost("the client reset the stream")))
            self._maybe_idle()
        if not self._resets.spend(now):
            self._calm("resets streams too fast")
        elif costly and not self._aborts.spend(now):
            # Each leaves PHP work running that nobody reads (php-fpm ends a
            # script whose request was aborted only when the script ends).
            self._calm("resets streams being answered too fast")

    def _window_opened(self, stream_id: int) -> None:
        """A WINDOW_UPDATE or a wider initial window: the streams it unblocks may send (0: the connection's, all may)."""
        blocked = self._blocked
        if not blocked:
            return
        if stream_id:
            stream = blocked.pop(stream_id, None)
            if stream is None:
                return
            stream.unblocked()
            self._ready[stream_id] = stream
        else:
            for stream in blocked.values():
                stream.unblocked()
            self._ready.update(blocked)
            blocked.clear()
        self._schedule_pump()

    # -- bytes out --------------------------------------------------------------------

    def stream_ready(self, stream: "_Stream") -> None:
        """*stream* has something to send: send it on this reactor turn's pump."""
        self._ready[stream.stream_id] = stream
        self._schedule_pump()

    def stream_blocked(self, stream: "_Stream") -> None:
        """*stream* has bytes and no window: it waits for a WINDOW_UPDATE."""
        self._blocked[stream.stream_id] = stream

    def stream_done(self, stream: "_Stream") -> None:
        """*stream* sent its END_STREAM or was reset by us: forget it."""
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
        self._ready.pop(stream.stream_id, None)
        self._blocked.pop(stream.stream_id, None)
        self._producing.pop(stream.stream_id, None)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self._streams:
            return
        if self._state is _Conn.OPEN:
            self._went_idle()
        elif self._state is _Conn.DRAINING:
            self._schedule_pump()  # the last answers go out, then the connection closes

    def _went_idle(self) -> None:
        """No stream is open: the keep-alive counts from now; its timer is armed unless it already is."""
        timeout = self.timeOut
        if timeout is None:
            return
        self._idle_since = self._clock.seconds()
        if self._idle_call is None:
            self._idle_call = self._clock.callLater(timeout, self._idle_check)

    def _idle_check(self) -> None:
        """The keep-alive timer: close a connection idle for timeOut seconds, else sleep for what is left of them."""
        self._idle_call = None
        since = self._idle_since
        if since is None or self.timeOut is None:
            return  # a stream is open (going idle again arms the timer), or the connection is closing
        left = since + self.timeOut - self._clock.seconds()
        if left > 0:
            self._idle_call = self._clock.callLater(left, self._idle_check)
        else:
            self.timeoutConnection()

    def _schedule_pump(self) -> None:
        if self._pump_call is None and (self._state is _Conn.OPEN or self._state is _Conn.DRAINING):
            self._pump_call = self._clock.callLater(0, self._pump)

    def _pump(self) -> None:
        """Hand the requests made whole to the site, then send what the ready streams hold, a quantum each per round."""
        if self._state is not _Conn.OPEN and self._state is not _Conn.DRAINING:
            self._pump_call = None
            return
        if self._arrived:
            arrived, self._arrived = self._arrived, []
            for stream in arrived:
                stream.dispatch()  # a stream reset since it arrived is gone: nothing runs
        conn = self._conn
        ready = self._ready
        guard = self._guard
        while ready and not self._paused:
            for stream in list(ready.values()):
                guard.credit(stream.send(SEND_QUANTUM))
                if not stream.sendable():
                    ready.pop(stream.stream_id, None)
            data = conn.data_to_send()
            if not data:
                break
            self.transport.write(data)  # type: ignore[union-attr]  # may pause us
            if self._state is _Conn.LOST:
                self._pump_call = None
                return
        # From here, what a producer writes schedules the next pump.
        self._pump_call = None
        self._write_control()
        if self._producing:
            for stream in list(self._producing.values()):
                stream.after_send(self._paused)
        if self._state is _Conn.DRAINING and not self._streams and not self._ready:
            self._close(CLOSE_GRACE)

    def _write_control(self) -> None:
        data = self._conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    @property
    def paused(self) -> bool:
        """Whether the transport has asked for no more bytes for now."""
        return self._paused

    @property
    def h2(self) -> ServerConnection:
        """The h2 state machine (for a stream's frames)."""
        return self._conn


class _Budget:
    """A token bucket: *burst* spends at once, refilled at *rate* per second."""

    __slots__ = ("_burst", "_rate", "_tokens", "_time")

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._time = now

    def spend(self, now: float) -> bool:
        """Take one token; False when none is left."""
        tokens = min(self._burst, self._tokens + max(0.0, now - self._time) * self._rate)
        self._time = now
        if tokens < 1:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1
        return True


class _Stream:
    """One request and its response on an HTTP/2 connection: what its H2Exchange writes to.

    States: *open* (the head is in, the body arriving), *whole* (the
    client's END_STREAM is in; served on the pump's turn), *dispatched* (its
    :class:`H2Exchange` is being answered), *done* (the exchange finished:
    the end is queued), *gone* (END_STREAM sent, or the stream reset by
    either side); a refused request goes from open to gone.

    While open with a body to come, the body may go ``client_body``
    seconds without a byte; while its bytes wait for a window, the client
    has ``client_send`` seconds to open one.  Past either, the stream ends
    (408, or RST_STREAM(CANCEL) and the PHP request abandoned), as the
    connection would over HTTP/1.1.  A body past ``limits.max_body_size``
    (announced by Content-Length, or counted as it arrives) is answered 413.
    """

    def __init__(self, connection: H2Connection, stream_id: int, *, request_in: bool) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.site = connection.site
        self.exchange: Optional[H2Exchange] = None
        self._method = b""
        self._path = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._body: Optional[RequestBody] = None
        self._limit: Optional[int] = None
        self._started_at = 0.0
        self._head: Optional[list[tuple[bytes, bytes]]] = None
        self._pending: deque[bytes] = deque()
        self._pending_size = 0
        self._spilled = 0  # of _pending_size, what the connection's spill counts for it
        self._ended = False  # the exchange finished: nothing more will be written
        self._gone = False
        self._request_in = request_in  # the client's END_STREAM has arrived
        self._started = False  # the head was accepted (start), not refused
        self._dispatched = False
        self._producer: Any = None
        self._streaming = False
        self._producer_paused = False
        self._body_timer: Any = None
        self._body_last = 0.0
        self._send_timer: Any = None

    # -- from the connection ---------------------------------------------------------

    def start(self, method: bytes, path: bytes, fields: "list[tuple[bytes, bytes]]", *, ended: bool) -> None:
        """The request's head is in (and accepted by the connection): refuse an announced body over the limit, else read on."""
        self._method = method
        self._path = path
        self._fields = fields
        self._started_at = _monotonic()
        limit = self._limit = self.site.max_body_size
        if not ended and limit is not None:
            for name, value in fields:
                # h2 has checked that it is a number and that DATA adds up to it.
                if name == b"content-length" and int(value) > limit:
                    self.refuse(413)
                    return
        self._started = True
        if not ended:
            timeout = self._connection.client_body_timeout
            if timeout is not None:
                clock = self._connection._clock
                self._body_last = clock.seconds()
                self._body_timer = clock.callLater(timeout, self._body_idle)
            expect = [value for name, value in fields if name == b"expect"]
            if expect and expect[0].lower() == b"100-continue":
                self._connection.h2.send_headers(self.stream_id, [(b":status", b"100")])

    def body_received(self, data: bytes) -> None:
        if self._gone or not self._started:
            return
        if self._body_timer is not None:
            self._body_last = self._connection._clock.seconds()
        body = self._body
        if body is None:
            body = self._body = RequestBody()
        limit = self._limit
        if limit is not None and body.size + len(data) > limit:
            self.refuse(413)
            return
        body.add(data)

    def _body_idle(self) -> None:
        self._body_timer = None
        if self._gone or self._request_in:
            return
        timeout = self._connection.client_body_timeout
        assert timeout is not None
        left = self._body_last + timeout - self._connection._clock.seconds()
        if left > 0:
            self._body_timer = self._connection._clock.callLater(left, self._body_idle)
            return
        # RFC 9110 15.5.9, as HTTP/1.1's client_body; the reset stops the body.
        self.refuse(408)

    def request_whole(self) -> bool:
        """The client's END_STREAM is in: whether there is a request to serve."""
        self._request_in = True
        self._stop_timer("_body_timer")
        return not self._gone and self._started

    def dispatch(self) -> None:
        """Serve the whole request as an H2Exchange with the site's resource, unless the stream went meanwhile."""
        if self._gone or not self._started:
            return
        self._dispatched = True
        body = self._body
        self._body = None
        connection = self._connection
        client, server = connection.addresses()
        site = self.site
        exchange = self.exchange = H2Exchange(
            self, self._method, self._path, self._fields, body.whole() if body is not None else b"",
            client, server, self._started_at, site.compression,
        )
        serve(exchange, site)

    def working(self) -> bool:
        """Whether the site is answering this stream: its request dispatched, its end not sent."""
        return self._dispatched and not self._gone

    def connection_lost(self, reason: Failure) -> None:
        self._gone = True
        self._drop_pending()
        self._stop_timers()
        exchange = self.exchange
        if exchange is not None:
            exchange.lost()

    # -- what its exchange calls ----------------------------------------------------------

    @property
    def connection_transport(self) -> Any:
        """The connection's transport (the TLS one, whose server name fephp.web.hosts reads)."""
        return self._connection.transport

    def set_head(self, lines: "list[tuple[bytes, bytes]]") -> None:
        """The response's HEADERS (``:status`` first, names lowercase): sent on the next pump, with the first DATA."""
        if self._gone:
            return
        self._head = lines
        self._connection.stream_ready(self)

    def write_informational(self, code: int, headers: "list[tuple[bytes, bytes]]") -> None:
        """Send a 1xx response (103 Early Hints): a HEADERS frame without END_STREAM, before the response's own."""
        if self._gone or self._head is not None:
            return
        self._connection.h2.send_headers(self.stream_id, [(b":status", b"%d" % code), *headers])
        self._connection._write_control()

    def write(self, data: bytes) -> None:
        if self._gone or not data:
            return
        self._pending.append(data)
        size = self._pending_size = self._pending_size + len(data)
        self._connection.stream_ready(self)
        if size > STREAM_BUFFER and not self._may_spill(size):
            self.pause_producer()

    def _may_spill(self, size: int) -> bool:
        """Whether a push producer may go on with *size* bytes held: within STREAM_SPILL and the process's SPILL_TOTAL."""
        over = size - STREAM_BUFFER
        if not self._streaming or over > STREAM_SPILL:
            return False
        if over > self._spilled:
            if not self._connection.spill.take(over - self._spilled):
                return False
            self._spilled = over
        return True

    def _settle_spill(self) -> None:
        """Bytes were sent or dropped: give back what is no longer held past STREAM_BUFFER."""
        over = max(0, self._pending_size - STREAM_BUFFER)
        if over < self._spilled:
            self._connection.spill.give(self._spilled - over)
            self._spilled = over

    def _drop_pending(self) -> None:
        self._pending.clear()
        self._pending_size = 0
        if self._spilled:
            self._settle_spill()

    def end(self) -> None:
        """The exchange finished: END_STREAM goes after the bytes held."""
        if self._gone:
            return
        self._ended = True
        self._connection.stream_ready(self)

    def register_producer(self, producer: Any, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(f"producer {producer!r} registered while {self._producer!r} still is")
        self._producer = producer
        self._streaming = bool(streaming)
        self._producer_paused = False
        if self._gone:
            producer.stopProducing()
            return
        connection = self._connection
        if connection._streams.get(self.stream_id) is self:
            connection._producing[self.stream_id] = self
        if streaming:
            size = self._pending_size
            if (size > STREAM_BUFFER and not self._may_spill(size)) or self._connection.paused:
                self.pause_producer()
        else:
            # A pull producer is asked for more after each send (after_send).
            self._connection.stream_ready(self)

    def unregister_producer(self) -> None:
        self._producer = None
        self._producer_paused = False
        self._connection._producing.pop(self.stream_id, None)

    def abort_response(self) -> None:
        """End the response cut short: the client sees a reset stream, never a response that looks whole."""
        if self._gone:
            return
        self._reset(h2.errors.ErrorCodes.INTERNAL_ERROR)

    def refuse(self, status: int) -> None:
        """Answer *status* with its page before the request is read (or whole), and reset the stream.

        RFC 9113 8.1: a server may answer before the request is complete
        and then reset the stream with NO_ERROR, so that the client stops
        sending its body.
        """
        if self._gone:
            return
        body = error_page(status)
        conn = self._connection.h2
        headers = [
            (b":status", b"%d" % status),
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        try:
            conn.send_headers(self.stream_id, headers)
            self._connection._guard.answered(self.stream_id)
            if conn.local_flow_control_window(self.stream_id) >= len(body):
                conn.send_data(self.stream_id, body, end_stream=True)
                if not self._request_in:
                    conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            else:
                # A client that opened no window for the page: the head must do.
                conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.ProtocolError:
            pass
        self._gone = True
        self._stop_timers()
        self._connection.stream_done(self)
        self._connection._write_control()

    # -- the pump's side ------------------------------------------------------------------

    def sendable(self) -> bool:
        """Whether the next send could put a frame out."""
        if self._gone:
            return False
        if self._head is not None or (self._ended and not self._pending):
            return True
        return bool(self._pending) and self._connection.h2.local_flow_control_window(self.stream_id) > 0

    def send(self, budget: int) -> int:
        """Hand h2 the held head and up to *budget* body bytes that the windows allow; END_STREAM after the last.

        Returns the number of DATA frames handed over.
        """
        if self._gone:
            return 0
        conn = self._connection.h2
        stream_id = self.stream_id
        frames = 0
        try:
            if self._head is not None:
                head, self._head = self._head, None
                end = self._ended and not self._pending
                conn.send_response_headers(stream_id, head, end)
                self._connection._guard.answered(stream_id)
                if end:
                    self._finished()
                    return 0
            pending = self._pending
            sent = 0
            while pending and sent < budget:
                window = conn.local_flow_control_window(stream_id)
                if window <= 0:
                    break
                size = min(window, conn.max_outbound_frame_size, budget - sent)
                chunk = pending[0]
                if len(chunk) > size:
                    piece = chunk[:size]
                    pending[0] = chunk[size:]
                else:
                    piece = pending.popleft()
                self._pending_size -= len(piece)
                sent += len(piece)
                frames += 1
                last = self._ended and not pending
                conn.send_body(stream_id, piece, last)
                if last:
                    self._finished()
                    return frames
            if self._spilled:
                self._settle_spill()
            if not pending:
                if self._ended:
                    conn.end_stream(stream_id)
                    self._finished()
            elif conn.local_flow_control_window(stream_id) <= 0:
                self._wait_for_window()
        except h2.exceptions.StreamClosedError:
            # The client reset it meanwhile; StreamReset tells the exchange.
            self._gone = True
            self._drop_pending()
            self._stop_timers()
        except h2.exceptions.ProtocolError as e:
            # A header PHP sent that HTTP/2 cannot carry, for one.
            self._connection.log.error(
                "HTTP/2 response to {uri} refused by h2: {error}", uri=self._path, error=str(e)
            )
            self._reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
        return frames

    def _wait_for_window(self) -> None:
        """Bytes to send and no window: wait for the client's WINDOW_UPDATE, client_send seconds at most."""
        self._connection.stream_blocked(self)
        timeout = self._connection.client_send_timeout
        if timeout is not None and self._send_timer is None:
            self._send_timer = self._connection._clock.callLater(timeout, self._send_stalled)

    def unblocked(self) -> None:
        """The client opened a window: the wait is over."""
        self._stop_timer("_send_timer")

    def _send_stalled(self) -> None:
        # nginx's send_timeout for one stream: the response is abandoned
        # (PHP's output drained, its FastCGI connection freed).
        self._send_timer = None
        if not self._gone:
            self._connection.log.info(
                "HTTP/2 client {peer} opened no window for {uri} in {timeout} s; stream reset",
                peer=str(self._connection.getPeer()), uri=self._path, timeout=self._connection.client_send_timeout,
            )
            self._reset(h2.errors.ErrorCodes.CANCEL)

    def _stop_timer(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None:
            setattr(self, name, None)
            if call.active():
                call.cancel()

    def _stop_timers(self) -> None:
        self._stop_timer("_body_timer")
        self._stop_timer("_send_timer")

    def after_send(self, transport_paused: bool) -> None:
        """The pump is done for this turn: a producer that may go on is resumed, or asked for more."""
        producer = self._producer
        if producer is None or self._gone or transport_paused:
            return
        if self._streaming:
            if self._producer_paused and self._pending_size <= STREAM_BUFFER // 2:
                self._producer_paused = False
                producer.resumeProducing()
        elif self._pending_size < STREAM_BUFFER and not self._ended:
            producer.resumeProducing()  # writes its next piece, which schedules the next pump

    def pause_producer(self) -> None:
        producer = self._producer
        if producer is not None and self._streaming and not self._producer_paused:
            self._producer_paused = True
            producer.pauseProducing()

    def _finished(self) -> None:
        self._gone = True
        self._stop_timers()
        if self._spilled:
            self._settle_spill()
        self._connection.stream_done(self)

    def _reset(self, code: int) -> None:
        try:
            self._connection.h2.reset_stream(self.stream_id, code)
        except h2.exceptions.ProtocolError:
            pass
        self._gone = True
        self._drop_pending()
        self._stop_timers()
        self._connection.stream_done(self)
        self._connection._schedule_pump()
        exchange = self.exchange
        if exchange is not None:
            exchange.lost()  # a reset of ours (client_send, h2's refusal): PHP's request is abandoned


