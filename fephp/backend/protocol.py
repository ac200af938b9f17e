"""One FastCGI connection, from the web server's side: a Twisted Protocol over the sans-io codec, one request at a time.

php-fpm answers GET_VALUES with ``FCGI_MPXS_CONNS=0``: it never multiplexes,
so every request uses request id 1 and a connection carries one request after
another (FCGI_KEEP_CONN).  The protocol decides whether a connection is clean
enough to serve again; the pool (:mod:`fephp.backend.pool`) asks it through
:attr:`FastCGIClientProtocol.reusable`.

A request is *abandoned* when its caller cancels (the HTTP client went
away) or its sink refuses the output (a CGI head PHP got wrong).  php-fpm
does not stop a script for either, so the connection, and the child it
pins, stay busy (*draining*): the output is thrown away (stderr is still
logged) until END_REQUEST, at most ``response_timeout`` seconds, and then
the connection serves again (``on_drained``).  Nothing is sent to php-fpm:
an ABORT_REQUEST it reads after the script read its input makes it drop the
connection when it next reads a request (``fcgi_read_request`` takes only a
BEGIN_REQUEST there).
"""

from __future__ import annotations

import select
import socket
from typing import IO, Any, Callable, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._twisted import plain_reads, send_now
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
from .interface import Body, Chunk, Params, ResponseSink

__all__ = ["FastCGIClientProtocol", "BODY_CHUNK_SIZE", "PeerWatch"]

#: How much of a file body is read and written at a time: four full records.
BODY_CHUNK_SIZE = 4 * 0xFFFF
#: How much one read from php-fpm may take (Twisted's default is 64 KiB): a
#: large response then costs a quarter of the reads, and each read's Python
#: work (codec, sink, one gathered send) is paid once per 256 KiB.  Measured
#: on a 1 MiB response, fephp's CPU fell by a third on CPython.
READ_SIZE = 256 * 1024
_REQUEST_ID = 1
#: Linux's poll() flag for "the other end shut down its sending side"; PyPy's select module lacks the name.
_POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)


class PeerWatch:
    """What the kernel already knows about the other end of a connection, asked without reading anything.

    A kept connection that php-fpm closed (after ``pm.max_requests``, on a
    reload) has its end of file waiting in the socket before the reactor
    has read it; a request written there would be lost.
    """

    __slots__ = ("_poll", "_unix")

    def __init__(self, sock: socket.socket) -> None:
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | _POLLRDHUP)
        self._unix = sock.family == socket.AF_UNIX

    def peer_gone(self) -> bool:
        """Whether anything waits on a connection that should be silent: an end of file, a reset, stray bytes."""
        return bool(self._poll.poll(0))

    def peer_still_reads(self) -> bool:
        """After an end of file: whether the other end shut down only its sending side and still reads.

        php-fpm closes a kept connection that way after ``pm.max_requests``
        (``fcgi_close``: ``shutdown(SHUT_WR)``, then it reads and throws away
        whatever arrives until we close), whereas a child that dies closes
        both sides.  Only a UNIX socket tells the two apart (its peer's close
        sets POLLHUP); over TCP a dead child's FIN looks the same, so the
        answer there is always no.
        """
        if not self._unix:
            return False
        events = self._poll.poll(0)
        return bool(events) and not events[0][1] & (select.POLLHUP | select.POLLERR)


