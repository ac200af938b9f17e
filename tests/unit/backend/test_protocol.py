"""FastCGIClientProtocol over a StringTransport with a Clock: bytes out, events in, timeouts, backpressure."""

from __future__ import annotations

import io
import socket
from typing import Any, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from fephp.backend.errors import (
    BackendClosed,
    BackendProtocolError,
    RequestRejected,
    ResponseTimeout,
)
from fephp.backend.protocol import BODY_CHUNK_SIZE, FastCGIClientProtocol, PeerWatch
from fephp.fastcgi import (
    ProtocolStatus,
    RecordType,
    ResponderConnection,
    Stdin,
    encode_record,
    encode_stream,
)
from fephp.testing import FakePeerWatch, RecordingSink

PARAMS = [(b"SCRIPT_FILENAME", b"/x.php"), (b"REQUEST_METHOD", b"POST")]

BEGIN_KEEP_CONN = b"\x01\x01\x00\x01\x00\x08\x00\x00" + b"\x00\x01\x01\x00\x00\x00\x00\x00"
PARAMS_RECORD = (
    b"\x01\x04\x00\x01\x00\x2b\x05\x00"
    + b"\x0f\x06SCRIPT_FILENAME/x.php"
    + b"\x0e\x04REQUEST_METHODPOST"
    + b"\0" * 5
)
PARAMS_END = b"\x01\x04\x00\x01\x00\x00\x00\x00"
STDIN_END = b"\x01\x05\x00\x01\x00\x00\x00\x00"
ABORT = b"\x01\x02\x00\x01\x00\x00\x00\x00"
HEAD = BEGIN_KEEP_CONN + PARAMS_RECORD + PARAMS_END

#: Encodes what php-fpm would send; used for its record builders only.
backend = ResponderConnection()


class BufferingTransport(StringTransport):
    """A StringTransport that, like a real one, pauses its streaming producer when its buffer is full."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.producer_paused = False
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(len(data))
        if self.producer is not None and not self.producer_paused and len(self.value()) > self.limit:
            self.producer_paused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """Take what was written, then resume the producer as a writable socket would."""
        data = self.value()
        self.clear()
        if self.producer is not None and self.producer_paused:
            self.producer_paused = False
            self.producer.resumeProducing()
        return data


class CountingFile(io.BytesIO):
    """A file body that records the size of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: Optional[int] = -1) -> bytes:
        data = super().read(size)
        self.reads.append(len(data))
        return data


class ProtocolTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.closed: list[FastCGIClientProtocol] = []
        self.proto = FastCGIClientProtocol(
            self.clock, response_timeout=10.0, on_close=self.closed.append
        )
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.sink = RecordingSink()

    def start(self, body: Any = b"hello") -> "Deferred[int]":
        d = self.proto.request(PARAMS, body, self.sink)
        self.transport.clear()
        return d

    def feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def end(self, app_status: int = 0, status: int = ProtocolStatus.REQUEST_COMPLETE) -> None:
        self.feed(backend.end_request(1, app_status, status))

    # -- what goes out -------------------------------------------------------------

    def test_request_with_small_body_exact_bytes(self) -> None:
        """A small body goes out as BEGIN_REQUEST (KEEP_CONN), PARAMS, empty PARAMS, STDIN, empty STDIN."""
        self.proto.request(PARAMS, b"hello", self.sink)
        self.assertEqual(
            self.transport.value(),
            HEAD + b"\x01\x05\x00\x01\x00\x05\x03\x00hello\x00\x00\x00" + STDIN_END,
        )
        self.assertIsNone(self.transport.producer)

    def test_request_without_body_sends_only_the_closing_stdin(self) -> None:
        """No body means an empty STDIN stream: just the closing record."""
        self.proto.request(PARAMS, None, self.sink)
        self.assertEqual(self.transport.value(), HEAD + STDIN_END)

    def test_small_file_body_goes_out_in_one_write(self) -> None:
        """A file body smaller than a chunk is sent with the request head and its end in a single write."""
        transport = BufferingTransport(limit=100_000)
        proto = FastCGIClientProtocol(self.clock, response_timeout=None)
        proto.makeConnection(transport)
        proto.request(PARAMS, io.BytesIO(b"a=1&b=2"), self.sink)
        self.assertEqual(transport.writes, [len(HEAD) + 8 + 7 + 1 + 8])
        self.assertEqual(transport.value(), HEAD + encode_stream(RecordType.STDIN, 1, b"a=1&b=2") + STDIN_END)
        self.assertIsNone(transport.producer)

    def test_file_body_is_streamed_as_the_transport_drains(self) -> None:
        """A file body bigger than the transport buffer is read and written a chunk at a time."""
        transport = BufferingTransport(limit=100_000)
        proto = FastCGIClientProtocol(self.clock, response_timeout=None)
        proto.makeConnection(transport)
        data = bytes(range(256)) * 2100 + b"tail"
        body = CountingFile(data)
        d = proto.request(PARAMS, body, self.sink)

        # One chunk read and written, then the transport's buffer is full.
        self.assertEqual(body.reads, [BODY_CHUNK_SIZE])
        self.assertIs(transport.producer_paused, True)
        first = transport.drain()
        self.assertEqual(first, HEAD + encode_stream(RecordType.STDIN, 1, data[:BODY_CHUNK_SIZE]))

        # Drained: the next chunk, and it is full again.
        self.assertEqual(body.reads, [BODY_CHUNK_SIZE, BODY_CHUNK_SIZE])
        self.assertIs(transport.producer_paused, True)
        second = transport.drain()
        self.assertEqual(
            second, encode_stream(RecordType.STDIN, 1, data[BODY_CHUNK_SIZE : 2 * BODY_CHUNK_SIZE])
        )

        # The rest fits: the tail, the closing record, and the writer unregisters.
        self.assertEqual(
            body.reads, [BODY_CHUNK_SIZE, BODY_CHUNK_SIZE, len(data) - 2 * BODY_CHUNK_SIZE, 0]
        )
        third = transport.value()
        self.assertEqual(
            third, encode_stream(RecordType.STDIN, 1, data[2 * BODY_CHUNK_SIZE :]) + STDIN_END
        )
        self.assertIsNone(transport.producer)
        # Never more than the request head and one chunk in one write.
        self.assertLessEqual(max(transport.writes), len(HEAD) + BODY_CHUNK_SIZE + 4 * 16)

        server = ResponderConnection()
        events = server.receive_data(first + second + third)
        self.assertEqual(b"".join(e.data for e in events if isinstance(e, Stdin)), data)
        proto.dataReceived(backend.end_request(1))
        self.assertEqual(self.successResultOf(d), 0)
        self.assertIs(proto.reusable, True)

    def test_file_body_writer_stops_when_the_backend_answers_early(self) -> None:
        """END_REQUEST before the file body was sent drops the connection and writes no more STDIN."""
        transport = BufferingTransport(limit=100_000)
        proto = FastCGIClientProtocol(self.clock, response_timeout=None)
        proto.makeConnection(transport)
        body = CountingFile(b"z" * (3 * BODY_CHUNK_SIZE))
        d = proto.request(PARAMS, body, self.sink)
        transport.clear()
        proto.dataReceived(backend.stdout(1, b"Status: 413\r\n\r\n") + backend.end_request(1))
        self.assertEqual(self.successResultOf(d), 0)
        self.assertIs(proto.reusable, False)
        self.assertIs(transport.disconnecting, True)
        self.assertEqual(transport.drain(), b"")
        self.assertEqual(body.reads, [BODY_CHUNK_SIZE])
        self.assertIsNone(transport.producer)

    # -- what comes in --------------------------------------------------------------

    def test_output_reaches_the_sink_in_order_after_response_started(self) -> None:
        """response_started comes once, first; stdout and stderr follow in arrival order.

        Each read that brought stdout ends with one flush, after its last piece.
        """
        d = self.start()
        self.feed(backend.stdout(1, b"Status: 200\r\n\r\n") + backend.stderr(1, b"warn"))
        self.feed(backend.stdout(1, b"abc"))
        self.feed(backend.stdout(1, b"def", close=True) + backend.end_request(1, 4))
        self.assertEqual(
            self.sink.calls,
            [
                ("started",),
                ("stdout", b"Status: 200\r\n\r\n"),
                ("stderr", b"warn"),
                ("flush",),
                ("stdout", b"abc"),
                ("flush",),
                ("stdout", b"def"),
                ("flush",),
            ],
        )
        self.assertEqual(self.successResultOf(d), 4)

    def test_stderr_before_stdout_does_not_start_the_response(self) -> None:
        """Only STDOUT starts the response (and is flushed); STDERR alone calls neither."""
        self.start()
        self.feed(backend.stderr(1, b"early"))
        self.assertEqual(self.sink.calls, [("stderr", b"early")])

    def test_reusable_after_a_clean_end_request(self) -> None:
        """After END_REQUEST with the body sent the connection is reusable and counts the request."""
        self.assertIs(self.proto.reusable, True)
        d = self.start()
        self.assertIs(self.proto.reusable, False)
        self.assertIs(self.proto.busy, True)
        self.end()
        self.successResultOf(d)
        self.assertIs(self.proto.reusable, True)
        self.assertIs(self.proto.busy, False)
        self.assertEqual(self.proto.completed, 1)
        self.assertEqual(self.transport.disconnecting, False)

    def test_second_request_on_the_same_connection(self) -> None:
        """A reusable connection carries a second request with request id 1 again."""
        self.start()
        self.end()
        d = self.proto.request(PARAMS, b"", RecordingSink())
        self.assertEqual(self.transport.value(), HEAD + STDIN_END)
        self.end(9)
        self.assertEqual(self.successResultOf(d), 9)
        self.assertEqual(self.proto.completed, 2)

    def test_request_on_a_busy_connection_is_refused(self) -> None:
        """request() while one is in flight raises RuntimeError."""
        self.start()
        self.assertRaises(RuntimeError, self.proto.request, PARAMS, b"", RecordingSink())

    def test_end_request_before_the_body_was_sent_is_not_reusable(self) -> None:
        """END_REQUEST that overtakes the body leaves the connection unusable and closes it."""
        transport = BufferingTransport(limit=10)
        proto = FastCGIClientProtocol(self.clock, response_timeout=None)
        proto.makeConnection(transport)
        d = proto.request(PARAMS, io.BytesIO(b"q" * (3 * BODY_CHUNK_SIZE)), self.sink)
        proto.dataReceived(backend.end_request(1))
        self.assertEqual(self.successResultOf(d), 0)
        self.assertIs(proto.reusable, False)
        self.assertIs(transport.disconnecting, True)

    # -- backpressure ---------------------------------------------------------------

    def test_sink_pause_and_resume_reach_the_transport(self) -> None:
        """The sink's producer pauses and resumes reading from the backend."""
        self.start()
        self.feed(backend.stdout(1, b"x"))
        assert self.sink.producer is not None
        self.assertEqual(self.transport.producerState, "producing")
        self.sink.producer.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.sink.producer.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.sink.producer.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_end_request_while_paused_resumes_reading(self) -> None:
        """A request that ends while its sink is paused leaves the connection reading again."""
        self.start()
        self.feed(backend.stdout(1, b"x"))
        assert self.sink.producer is not None
        self.sink.producer.pauseProducing()
        self.end()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertIs(self.proto.reusable, True)

    def test_a_finished_requests_producer_cannot_pause_the_next_request(self) -> None:
        """The producer given to one request's sink does nothing once that request ended."""
        self.start()
        self.feed(backend.stdout(1, b"x"))
        old = self.sink.producer
        assert old is not None
        self.end()
        self.proto.request(PARAMS, b"", RecordingSink())
        old.pauseProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_sink_stop_producing_cancels_the_request(self) -> None:
        """stopProducing on the sink's producer abandons the request like a cancel."""
        d = self.start()
        self.feed(backend.stdout(1, b"x"))
        assert self.sink.producer is not None
        self.sink.producer.stopProducing()
        self.failureResultOf(d, CancelledError)
        self.assertIs(self.proto.draining, True)
        self.assertEqual(self.transport.value(), b"")

    # -- cancellation ------------------------------------------------------------------

    def make_draining(self) -> tuple["Deferred[int]", list[FastCGIClientProtocol]]:
        drained: list[FastCGIClientProtocol] = []
        self.proto = FastCGIClientProtocol(self.clock, response_timeout=10.0, on_drained=drained.append)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        return self.start(), drained

    def test_cancel_abandons_the_request_until_php_ends_it(self) -> None:
        """A cancel fails the Deferred at once, writes nothing, keeps the connection busy and discards output until END_REQUEST."""
        d, drained = self.make_draining()
        self.feed(backend.stdout(1, b"Status: 200\r\n\r\nbefore"))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((self.proto.busy, self.proto.draining, self.proto.reusable), (True, True, False))
        self.feed(backend.stdout(1, b"after") + backend.stderr(1, b"warning"))
        self.assertEqual(self.sink.stdout, b"Status: 200\r\n\r\nbefore")
        self.assertEqual(self.sink.stderr, b"warning")
        self.assertEqual(drained, [])
        self.end()
        self.assertEqual(drained, [self.proto])
        self.assertEqual((self.proto.busy, self.proto.reusable, self.proto.completed), (False, True, 1))
        self.assertEqual(self.transport.value(), b"")
        self.assertIs(self.transport.disconnecting, False)

    def test_cancel_while_paused_resumes_reading(self) -> None:
        """An abandoned request's output is read (and dropped) even if its sink had paused it."""
        d, _ = self.make_draining()
        self.feed(backend.stdout(1, b"x"))
        assert self.sink.producer is not None
        self.sink.producer.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.transport.producerState, "producing")

    def test_abandoned_request_is_waited_for_at_most_the_response_timeout(self) -> None:
        """A script that keeps writing after its client left has response_timeout seconds, then its connection is dropped."""
        d, drained = self.make_draining()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        for _ in range(9):
            self.clock.advance(1)
            self.feed(backend.stdout(1, b"tick"))
        self.assertIs(self.transport.disconnected, False)
        self.clock.advance(1)
        self.assertIs(self.transport.disconnected, True)
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(drained, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silent_abandoned_request_is_dropped_after_the_response_timeout(self) -> None:
        """An abandoned request PHP stays silent on is dropped once PHP has said nothing for response_timeout seconds, as any request."""
        d = self.start()
        self.clock.advance(3)
        self.feed(backend.stderr(1, b"working"))
        self.clock.advance(2)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.clock.advance(7.9)
        self.assertIs(self.transport.disconnected, False)
        self.clock.advance(0.1)
        self.assertIs(self.transport.disconnected, True)

    def test_cancel_while_the_body_still_streams_aborts_and_drops_the_connection(self) -> None:
        """A request cancelled before its file body went out cannot be finished: ABORT_REQUEST, then the connection is dropped."""
        transport = BufferingTransport(limit=100_000)
        proto = FastCGIClientProtocol(self.clock, response_timeout=10.0)
        proto.makeConnection(transport)
        d = proto.request(PARAMS, io.BytesIO(b"z" * (3 * BODY_CHUNK_SIZE)), self.sink)
        transport.clear()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(transport.value(), ABORT)
        self.assertIs(transport.disconnecting, True)
        self.assertEqual((proto.busy, proto.reusable), (False, False))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_after_the_end_does_nothing(self) -> None:
        """Cancelling a finished request neither writes nor closes."""
        d = self.start()
        self.end()
        d.cancel()
        self.assertEqual(self.transport.value(), b"")
        self.assertIs(self.transport.disconnecting, False)
        self.assertIs(self.proto.reusable, True)

    # -- timeouts -----------------------------------------------------------------------

    def test_silent_backend_times_out(self) -> None:
        """With no byte for response_timeout seconds the request fails with ResponseTimeout (504)."""
        d = self.start()
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        failure = self.failureResultOf(d, ResponseTimeout)
        self.assertEqual(failure.value.http_status, 504)
        self.assertIs(self.transport.disconnected, True)
        self.assertIs(self.proto.reusable, False)

    def test_data_keeps_the_timeout_away(self) -> None:
        """Each arrival restarts the silence count; only a full silent period times out."""
        d = self.start()
        for _ in range(4):
            self.clock.advance(6)
            self.feed(backend.stdout(1, b"."))
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, ResponseTimeout)

    def test_stderr_counts_as_activity(self) -> None:
        """STDERR bytes also show the backend is alive."""
        d = self.start()
        self.clock.advance(8)
        self.feed(backend.stderr(1, b"working"))
        self.clock.advance(8)
        self.assertNoResult(d)

    def test_silence_counts_from_the_end_of_our_work_on_a_read(self) -> None:
        """Time spent handling a read (logging a stderr flood) is not PHP's silence: the count starts once the read is handled."""
        clock = self.clock

        class Slow(RecordingSink):
            def stderr_received(self, data: bytes) -> None:
                super().stderr_received(data)
                clock.advance(9)  # as long as the handling of this read took

        self.sink = Slow()
        d = self.start()
        self.feed(backend.stderr(1, b"line\n" * 1000))
        clock.advance(9.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.failureResultOf(d, ResponseTimeout)

    def test_no_timeout_while_the_sink_is_paused(self) -> None:
        """A paused sink is a slow client: no timeout fires, however long it stays paused."""
        d = self.start()
        self.feed(backend.stdout(1, b"x"))
        assert self.sink.producer is not None
        self.sink.producer.pauseProducing()
        self.clock.advance(100)
        self.clock.advance(100)
        self.assertNoResult(d)
        self.sink.producer.resumeProducing()
        self.feed(backend.stdout(1, b"y"))
        self.clock.advance(9)
        self.assertNoResult(d)
        self.end()
        self.assertEqual(self.successResultOf(d), 0)

    def test_no_timeout_without_a_limit(self) -> None:
        """response_timeout=None schedules nothing."""
        proto = FastCGIClientProtocol(self.clock, response_timeout=None)
        proto.makeConnection(StringTransport())
        d = proto.request(PARAMS, b"", self.sink)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10_000)
        self.assertNoResult(d)

    def test_timer_is_per_connection_and_lapses_when_idle(self) -> None:
        """Back-to-back requests share one timer, which lapses once the connection is idle."""
        d = self.start()
        self.end()
        self.successResultOf(d)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d = self.proto.request(PARAMS, b"", self.sink)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.end()
        self.successResultOf(d)
        self.clock.advance(60)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIs(self.proto.reusable, True)

    # -- the connection ends or breaks -----------------------------------------------------

    def test_connection_lost_before_any_output(self) -> None:
        """Losing the connection before STDOUT fails with BackendClosed, response_started False."""
        d = self.start()
        self.proto.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(d, BackendClosed)
        self.assertIs(failure.value.response_started, False)
        self.assertEqual(failure.value.http_status, 502)
        self.assertEqual(str(failure.value), "connection closed before END_REQUEST (request 1)")
        self.assertEqual(self.closed, [self.proto])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_lost_after_output(self) -> None:
        """Losing the connection after some STDOUT fails with BackendClosed, response_started True."""
        d = self.start()
        self.feed(backend.stdout(1, b"Status: 200\r\n\r\npart"))
        self.proto.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(d, BackendClosed)
        self.assertIs(failure.value.response_started, True)

    def test_connection_lost_while_draining_fires_nothing_more(self) -> None:
        """A draining connection that breaks calls on_close and raises nothing (its Deferred fired at the cancel)."""
        d, drained = self.make_draining()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(drained, [])
        self.assertIs(self.proto.busy, False)

    def test_end_of_file_while_php_fpm_still_reads_means_the_request_never_ran(self) -> None:
        """php-fpm's pm.max_requests close (end of file, still reading) under a request with no output: BackendClosed, never_ran."""
        watch = FakePeerWatch()
        self.proto.watch = watch  # type: ignore[assignment]
        d = self.start()
        watch.still_reads = True
        self.proto.readConnectionLost()
        self.assertIs(self.transport.disconnected, True)
        self.proto.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(d, BackendClosed)
        self.assertEqual((failure.value.never_ran, failure.value.response_started), (True, False))
        self.assertEqual(str(failure.value), "php-fpm closed the connection without running the request")

    def test_end_of_file_after_output_or_from_a_dead_child_may_have_run(self) -> None:
        """After any STDERR the request ran; without the peer still reading it may have: never_ran stays False either way."""
        for still_reads, output in ((True, backend.stderr(1, b"PHP Warning")), (False, b"")):
            with self.subTest(still_reads=still_reads):
                self.setUp()
                watch = FakePeerWatch()
                watch.still_reads = still_reads
                self.proto.watch = watch  # type: ignore[assignment]
                d = self.start()
                if output:
                    self.feed(output)
                self.proto.readConnectionLost()
                self.proto.connectionLost(Failure(ConnectionDone()))
                self.assertIs(self.failureResultOf(d, BackendClosed).value.never_ran, False)

    def test_connection_lost_while_idle(self) -> None:
        """An idle connection that closes calls on_close once and is no longer reusable."""
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.closed, [self.proto])
        self.assertIs(self.proto.reusable, False)

    def test_protocol_error_fails_the_request_and_aborts(self) -> None:
        """A record the backend may not send fails the request with BackendProtocolError and aborts."""
        d = self.start()
        self.feed(encode_record(RecordType.BEGIN_REQUEST, 1, b"\0" * 8))
        failure = self.failureResultOf(d, BackendProtocolError)
        self.assertEqual(failure.value.http_status, 502)
        self.assertIs(self.transport.disconnected, True)
        self.assertIs(self.proto.reusable, False)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sink_that_raises_fails_its_request_and_the_connection_drains(self) -> None:
        """An error raised by the sink (a bad CGI head) fails the request with it, escapes nothing, and the connection serves again after END_REQUEST."""

        class Refusing(RecordingSink):
            def stdout_received(self, data: bytes) -> None:
                super().stdout_received(data)
                raise ValueError("head too large")

        sink = Refusing()
        drained: list[FastCGIClientProtocol] = []
        self.proto = FastCGIClientProtocol(self.clock, response_timeout=10.0, on_drained=drained.append)
        self.proto.makeConnection(self.transport)
        d = self.proto.request(PARAMS, b"", sink)
        self.feed(backend.stdout(1, b"X-Big: aaaa") + backend.stdout(1, b"more"))
        failure = self.failureResultOf(d, ValueError)
        self.assertEqual(str(failure.value), "head too large")
        self.assertEqual(sink.stdout, b"X-Big: aaaa")
        self.assertIs(self.proto.draining, True)
        self.end()
        self.assertEqual((drained, self.proto.reusable), ([self.proto], True))

    def test_overloaded_is_rejected_with_503(self) -> None:
        """END_REQUEST with OVERLOADED fails with RequestRejected, HTTP 503."""
        d = self.start()
        self.end(0, ProtocolStatus.OVERLOADED)
        failure = self.failureResultOf(d, RequestRejected)
        self.assertEqual(
            (failure.value.protocol_status, failure.value.http_status), (ProtocolStatus.OVERLOADED, 503)
        )
        self.assertEqual(str(failure.value), "backend rejected the request: OVERLOADED")

    def test_cant_mpx_conn_is_rejected_with_503(self) -> None:
        """END_REQUEST with CANT_MPX_CONN fails with RequestRejected, HTTP 503."""
        d = self.start()
        self.end(0, ProtocolStatus.CANT_MPX_CONN)
        self.assertEqual(self.failureResultOf(d, RequestRejected).value.http_status, 503)

    def test_unknown_role_is_rejected_with_502(self) -> None:
        """END_REQUEST with UNKNOWN_ROLE fails with RequestRejected, HTTP 502."""
        d = self.start()
        self.end(0, ProtocolStatus.UNKNOWN_ROLE)
        failure = self.failureResultOf(d, RequestRejected)
        self.assertEqual(
            (failure.value.protocol_status, failure.value.http_status), (ProtocolStatus.UNKNOWN_ROLE, 502)
        )

    # -- management -----------------------------------------------------------------------------

    def test_get_values(self) -> None:
        """get_values sends GET_VALUES and fires with the backend's answer."""
        d = self.proto.get_values([b"FCGI_MPXS_CONNS"])
        self.assertEqual(
            self.transport.value(),
            b"\x01\x09\x00\x00\x00\x11\x07\x00\x0f\x00FCGI_MPXS_CONNS" + b"\0" * 7,
        )
        self.assertRaises(RuntimeError, self.proto.get_values, [b"FCGI_MAX_CONNS"])
        self.feed(backend.get_values_result({b"FCGI_MPXS_CONNS": b"0"}))
        self.assertEqual(self.successResultOf(d), {b"FCGI_MPXS_CONNS": b"0"})

    def test_get_values_fails_when_the_connection_closes(self) -> None:
        """php-fpm may close instead of answering: the query fails with BackendClosed."""
        d = self.proto.get_values([b"FCGI_MPXS_CONNS"])
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, BackendClosed)

    def test_close_loses_the_connection(self) -> None:
        """close() loses the connection and the protocol is no longer reusable."""
        self.proto.close()
        self.assertIs(self.transport.disconnecting, True)
        self.assertIs(self.proto.reusable, False)


