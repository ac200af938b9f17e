"""One FastCGI connection, from the web server's side: a Twisted Protocol over the sans-io codec, one request at a time.

php-fpm answers GET_VALUES with ``FCGI_MPXS_CONNS=0``: it never multiplexes,
so every request uses request id 1 and a connection carries one request after
another (FCGI_KEEP_CONN).  The protocol decides whether a connection is clean
enough to serve again; the pool (:mod:`fephp.backend.pool`) asks it through
:attr:`FastCGIClientProtocol.reusable`.
"""

from __future__ import annotations

from typing import IO, Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._twisted import send_now
from ..fastcgi import (
    ClientConnection,
    EndRequest,
    GetValuesResult,
    ProtocolError,
    ProtocolStatus,
    Stderr,
    Stdout,
)
from .errors import (
    BackendClosed,
    BackendProtocolError,
    RequestRejected,
    ResponseTimeout,
)
from .interface import Body, Params, ResponseSink

__all__ = ["FastCGIClientProtocol", "BODY_CHUNK_SIZE"]

#: How much of a file body is read and written at a time: four full records.
BODY_CHUNK_SIZE = 4 * 0xFFFF
_REQUEST_ID = 1


@implementer(IPushProducer)
class _OutputControl:
    """What the sink gets to pause the backend's output of one request.

    It is per request so that a sink that lingers cannot pause a later
    request on the same connection.
    """

    __slots__ = ("_request",)

    def __init__(self, request: "_Request") -> None:
        self._request = request

    def pauseProducing(self) -> None:
        self._request.pause_output()

    def resumeProducing(self) -> None:
        self._request.resume_output()

    def stopProducing(self) -> None:
        self._request.deferred.cancel()


@implementer(IPushProducer)
class _BodyWriter:
    """Streams a file body as STDIN records, pausing when the transport's buffer is full."""

    def __init__(self, proto: "FastCGIClientProtocol", request: "_Request", file: IO[bytes]):
        self._proto = proto
        self._request = request
        self._file = file
        self._paused = False
        self._done = False

    def start(self, first: bytes) -> None:
        """Write *first* (the request so far), then the rest of the file as it drains."""
        transport: Any = self._proto.transport  # an IConsumer too
        assert transport is not None
        transport.registerProducer(self, True)
        self._proto._write(first)
        self._write_some()

    def _write_some(self) -> None:
        proto = self._proto
        codec = proto._codec
        while not self._paused and not self._done:
            if proto._request is not self._request:
                self._finish()
                return
            chunk = self._file.read(BODY_CHUNK_SIZE)
            if not chunk:
                proto._write(codec.end_stdin(_REQUEST_ID))
                self._request.body_sent = True
                self._finish()
                return
            proto._write(codec.send_stdin(_REQUEST_ID, chunk))

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            transport: Any = self._proto.transport
            if transport is not None:
                transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write_some()

    def stopProducing(self) -> None:
        self._done = True


class _Request:
    """The state of the one request in flight on a connection."""

    __slots__ = (
        "proto",
        "sink",
        "deferred",
        "started",
        "body_sent",
        "output_paused",
        "last_activity",
    )

    def __init__(self, proto: "FastCGIClientProtocol", sink: ResponseSink) -> None:
        self.proto = proto
        self.sink = sink
        self.deferred: Deferred[int] = Deferred(self._cancel)
        self.started = False
        self.body_sent = False
        self.output_paused = False
        self.last_activity = 0.0

    def _cancel(self, d: Deferred[int]) -> None:
        self.proto._abort_request(self)

    def pause_output(self) -> None:
        if self.proto._request is self and not self.output_paused:
            self.output_paused = True
            self.proto._pause_reading()

    def resume_output(self) -> None:
        if self.output_paused:
            self.output_paused = False
            if self.proto._request is self:
                self.proto._resume_reading()