def _watch(transport: Any) -> Optional[PeerWatch]:
    """A PeerWatch over *transport*'s socket, or None for a transport without one (a test's fake)."""
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    if not isinstance(handle, socket.socket):
        return None
    return PeerWatch(handle)


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
        self._request.cancel()


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
    """The state of the one request in flight on a connection, and its caller's handle on it.

    Its outcome (PHP's app status, or a Failure) goes to the caller once:
    through ``deferred`` (:meth:`FastCGIClientProtocol.request`), or by a
    direct call of ``on_done`` (:meth:`FastCGIClientProtocol.send`: the
    pool's way, one Deferred fewer per request).
    """

    __slots__ = (
        "proto",
        "sink",
        "deferred",
        "on_done",
        "settled",
        "started",
        "heard",
        "body_sent",
        "output_paused",
        "last_activity",
        "abandoned",
        "drain_until",
    )

    def __init__(
        self, proto: "FastCGIClientProtocol", sink: ResponseSink, on_done: Optional[Callable[[Any], object]] = None
    ) -> None:
        self.proto = proto
        self.sink: ResponseSink = sink
        self.on_done = on_done
        self.deferred: Optional[Deferred[int]] = Deferred(self._cancel) if on_done is None else None
        #: The outcome went to the caller (a Deferred's ``called``).
        self.settled = False
        self.started = False
        #: Any record for this request came back (STDOUT or STDERR): PHP ran it.
        self.heard = False
        self.body_sent = False
        self.output_paused = False
        self.last_activity = 0.0
        self.abandoned = False
        self.drain_until = 0.0

    def _cancel(self, d: Deferred[int]) -> None:
        self.proto._abandon(self)

    def cancel(self) -> None:
        """The caller gives up (Deferred.cancel's rule): the request is abandoned, and fails with CancelledError unless it already ended."""
        if self.deferred is not None:
            self.deferred.cancel()
            return
        if not self.settled:
            self.proto._abandon(self)
            if not self.settled:
                self.settle(Failure(CancelledError()))

    def settle(self, result: Any) -> None:
        """Hand the outcome (an app status, or a Failure) to the caller, the first time only."""
        deferred = self.deferred
        if self.settled or (deferred is not None and deferred.called):  # a cancelled Deferred is called
            return
        self.settled = True
        if deferred is not None:
            if type(result) is Failure:
                deferred.errback(result)
            else:
                deferred.callback(result)
            return
        # Let go of the caller first: it holds this request (the pool's
        # ``current``), and the cycle would leave both, with the response and
        # the exchange they hold, to the garbage collector (~25k instructions
        # per hello.php request on CPython, in its collections).
        on_done, self.on_done = self.on_done, None
        try:
            on_done(result)  # type: ignore[misc]
        except Exception:
            # As a Deferred would: the caller's bug is logged, the connection's state is kept.
            self.proto.log.failure("the caller of a FastCGI request failed on its outcome")

    def pause_output(self) -> None:
        if self.proto._request is self and not self.output_paused and not self.abandoned:
            self.output_paused = True
            self.proto._pause_reading()

    def resume_output(self) -> None:
        if self.output_paused:
            self.output_paused = False
            if self.proto._request is self:
                self.proto._resume_reading()