class PeerWatchTestCase(SynchronousTestCase):
    """PeerWatch over a real socket pair: what the kernel says about the other end."""

    def pair(self) -> tuple[socket.socket, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        return ours, theirs

    def test_quiet_open_connection(self) -> None:
        """An open connection with nothing waiting: not gone."""
        ours, _ = self.pair()
        self.assertIs(PeerWatch(ours).peer_gone(), False)

    def test_stray_bytes_or_end_of_file_mean_gone(self) -> None:
        """Bytes waiting on an idle connection, or its end of file, both mean it must not be used."""
        ours, theirs = self.pair()
        theirs.send(b"x")
        self.assertIs(PeerWatch(ours).peer_gone(), True)
        ours, theirs = self.pair()
        theirs.close()
        self.assertIs(PeerWatch(ours).peer_gone(), True)

    def test_half_close_still_reads_and_full_close_does_not(self) -> None:
        """shutdown(SHUT_WR) on the other end (php-fpm's drain) reads as still reading; close() does not."""
        ours, theirs = self.pair()
        theirs.shutdown(socket.SHUT_WR)
        self.assertIs(PeerWatch(ours).peer_still_reads(), True)
        ours, theirs = self.pair()
        theirs.close()
        self.assertIs(PeerWatch(ours).peer_still_reads(), False)

    def test_tcp_never_claims_the_other_end_still_reads(self) -> None:
        """Over TCP a half close and a dead peer look alike, so the answer is no."""
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        ours = socket.create_connection(listener.getsockname())
        self.addCleanup(ours.close)
        theirs, _ = listener.accept()
        self.addCleanup(theirs.close)
        theirs.shutdown(socket.SHUT_WR)
        ours.recv(1)  # the FIN has arrived
        self.assertIs(PeerWatch(ours).peer_still_reads(), False)


class SendTestCase(SynchronousTestCase):
    """send(): the Deferred-free way the pool runs a request, with the same outcomes as request()."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.proto = FastCGIClientProtocol(self.clock, response_timeout=10.0)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.sink = RecordingSink()

    def feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def end(self, app_status: int = 0) -> None:
        self.feed(backend.end_request(1, app_status, ProtocolStatus.REQUEST_COMPLETE))

    def send(self) -> tuple[Any, list[Any]]:
        outcomes: list[Any] = []
        handle = self.proto.send(PARAMS, b"hello", self.sink, outcomes.append)
        self.transport.clear()
        return handle, outcomes

    def test_send_calls_on_done_once_with_the_app_status(self) -> None:
        """END_REQUEST calls on_done with PHP's app status, once, and the connection is reusable."""
        _, outcomes = self.send()
        self.feed(backend.stdout(1, b"Status: 200\r\n\r\nok", close=True))
        self.assertEqual(outcomes, [])
        self.end(app_status=3)
        self.assertEqual(outcomes, [3])
        self.assertEqual((self.proto.reusable, self.sink.stdout), (True, b"Status: 200\r\n\r\nok"))

    def test_send_cancel_fails_once_and_drains(self) -> None:
        """cancel() gives on_done a CancelledError at once; PHP's later END_REQUEST adds nothing and frees the connection."""
        handle, outcomes = self.send()
        self.feed(backend.stdout(1, b"Status: 200\r\n\r\n"))
        handle.cancel()
        handle.cancel()
        self.assertEqual(len(outcomes), 1)
        self.assertTrue(outcomes[0].check(CancelledError))
        self.assertIs(self.proto.draining, True)
        self.end()
        self.assertEqual((len(outcomes), self.proto.reusable), (1, True))

    def test_send_connection_lost_is_a_backend_closed_failure(self) -> None:
        """A connection that closes mid-request gives on_done a BackendClosed failure."""
        _, outcomes = self.send()
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(outcomes), 1)
        self.assertTrue(outcomes[0].check(BackendClosed))

    def test_send_on_done_raising_is_logged_and_the_connection_kept(self) -> None:
        """An on_done that raises is logged as a Deferred's callback would be; the connection stays usable."""
        def broken(_: object) -> None:
            raise ZeroDivisionError("caller bug")

        self.proto.send(PARAMS, b"hello", self.sink, broken)
        self.feed(backend.stdout(1, b"Status: 200\r\n\r\n", close=True))
        self.end()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIs(self.proto.reusable, True)