class FastCGIClientProtocol(Protocol):
    """The web server's end of one FastCGI connection.

    States::

        idle ---request()---> sending (the body is still being written)
                                 |  the body is all out
                                 v
                              awaiting (STDOUT and STDERR flow to the sink;
                                 |      paused while the sink is)
                                 |  END_REQUEST
                                 v
                              idle (reusable)

        any state --protocol error, response timeout, cancel, END_REQUEST
                    before the body was all out--> broken (never reused)
        any state --connectionLost--> closed

    :param clock: for the response timeout.
    :param response_timeout: seconds the backend may stay silent during a
        request before it fails with :class:`ResponseTimeout`; ``None`` for no limit.
    :param on_close: called once when the connection is gone, so a pool can
        forget an idle connection that the backend closed.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        response_timeout: Optional[float] = 60.0,
        on_close: Optional[Callable[["FastCGIClientProtocol"], None]] = None,
    ) -> None:
        self._clock = clock
        self._response_timeout = response_timeout
        self._on_close = on_close
        self._codec = ClientConnection()
        self._request: Optional[_Request] = None
        self._connected = False
        self._broken = False
        self._reading_paused = False
        self._values: Optional[Deferred[dict[bytes, bytes]]] = None
        # One timer per connection, not per request: it is armed by the first
        # request and re-armed from each request's last activity, so
        # back-to-back requests schedule nothing.
        self._timeout_call: Optional[IDelayedCall] = None
        #: Requests completed on this connection (a pool's retry policy looks at it).
        self.completed = 0

    # -- Twisted hooks -------------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True

    def dataReceived(self, data: bytes) -> None:
        request = self._request
        if request is not None:
            request.last_activity = self._clock.seconds()
        try:
            events = self._codec.receive_data(data)
        except ProtocolError as e:
            self._fail_connection(BackendProtocolError(str(e)))
            return
        wrote = None
        for event in events:
            request = self._request
            if type(event) is Stdout:
                if request is None:  # pragma: no cover - the codec checks ids
                    continue
                if not request.started:
                    request.started = True
                    request.sink.response_started(_OutputControl(request))
                wrote = request.sink
                wrote.stdout_received(event.data)
            elif type(event) is Stderr:
                if request is not None:
                    request.sink.stderr_received(event.data)
            elif type(event) is EndRequest:
                self._end_request(event)
            elif type(event) is GetValuesResult:
                values, self._values = self._values, None
                if values is not None:
                    values.callback(event.values)
            # UnknownType answers a management record we do not send.
        if wrote is not None:
            wrote.flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        self._connected = False
        self._broken = True
        self._cancel_timeout()
        request, self._request = self._request, None
        if request is not None:
            error = self._codec.connection_lost()
            self._finish(
                request,
                BackendClosed(
                    str(error) if error else "connection closed",
                    response_started=request.started,
                ),
            )
        values, self._values = self._values, None
        if values is not None:
            values.errback(BackendClosed("connection closed before GET_VALUES_RESULT"))
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)

    # -- what the pool uses --------------------------------------------------

    @property
    def reusable(self) -> bool:
        """Connected, nothing in flight, nothing half-read: safe to hand out again."""
        return self._connected and not self._broken and self._request is None and self._codec.idle

    @property
    def busy(self) -> bool:
        return self._request is not None

    def request(self, params: Params, body: Body, sink: ResponseSink) -> "Deferred[int]":
        """Send one request; the Deferred fires with PHP's app status after END_REQUEST.

        The body is sent as STDIN records as it is read; a file body is read
        in chunks of :data:`BODY_CHUNK_SIZE` while the transport accepts more.
        Cancelling sends ABORT_REQUEST and drops the connection.
        """
        if not self.reusable:
            raise RuntimeError("request() on a connection that is busy or closed")
        request = _Request(self, sink)
        self._request = request
        request.last_activity = self._clock.seconds()
        if self._response_timeout is not None and self._timeout_call is None:
            self._timeout_call = self._clock.callLater(self._response_timeout, self._check_timeout)
        codec = self._codec
        head = codec.begin_request(_REQUEST_ID, params, keep_conn=True)
        if body is None or isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body) if body else b""
        else:
            data = body.read(BODY_CHUNK_SIZE)
            if len(data) == BODY_CHUNK_SIZE:
                # More may follow: stream the rest as the transport takes it.
                _BodyWriter(self, request, body).start(head + codec.send_stdin(_REQUEST_ID, data))
                return request.deferred
        # The whole request in one write.
        self._write(head + codec.send_stdin(_REQUEST_ID, data) + codec.end_stdin(_REQUEST_ID))
        request.body_sent = True
        return request.deferred

    def get_values(self, names: list[bytes]) -> "Deferred[dict[bytes, bytes]]":
        """Ask the backend FCGI_GET_VALUES; fires with what it answered."""
        if self._values is not None:
            raise RuntimeError("a GET_VALUES query is already pending")
        d: Deferred[dict[bytes, bytes]] = Deferred()
        self._values = d
        self._write(self._codec.get_values(names))
        return d

    def close(self) -> None:
        """Drop the connection (idle or not)."""
        self._broken = True
        self._cancel_timeout()
        if self.transport is not None:
            self.transport.loseConnection()

    # -- internals -----------------------------------------------------------

    def _write(self, data: bytes) -> None:
        send_now(self.transport, data)

    def _end_request(self, event: EndRequest) -> None:
        request, self._request = self._request, None
        if request is None:  # pragma: no cover - the codec checks ids
            return
        if self._reading_paused:
            self._resume_reading()
        if not request.body_sent:
            # The backend answered before it had the whole body: what is still
            # on its way would be read as the next request's records.
            self._broken = True
            self.close()
        if event.protocol_status != ProtocolStatus.REQUEST_COMPLETE:
            self._finish(request, RequestRejected(event.protocol_status, event.app_status))
        else:
            self.completed += 1
            self._finish(request, None, event.app_status)

    def _finish(
        self, request: _Request, error: Optional[Exception], app_status: int = 0
    ) -> None:
        if self._broken:
            self._cancel_timeout()
        if error is None:
            request.deferred.callback(app_status)
        else:
            request.deferred.errback(Failure(error))

    def _cancel_timeout(self) -> None:
        if self._timeout_call is not None:
            if self._timeout_call.active():
                self._timeout_call.cancel()
            self._timeout_call = None

    def _check_timeout(self) -> None:
        self._timeout_call = None
        request = self._request
        if request is None:
            return  # idle: the next request arms the timer again
        assert self._response_timeout is not None
        idle_for = self._clock.seconds() - request.last_activity
        if request.output_paused:
            # A paused sink is a slow client, not a slow backend.
            idle_for = 0.0
        if idle_for < self._response_timeout:
            self._timeout_call = self._clock.callLater(
                self._response_timeout - idle_for, self._check_timeout
            )
            return
        self._request = None
        self._broken = True
        self._finish(
            request, ResponseTimeout(f"backend silent for {self._response_timeout:g} s")
        )
        self._abort_transport()

    def _abort_request(self, request: _Request) -> None:
        """The caller cancelled: tell the backend (section 5.4), then drop the connection.

        Waiting for php-fpm's END_REQUEST after an abort would keep the
        connection in an unknown state for an unknown time; a new connection
        is cheap next to that.
        """
        if self._request is not request:
            return
        self._request = None
        self._broken = True
        self._cancel_timeout()
        if self._connected and self.transport is not None:
            self._write(self._codec.abort_request(_REQUEST_ID))
            self.transport.loseConnection()

    def _fail_connection(self, error: Exception) -> None:
        self.log.warn("FastCGI protocol error from backend: {error}", error=str(error))
        self._broken = True
        request, self._request = self._request, None
        if request is not None:
            self._finish(request, error)
        self._abort_transport()

    def _abort_transport(self) -> None:
        transport: Any = self.transport  # an ITCPTransport (or a UNIX one): it can abort
        if transport is not None:
            transport.abortConnection()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