class _Discarding:
    """The sink of an abandoned request: its output goes nowhere, its stderr still to the first sink's log."""

    __slots__ = ("_first",)

    def __init__(self, first: ResponseSink) -> None:
        self._first = first

    def response_started(self, producer: IPushProducer) -> None:
        pass

    def stdout_received(self, data: Chunk) -> None:
        pass

    def stderr_received(self, data: bytes) -> None:
        try:
            self._first.stderr_received(data)
        except Exception:  # noqa: BLE001 - a sink that failed once may fail again; the output is lost anyway
            pass

    def flush(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class FastCGIClientProtocol(Protocol):
    """The web server's end of one FastCGI connection (its request's states: the module docstring).

    States::

        idle ---request()---> sending (the body is still being written)
                                 |  the body is all out
                                 v
                              awaiting (STDOUT and STDERR flow to the sink;
                                 |      paused while the sink is)
                                 |  END_REQUEST
                                 v
                              idle (reusable)

        awaiting --cancel, or the sink raised--> draining (output dropped;
                                 |               the Deferred has failed)
                                 |  END_REQUEST: on_drained
                                 v
                              idle (reusable)

        any state --protocol error, response timeout, cancel while sending,
                    draining past response_timeout, END_REQUEST before the
                    body was all out--> broken (never reused)
        any state --connectionLost--> closed

    :param clock: for the response timeout.
    :param response_timeout: seconds the backend may stay silent during a
        request before it fails with :class:`ResponseTimeout`, and the
        longest an abandoned request is waited for; ``None`` for no limit.
    :param on_close: called once when the connection is gone, so a pool can
        forget an idle connection that the backend closed.
    :param on_drained: called when an abandoned request's END_REQUEST came:
        the connection is free again (or :attr:`reusable` says why not).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        response_timeout: Optional[float] = 60.0,
        on_close: Optional[Callable[["FastCGIClientProtocol"], None]] = None,
        on_drained: Optional[Callable[["FastCGIClientProtocol"], None]] = None,
    ) -> None:
        self._clock = clock
        self._response_timeout = response_timeout
        self._on_close = on_close
        self._on_drained = on_drained
        #: The socket's state as the kernel sees it (None over a fake transport).
        self.watch: Optional[PeerWatch] = None
        # The backend closed its side without reading the request in flight.
        self._discarded = False
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
        if self.watch is None:
            self.watch = _watch(self.transport)
        # FileDescriptor.bufferSize: the most one read takes (and the write
        # buffer at which a body producer is paused).
        self.transport.bufferSize = READ_SIZE  # type: ignore[union-attr]
        # recv, not the recvmsg of Twisted's UNIX connections: php-fpm passes no file descriptors.
        plain_reads(self.transport, READ_SIZE)

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self._codec.receive_data(data)
        except ProtocolError as e:
            self._fail_connection(BackendProtocolError(str(e)))
            return
        wrote: Optional[_Request] = None
        for event in events:
            request = self._request
            if type(event) is Stdout:
                if request is None:  # pragma: no cover - the codec checks ids
                    continue
                request.heard = True
                # A sink that raises (a CGI head PHP got wrong) fails its
                # request here, never out of dataReceived.
                try:
                    if not request.started:
                        request.started = True
                        request.sink.response_started(_OutputControl(request))
                    request.sink.stdout_received(event.data)
                except Exception as e:  # noqa: BLE001 - whatever the sink raised is the request's error
                    self._abandon(request, e)
                    continue
                wrote = request
            elif type(event) is Stderr:
                if request is not None:
                    request.heard = True
                    try:
                        request.sink.stderr_received(event.data)
                    except Exception as e:  # noqa: BLE001 - as above
                        self._abandon(request, e)
            elif type(event) is EndRequest:
                self._end_request(event)
            elif type(event) is GetValuesResult:
                values, self._values = self._values, None
                if values is not None:
                    values.callback(event.values)
            # UnknownType answers a management record we do not send.
        if wrote is not None and not wrote.abandoned:
            try:
                wrote.sink.flush()
            except Exception as e:  # noqa: BLE001 - as above
                self._abandon(wrote, e)
        request = self._request
        if request is not None:
            # Silence is counted from the end of our own work on the read
            # (logging a stderr flood can take a while), not its start.
            request.last_activity = self._clock.seconds()

    def readConnectionLost(self) -> None:  # noqa: N802 - Twisted's name (IHalfCloseableProtocol)
        """The backend sent its end of file: see whether it read the request in flight, then close."""
        request = self._request
        if request is not None and not request.heard and self.watch is not None and self.watch.peer_still_reads():
            # php-fpm's close after pm.max_requests (PeerWatch.peer_still_reads):
            # it ends its side after the END_REQUEST of the request before
            # this one, so this one was thrown away unread, never run.
            self._discarded = True
        self._abort_transport()

    def writeConnectionLost(self) -> None:  # noqa: N802 - Twisted's name (IHalfCloseableProtocol)
        self._abort_transport()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        self._connected = False
        self._broken = True
        self._cancel_timeout()
        request, self._request = self._request, None
        if request is not None and not request.abandoned:
            error = self._codec.connection_lost()
            if self._discarded:
                message = "php-fpm closed the connection without running the request"
            else:
                message = str(error) if error else "connection closed"
            self._finish(
                request,
                BackendClosed(message, response_started=request.started, never_ran=self._discarded),
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
        """A request is on the connection, running or abandoned: its php-fpm child is taken."""
        return self._request is not None

    @property
    def draining(self) -> bool:
        """The request on the connection was abandoned and PHP has not ended it yet."""
        request = self._request
        return request is not None and request.abandoned

    def peer_gone(self) -> bool:
        """Whether the backend already closed (or broke) this idle connection, though the reactor has not read it yet."""
        watch = self.watch
        return watch is not None and watch.peer_gone()

    def request(self, params: Params, body: Body, sink: ResponseSink) -> "Deferred[int]":
        """Send one request; the Deferred fires with PHP's app status after END_REQUEST.

        The body is sent as STDIN records as it is read; a file body is read
        in chunks of :data:`BODY_CHUNK_SIZE` while the transport accepts more.
        Cancelling abandons the request (the module docstring): the Deferred
        fails with CancelledError at once, the connection stays busy until
        PHP has ended the script.
        """
        request = self._start(params, body, sink, None)
        assert request.deferred is not None
        return request.deferred

    def send(self, params: Params, body: Body, sink: ResponseSink, on_done: Callable[[Any], object]) -> _Request:
        """:meth:`request` without a Deferred: *on_done* is called once with the app status or a Failure.

        Returns the request's handle: its ``cancel()`` is the Deferred's.
        """
        return self._start(params, body, sink, on_done)

    def _start(
        self, params: Params, body: Body, sink: ResponseSink, on_done: Optional[Callable[[Any], object]]
    ) -> _Request:
        if not self.reusable:
            raise RuntimeError("request() on a connection that is busy or closed")
        request = _Request(self, sink, on_done)
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
                return request
        # The whole request in one write.
        if data:
            self._write(head + codec.send_stdin(_REQUEST_ID, data) + codec.end_stdin(_REQUEST_ID))
        else:
            self._write(head + codec.end_stdin(_REQUEST_ID))
        request.body_sent = True
        return request

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
        if request.abandoned:
            if event.protocol_status == ProtocolStatus.REQUEST_COMPLETE:
                self.completed += 1
            if self._broken:
                self._cancel_timeout()
            if self._on_drained is not None:
                self._on_drained(self)
            return
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
        # Abandoned with its sink's error, the caller has its answer: settle ignores this.
        request.settle(app_status if error is None else Failure(error))

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
        now = self._clock.seconds()
        if request.abandoned:
            left = min(request.drain_until, request.last_activity + self._response_timeout) - now
            if left > 0:
                self._timeout_call = self._clock.callLater(left, self._check_timeout)
                return
            # The script outlived the wait: closing the connection is what
            # makes PHP stop it, at its next output.
            self.log.info(
                "PHP still ran an abandoned request after {timeout:g} s: connection closed",
                timeout=self._response_timeout,
            )
            self._request = None
            self._broken = True
            self._abort_transport()
            return
        idle_for = now - request.last_activity
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

    def _abandon(self, request: _Request, error: Optional[Exception] = None) -> None:
        """Nobody wants *request*'s output any more: the caller cancelled, or its sink raised *error*.

        PHP runs the script to its end regardless, so the connection stays
        busy, discarding the output, until END_REQUEST (the module
        docstring).  The Deferred fails now: with *error*, or, for a cancel,
        with the CancelledError Deferred.cancel gives.
        """
        if self._request is not request or request.abandoned:
            return
        if not request.body_sent or not self._connected:
            # The rest of the body went away with the client's request: PHP
            # can only be told to stop (section 5.4) and the connection dropped.
            self._request = None
            self._broken = True
            self._cancel_timeout()
            if self._connected and self.transport is not None:
                self._write(self._codec.abort_request(_REQUEST_ID))
                self.transport.loseConnection()
            if error is not None:
                request.settle(Failure(error))
            return
        request.abandoned = True
        request.sink = _Discarding(request.sink)
        if request.output_paused:
            request.output_paused = False
            self._resume_reading()
        if self._response_timeout is not None:
            request.drain_until = self._clock.seconds() + self._response_timeout
            if self._timeout_call is None:
                self._timeout_call = self._clock.callLater(self._response_timeout, self._check_timeout)
        if error is not None:
            request.settle(Failure(error))

    def _fail_connection(self, error: Exception) -> None:
        self._broken = True
        request, self._request = self._request, None
        if request is not None and not request.abandoned:
            self._finish(request, error)  # its caller logs it, with the request's URI
        else:
            self.log.warn("FastCGI protocol error from backend on a connection with no request waiting: {error}", error=str(error))
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

