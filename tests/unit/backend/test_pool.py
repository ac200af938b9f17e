"""FastCGIPool on a Clock, with a fake endpoint whose connects the test fires by hand.

Each successful connect gets a :class:`fephp.testing.FakeFastCGIServer`: a real
FastCGIClientProtocol on a StringTransport, with a ResponderConnection that reads
what the pool wrote and writes what php-fpm would answer.
"""

from __future__ import annotations

import gc
import io
import platform
import weakref
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from fephp.backend.errors import (
    BackendClosed,
    ConnectError,
    PoolOverloaded,
    QueueTimeout,
)
from fephp.backend.pool import MAX_UNREAD_RESENDS, FastCGIPool, should_retry
from fephp.fastcgi import (
    AbortRequest,
    BeginRequest,
    GetValues,
    Params,
    Stdin,
)
from fephp.testing import FakeEndpoint, RecordingSink

ABORT = b"\x01\x02\x00\x01\x00\x00\x00\x00"


def params(name: str, method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [(b"SCRIPT_NAME", name.encode()), (b"REQUEST_METHOD", method)]


class _ForgetfulSink:
    """A ResponseSink that keeps nothing (RecordingSink keeps the producer, which refers back to it)."""

    def response_started(self, producer: Any) -> None:
        pass

    def stdout_received(self, data: Any) -> None:
        pass

    def stderr_received(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


class PoolTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint(self.clock)

    def make_pool(self, **kwargs: Any) -> FastCGIPool:
        kwargs.setdefault("connect_timeout", 5.0)
        kwargs.setdefault("queue_timeout", 10.0)
        kwargs.setdefault("response_timeout", None)
        kwargs.setdefault("idle_timeout", None)
        return FastCGIPool(self.endpoint, clock=self.clock, **kwargs)

    def run_one(self, pool: FastCGIPool, name: str = "/a.php", method: bytes = b"GET") -> tuple["Deferred[int]", RecordingSink]:
        sink = RecordingSink()
        return pool.request(params(name, method), b"", sink), sink

    def serve_one(self, pool: FastCGIPool) -> Any:
        """One request on a new connection, answered whole: that connection (idle in *pool* now)."""
        d, _ = self.run_one(pool)
        backend = self.endpoint.last.succeed()
        backend.respond()
        self.successResultOf(d)
        return backend

    def run_until(self, deadline: float) -> None:
        """Advance from one delayed call to the next, so each runs at its own time, up to *deadline*."""
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= deadline]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
        self.clock.advance(deadline - self.clock.seconds())

    # -- reuse and limits --------------------------------------------------------------

    def test_idle_connection_is_reused(self) -> None:
        """Two requests one after the other share one connection."""
        pool = self.make_pool()
        d1, sink1 = self.run_one(pool, "/1.php")
        backend = self.endpoint.last.succeed()
        self.assertEqual(backend.script(), b"/1.php")
        backend.respond(b"one", app_status=0)
        self.assertEqual(self.successResultOf(d1), 0)
        self.assertEqual(sink1.stdout, b"Content-Type: text/plain\r\n\r\none")
        self.assertEqual(pool.stats(), {"idle": 1, "busy": 0, "draining": 0, "connecting": 0, "waiting": 0, "failures": 0})

        d2, _ = self.run_one(pool, "/2.php")
        self.assertEqual(len(self.endpoint.connects), 1)
        self.assertEqual(backend.script(), b"/2.php")
        backend.respond(app_status=3)
        self.assertEqual(self.successResultOf(d2), 3)

    @pytest.mark.skipif(
        platform.python_implementation() == "PyPy", reason="PyPy frees objects by its collector alone: no reference counts"
    )
    def test_an_ended_request_is_freed_without_the_garbage_collector(self) -> None:
        """Once a request has ended and its caller lets go, its sink is freed by reference counting alone: no cycle holds it."""
        pool = self.make_pool()
        backend = self.serve_one(pool)  # the request below runs on a kept connection, as most do
        gc.disable()
        try:
            sink = _ForgetfulSink()
            d = pool.request(params("/a.php"), b"", sink)
            backend.respond()
            self.assertEqual(self.successResultOf(d), 0)
            freed = weakref.ref(sink)
            del d, sink
            self.assertIsNone(freed())
        finally:
            gc.enable()

    @pytest.mark.skipif(
        platform.python_implementation() == "PyPy", reason="PyPy frees objects by its collector alone: no reference counts"
    )
    def test_a_sent_request_is_freed_without_the_garbage_collector(self) -> None:
        """A send whose sink keeps the handle's cancel (as the exchange does) leaves no cycle once it ended."""
        pool = self.make_pool()
        backend = self.serve_one(pool)
        gc.disable()
        try:
            sink = _ForgetfulSink()
            outcomes: list[Any] = []
            sink.keep = [pool.send(params("/a.php"), b"", sink, outcomes.append).cancel]  # type: ignore[attr-defined]
            backend.respond()
            self.assertEqual(outcomes, [0])
            freed = weakref.ref(sink)
            del sink
            self.assertIsNone(freed())
        finally:
            gc.enable()

    def test_never_more_than_size_connections_and_waiters_are_served_in_order(self) -> None:
        """With size 2, four requests make two connects, and the others get connections first come first served."""
        pool = self.make_pool(size=2)
        results = [self.run_one(pool, f"/{i}.php")[0] for i in range(1, 5)]
        self.assertEqual(len(self.endpoint.connects), 2)
        self.assertEqual(pool.stats()["waiting"], 4)

        b = self.endpoint.connects[1].succeed()
        self.assertEqual(b.script(), b"/1.php")
        a = self.endpoint.connects[0].succeed()
        self.assertEqual(a.script(), b"/2.php")
        self.assertEqual(pool.stats(), {"idle": 0, "busy": 2, "draining": 0, "connecting": 0, "waiting": 2, "failures": 0})

        b.respond()
        self.assertEqual(b.script(), b"/3.php")
        a.respond()
        self.assertEqual(a.script(), b"/4.php")
        a.respond()
        b.respond()
        self.assertEqual([self.successResultOf(d) for d in results], [0, 0, 0, 0])
        self.assertEqual(len(self.endpoint.connects), 2)
        self.assertEqual(pool.stats()["idle"], 2)

    def test_full_queue_is_refused_at_once(self) -> None:
        """Beyond queue_size waiting requests, a request fails at once with PoolOverloaded (503)."""
        pool = self.make_pool(size=1, queue_size=1)
        d1, _ = self.run_one(pool)
        self.endpoint.last.succeed()
        d2, _ = self.run_one(pool)
        d3, _ = self.run_one(pool)
        failure = self.failureResultOf(d3, PoolOverloaded)
        self.assertEqual(failure.value.http_status, 503)
        self.assertNoResult(d1)
        self.assertNoResult(d2)
        self.assertEqual(len(self.endpoint.connects), 1)

    def test_waiting_beyond_queue_timeout_with_a_healthy_pool(self) -> None:
        """A request that gets no connection within queue_timeout fails with QueueTimeout (503)."""
        pool = self.make_pool(size=1, connect_timeout=5.0, queue_timeout=10.0)
        d1, _ = self.run_one(pool)
        self.endpoint.last.succeed()
        d2, _ = self.run_one(pool)
        self.clock.advance(5)
        self.clock.advance(4.9)
        self.assertNoResult(d2)
        self.clock.advance(0.1)
        failure = self.failureResultOf(d2, QueueTimeout)
        self.assertEqual(failure.value.http_status, 503)
        self.assertEqual(pool.stats()["waiting"], 0)
        self.assertNoResult(d1)
        self.assertEqual(len(self.endpoint.connects), 1)

    # -- connecting ---------------------------------------------------------------------

    def test_refused_connects_are_retried_with_backoff_then_fail(self) -> None:
        """While a request waits, refused connects are retried at growing intervals; it fails with ConnectError after connect_timeout."""
        pool = self.make_pool(connect_timeout=5.0)
        self.endpoint.refusing = True
        d, _ = self.run_one(pool)
        self.run_until(4.99)
        self.assertNoResult(d)
        times = [round(c.at, 6) for c in self.endpoint.connects]
        # backoffPolicy(0.05, 0.5, 2.0): 0.1, 0.2, 0.4, then at most 0.5 between attempts.
        self.assertEqual(times, [0.0, 0.1, 0.3, 0.7, 1.2, 1.7, 2.2, 2.7, 3.2, 3.7, 4.2, 4.7])
        self.run_until(5.0)
        failure = self.failureResultOf(d, ConnectError)
        self.assertEqual(failure.value.http_status, 502)
        self.assertIn("refused", str(failure.value))
        self.assertEqual(pool.stats()["waiting"], 0)
        self.run_until(60.0)
        self.assertEqual(len(self.endpoint.connects), len(times))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connect_that_succeeds_after_refusals_serves_the_request_and_resets_failures(self) -> None:
        """The first successful connect ends the outage: the request runs and backoff starts over."""
        pool = self.make_pool()
        d, _ = self.run_one(pool)
        self.endpoint.last.refuse()
        self.clock.advance(0.1)
        self.endpoint.last.refuse()
        self.assertEqual(pool.stats()["failures"], 2)
        self.clock.advance(0.2)
        backend = self.endpoint.last.succeed()
        self.assertEqual(pool.stats()["failures"], 0)
        self.assertEqual(backend.script(), b"/a.php")
        backend.respond()
        self.assertEqual(self.successResultOf(d), 0)

        # A second outage backs off from the first step again.
        backend.close()
        self.run_one(pool)
        self.assertEqual(len(self.endpoint.connects), 4)
        self.endpoint.last.refuse()
        self.clock.advance(0.099)
        self.assertEqual(len(self.endpoint.connects), 4)
        self.clock.advance(0.001)
        self.assertEqual(len(self.endpoint.connects), 5)

    def test_hanging_connect_is_cancelled_after_connect_timeout_and_retried(self) -> None:
        """A connect with no answer is cancelled after connect_timeout, and a new attempt serves the requests still waiting."""
        pool = self.make_pool(size=1, connect_timeout=5.0, queue_timeout=30.0)
        d1, _ = self.run_one(pool, "/1.php")
        d1.addErrback(lambda f: f.trap(ConnectError))  # see the expected failure below
        first = self.endpoint.last
        self.clock.advance(3)
        d2, _ = self.run_one(pool, "/2.php")
        self.clock.advance(1.9)
        self.assertIs(first.cancelled, False)
        self.clock.advance(0.1)
        self.assertIs(first.cancelled, True)
        self.assertEqual(pool.stats()["failures"], 1)
        self.clock.advance(0.1)
        self.assertEqual([c.at for c in self.endpoint.connects], [0.0, 5.1])
        backend = self.endpoint.last.succeed()
        self.assertEqual(pool.stats()["failures"], 0)
        served = []
        while (name := backend.script()) is not None:
            served.append(name)
            backend.respond()
        self.assertEqual(served[-1], b"/2.php")
        self.assertEqual(self.successResultOf(d2), 0)

    def test_later_requests_fail_after_connect_timeout_once_connects_have_failed(self) -> None:
        """During an outage already seen, a new request fails with ConnectError after connect_timeout."""
        pool = self.make_pool(connect_timeout=5.0, queue_timeout=30.0)
        self.endpoint.refusing = True
        first, _ = self.run_one(pool)
        self.clock.advance(2)
        d, _ = self.run_one(pool)
        self.clock.advance(3)
        self.failureResultOf(first, ConnectError)
        self.clock.advance(1.75)
        self.assertNoResult(d)
        self.clock.advance(0.25)
        self.failureResultOf(d, ConnectError)

    def test_hanging_connect_fails_the_request_after_connect_timeout(self) -> None:
        """When the backend never answers a connect, the waiting request fails with ConnectError at connect_timeout."""
        pool = self.make_pool(connect_timeout=5.0, queue_timeout=30.0)
        d, _ = self.run_one(pool)
        self.clock.advance(5.0)
        self.failureResultOf(d, ConnectError)

    # -- idle connections ----------------------------------------------------------------

    def test_idle_connection_closed_by_the_backend_is_forgotten(self) -> None:
        """When php-fpm closes an idle connection, the next request connects anew."""
        pool = self.make_pool()
        backend = self.serve_one(pool)
        backend.close()
        self.assertEqual(pool.stats()["idle"], 0)
        d2, _ = self.run_one(pool, "/2.php")
        self.assertEqual(len(self.endpoint.connects), 2)
        self.assertEqual(backend.transport.value(), b"")
        second = self.endpoint.last.succeed()
        self.assertEqual(second.script(), b"/2.php")

    def test_idle_timeout_closes_idle_connections(self) -> None:
        """Each connection is closed idle_timeout seconds after it went idle."""
        pool = self.make_pool(size=2, idle_timeout=30.0)
        d1, _ = self.run_one(pool)
        d2, _ = self.run_one(pool)
        a = self.endpoint.connects[0].succeed()
        b = self.endpoint.connects[1].succeed()
        a.respond()
        self.clock.advance(10)
        b.respond()
        self.clock.advance(19.9)
        self.assertEqual((a.transport.disconnecting, b.transport.disconnecting), (False, False))
        self.clock.advance(0.1)
        self.assertEqual((a.transport.disconnecting, b.transport.disconnecting), (True, False))
        self.assertEqual(pool.stats()["idle"], 1)
        self.clock.advance(9.9)
        self.assertIs(b.transport.disconnecting, False)
        self.clock.advance(0.1)
        self.assertIs(b.transport.disconnecting, True)
        self.assertEqual(pool.stats()["idle"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reused_connection_is_not_closed_by_its_old_idle_time(self) -> None:
        """A connection that went back to work and idle again gets a full idle_timeout."""
        pool = self.make_pool(idle_timeout=30.0)
        d, _ = self.run_one(pool)
        backend = self.endpoint.last.succeed()
        backend.respond()
        self.clock.advance(20)
        self.run_one(pool)
        backend.received()
        backend.respond()
        self.clock.advance(10)
        self.assertIs(backend.transport.disconnecting, False)
        self.clock.advance(20)
        self.assertIs(backend.transport.disconnecting, True)

    def test_idle_connection_the_kernel_knows_closed_is_not_used(self) -> None:
        """An idle connection whose end of file waits unread in the socket is closed, not written to; the request connects anew."""
        pool = self.make_pool()
        backend = self.serve_one(pool)
        backend.received()
        backend.hang_up_unseen()
        self.run_one(pool, "/2.php", b"POST")
        self.assertEqual(backend.transport.value(), b"")
        self.assertIs(backend.transport.disconnecting, True)
        self.assertEqual(len(self.endpoint.connects), 2)
        self.assertEqual(self.endpoint.last.succeed().script(), b"/2.php")

    def test_connection_the_kernel_knows_closed_is_not_handed_to_a_waiter(self) -> None:
        """A connection whose end of file arrived with its END_REQUEST goes to no waiting request; a new connect serves it."""
        pool = self.make_pool(size=1)
        d1, _ = self.run_one(pool, "/1.php")
        backend = self.endpoint.last.succeed()
        backend.received()
        d2, _ = self.run_one(pool, "/2.php", b"POST")
        backend.hang_up_unseen()
        backend.respond()
        self.successResultOf(d1)
        self.assertEqual(backend.received(), [])
        self.assertEqual(len(self.endpoint.connects), 2)
        second = self.endpoint.last.succeed()
        self.assertEqual(second.script(), b"/2.php")
        second.respond()
        self.successResultOf(d2)

    # -- retry ---------------------------------------------------------------------------------

    def test_request_on_a_kept_connection_closed_before_any_output_is_retried_once(self) -> None:
        """php-fpm closing a kept connection under an idempotent request: it runs again on a new connection, body rewound."""
        pool = self.make_pool()
        first = self.serve_one(pool)
        first.received()

        body = io.BytesIO(b"skip:" + b"payload" * 10)
        body.seek(5)
        sink = RecordingSink()
        d = pool.request(params("/put.php", b"PUT"), body, sink)
        sent = first.received()
        first.close()
        self.assertNoResult(d)
        self.assertEqual(len(self.endpoint.connects), 2)

        second = self.endpoint.last.succeed()
        resent = second.received()
        self.assertEqual(resent, sent)
        self.assertEqual(
            [e for e in resent if isinstance(e, Stdin)],
            [Stdin(1, b"payload" * 10), Stdin(1, b"", end=True)],
        )
        second.respond(b"done")
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(sink.stdout, b"Content-Type: text/plain\r\n\r\ndone")
        self.assertEqual(sink.started, 1)

    def test_a_request_sent_again_takes_a_new_connection_in_the_failed_ones_place(self) -> None:
        """The resend goes on a new connection made for it, not on another kept one (php-fpm may be closing that too), and the pool stays in size."""
        pool = self.make_pool(size=2)
        firsts = [self.run_one(pool, f"/{i}.php")[0] for i in range(2)]
        backends = [c.succeed() for c in self.endpoint.connects]
        for backend in backends:
            backend.respond()
        for d in firsts:
            self.successResultOf(d)
        for backend in backends:
            backend.received()
        d, _ = self.run_one(pool, "/again.php")
        used, other = (backends[1], backends[0]) if backends[1].script() == b"/again.php" else (backends[0], backends[1])
        used.close()
        self.assertEqual(len(self.endpoint.connects), 3)
        self.assertEqual(other.received(), [])
        stats = pool.stats()
        self.assertEqual((stats["idle"], stats["connecting"]), (1, 1))
        fresh = self.endpoint.last.succeed()
        self.assertEqual(fresh.script(), b"/again.php")
        fresh.respond()
        self.assertEqual(self.successResultOf(d), 0)

    def test_post_on_a_kept_connection_closed_before_any_output_is_not_sent_again(self) -> None:
        """A POST whose kept connection closes before any output fails with BackendClosed: PHP may have run it."""
        pool = self.make_pool()
        first = self.serve_one(pool)
        d, _ = self.run_one(pool, "/post.php", b"POST")
        first.close()
        failure = self.failureResultOf(d, BackendClosed)
        self.assertEqual((failure.value.response_started, failure.value.never_ran), (False, False))
        self.assertEqual(len(self.endpoint.connects), 1)

    def test_post_php_fpm_threw_away_unread_is_sent_again(self) -> None:
        """A POST on a kept connection that php-fpm closed while still reading (its pm.max_requests close) goes out once more."""
        pool = self.make_pool()
        first = self.serve_one(pool)
        first.received()
        d, _ = self.run_one(pool, "/post.php", b"POST")
        sent = first.received()
        first.drain_and_close()
        self.assertNoResult(d)
        second = self.endpoint.last.succeed()
        self.assertEqual(second.received(), sent)
        second.respond(b"once")
        self.assertEqual(self.successResultOf(d), 0)

    def test_retry_happens_only_once(self) -> None:
        """If the retried request's new connection closes too, the request fails with BackendClosed."""
        pool = self.make_pool()
        first = self.serve_one(pool)
        d, _ = self.run_one(pool)
        first.close()
        second = self.endpoint.last.succeed()
        second.respond()
        self.successResultOf(d)
        d3, _ = self.run_one(pool)
        second.close()
        third = self.endpoint.last.succeed()
        third.close()
        failure = self.failureResultOf(d3, BackendClosed)
        self.assertIs(failure.value.response_started, False)
        self.assertEqual(len(self.endpoint.connects), 3)

    def test_not_retried_once_response_bytes_arrived(self) -> None:
        """A kept connection that closes after some output fails the request; nothing is sent twice."""
        pool = self.make_pool()
        first = self.serve_one(pool)
        d, sink = self.run_one(pool)
        first.send_output(b"Status: 200\r\n\r\nhalf")
        first.close()
        failure = self.failureResultOf(d, BackendClosed)
        self.assertIs(failure.value.response_started, True)
        self.assertEqual(len(self.endpoint.connects), 1)

    def test_not_retried_on_a_new_connection(self) -> None:
        """A fresh connection that closes before any output is not retried: the backend itself is failing."""
        pool = self.make_pool()
        d, _ = self.run_one(pool)
        self.endpoint.last.succeed().close()
        failure = self.failureResultOf(d, BackendClosed)
        self.assertIs(failure.value.response_started, False)
        self.assertEqual(len(self.endpoint.connects), 1)

    def test_unseekable_body_is_not_retried(self) -> None:
        """A file body whose position cannot be told cannot be rewound, so the request is not retried."""

        class Pipe(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                return 0

            def tell(self) -> int:
                raise OSError("not seekable")

        pool = self.make_pool()
        first = self.serve_one(pool)
        d = pool.request(params("/p.php"), Pipe(), RecordingSink())  # type: ignore[arg-type]
        first.close()
        self.failureResultOf(d, BackendClosed)
        self.assertEqual(len(self.endpoint.connects), 1)

    # -- cancellation -------------------------------------------------------------------------

    def test_cancel_while_waiting_removes_the_waiter(self) -> None:
        """A cancelled waiting request leaves the queue, and the connection it would have had goes idle."""
        pool = self.make_pool(size=1)
        d1, _ = self.run_one(pool, "/1.php")
        backend = self.endpoint.last.succeed()
        backend.received()
        d2, _ = self.run_one(pool, "/2.php")
        self.assertEqual(pool.stats()["waiting"], 1)
        d2.cancel()
        self.failureResultOf(d2, CancelledError)
        self.assertEqual(pool.stats()["waiting"], 0)
        backend.respond()
        self.successResultOf(d1)
        self.assertEqual(backend.transport.value(), b"")
        self.assertEqual(pool.stats(), {"idle": 1, "busy": 0, "draining": 0, "connecting": 0, "waiting": 0, "failures": 0})

    def test_cancelled_request_keeps_its_connection_until_php_ends_it(self) -> None:
        """A cancelled running request fails at once, but its connection stays draining: the next request waits for it, no new connect."""
        pool = self.make_pool(size=1)
        d, sink = self.run_one(pool)
        backend = self.endpoint.last.succeed()
        self.assertEqual([type(e) for e in backend.received()], [BeginRequest, Params, Stdin])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(backend.received(), [])
        self.assertIs(backend.transport.disconnecting, False)
        self.assertEqual(pool.stats(), {"idle": 0, "busy": 0, "draining": 1, "connecting": 0, "waiting": 0, "failures": 0})
        d2, sink2 = self.run_one(pool, "/2.php")
        self.assertEqual(len(self.endpoint.connects), 1)
        self.assertEqual(pool.stats()["waiting"], 1)
        backend.send_output(b"Status: 200\r\n\r\nfor nobody")
        backend.end()
        self.assertEqual(sink.stdout, b"")
        self.assertEqual(backend.script(), b"/2.php")
        backend.respond(b"two")
        self.assertEqual(self.successResultOf(d2), 0)
        self.assertEqual(sink2.stdout, b"Content-Type: text/plain\r\n\r\ntwo")
        self.assertEqual(pool.stats()["draining"], 0)

    def test_send_calls_on_done_once_with_the_app_status(self) -> None:
        """send gives its outcome once to on_done: the app status, or CancelledError for a waiting one cancelled."""
        pool = self.make_pool(size=1)
        outcomes: list[Any] = []
        handle = pool.send(params("/1.php"), b"", RecordingSink(), outcomes.append)
        backend = self.endpoint.last.succeed()
        self.assertEqual(backend.script(), b"/1.php")
        backend.respond(app_status=7)
        self.assertEqual(outcomes, [7])
        handle.cancel()  # after the end: nothing more
        self.assertEqual(outcomes, [7])
        backend.received()
        running = pool.send(params("/2.php"), b"", RecordingSink(), outcomes.append)
        waiting = pool.send(params("/3.php"), b"", RecordingSink(), outcomes.append)
        self.assertEqual(pool.stats()["waiting"], 1)
        waiting.cancel()
        self.assertEqual(len(outcomes), 2)
        outcomes.pop().trap(CancelledError)
        self.assertEqual(pool.stats()["waiting"], 0)
        backend.respond()
        self.assertEqual(outcomes, [7, 0])
        self.assertIs(running.settled, True)

    def test_send_cancelled_while_running_fails_at_once_and_drains(self) -> None:
        """A cancelled running send fails with CancelledError at once and its connection drains until PHP ends the script."""
        pool = self.make_pool(size=1)
        outcomes: list[Any] = []
        sink = RecordingSink()
        handle = pool.send(params("/a.php"), b"", sink, outcomes.append)
        backend = self.endpoint.last.succeed()
        self.assertEqual([type(e) for e in backend.received()], [BeginRequest, Params, Stdin])
        handle.cancel()
        self.assertEqual(len(outcomes), 1)
        outcomes[0].trap(CancelledError)
        self.assertEqual(pool.stats(), {"idle": 0, "busy": 0, "draining": 1, "connecting": 0, "waiting": 0, "failures": 0})
        backend.send_output(b"Status: 200\r\n\r\nfor nobody")
        backend.end()
        self.assertEqual((sink.stdout, len(outcomes)), (b"", 1))
        self.assertEqual(pool.stats(), {"idle": 1, "busy": 0, "draining": 0, "connecting": 0, "waiting": 0, "failures": 0})

    def test_draining_connection_that_closes_frees_its_place(self) -> None:
        """A draining connection the backend closes is forgotten, and a waiting request connects anew."""
        pool = self.make_pool(size=1)
        d, _ = self.run_one(pool)
        backend = self.endpoint.last.succeed()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        d2, _ = self.run_one(pool, "/2.php")
        self.assertEqual(len(self.endpoint.connects), 1)
        backend.close()
        self.assertEqual(pool.stats()["draining"], 0)
        self.assertEqual(len(self.endpoint.connects), 2)
        second = self.endpoint.last.succeed()
        self.assertEqual(second.script(), b"/2.php")

    # -- shutting down --------------------------------------------------------------------------

    def test_close_fails_waiters_and_fires_when_busy_connections_finish(self) -> None:
        """close() fails waiting requests, lets running ones finish, then closes their connections and fires."""
        pool = self.make_pool(size=1)
        d1, _ = self.run_one(pool)
        backend = self.endpoint.last.succeed()
        d2, _ = self.run_one(pool)
        closing = pool.close()
        self.failureResultOf(d2, ConnectError)
        self.assertNoResult(closing)
        self.assertIs(backend.transport.disconnecting, False)
        backend.respond()
        self.assertEqual(self.successResultOf(d1), 0)
        self.assertIs(backend.transport.disconnecting, True)
        self.assertIsNone(self.successResultOf(closing))
        self.failureResultOf(self.run_one(pool)[0], ConnectError)
        self.assertEqual(len(self.endpoint.connects), 1)

    def test_close_closes_draining_connections(self) -> None:
        """close() drops draining connections (nobody waits for their output) and fires."""
        pool = self.make_pool()
        d, _ = self.run_one(pool)
        backend = self.endpoint.last.succeed()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        closing = pool.close()
        self.assertIs(backend.transport.disconnecting, True)
        self.assertIsNone(self.successResultOf(closing))

    def test_close_closes_idle_connections_at_once(self) -> None:
        """close() with only idle connections closes them and fires at once."""
        pool = self.make_pool(size=2, idle_timeout=30.0)
        ds = [self.run_one(pool)[0] for _ in range(2)]
        backends = [c.succeed() for c in self.endpoint.connects]
        for backend in backends:
            backend.respond()
        closing = pool.close()
        self.assertIsNone(self.successResultOf(closing))
        self.assertEqual([b.transport.disconnecting for b in backends], [True, True])
        self.assertEqual(pool.stats()["idle"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for d in ds:
            self.successResultOf(d)

    def test_close_while_connecting_drops_the_new_connection(self) -> None:
        """A connect that completes after close() is closed straight away."""
        pool = self.make_pool()
        d, _ = self.run_one(pool)
        pool.close()
        self.failureResultOf(d, ConnectError)
        backend = self.endpoint.last.succeed()
        self.assertIs(backend.transport.disconnecting, True)
        self.assertEqual(backend.transport.value(), b"")

    # -- try_request: a balancer's entry -------------------------------------------------------

    def test_try_request_takes_an_idle_connection_or_connects_within_size_else_says_none(self) -> None:
        """try_request runs at once on an idle connection or a new one while there is room, and answers None when all are busy."""
        pool = self.make_pool(size=2)
        d1 = pool.try_request(params("/1.php"), b"", RecordingSink())
        d2 = pool.try_request(params("/2.php"), b"", RecordingSink())
        assert d1 is not None and d2 is not None
        self.assertEqual(len(self.endpoint.connects), 2)
        self.assertIs(pool.has_room(), False)
        self.assertIsNone(pool.try_request(params("/3.php"), b"", RecordingSink()))
        self.assertEqual(pool.stats()["waiting"], 0)
        a = self.endpoint.connects[0].succeed()
        self.endpoint.connects[1].succeed()
        self.assertEqual(a.script(), b"/1.php")
        a.respond()
        self.successResultOf(d1)
        self.assertIs(pool.has_room(), True)
        d3 = pool.try_request(params("/3.php"), b"", RecordingSink())
        assert d3 is not None
        self.assertEqual(a.script(), b"/3.php")
        self.assertEqual(len(self.endpoint.connects), 2)

    def test_try_request_fails_at_once_on_a_refused_connect_with_no_retry(self) -> None:
        """A refused connect fails try_request's request with ConnectError at once; nothing is scheduled to connect again."""
        pool = self.make_pool()
        self.endpoint.refusing = True
        d = pool.try_request(params("/a.php"), b"", RecordingSink())
        assert d is not None
        failure = self.failureResultOf(d, ConnectError)
        self.assertIn("refused", str(failure.value))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.endpoint.connects), 1)
        self.assertEqual(pool.stats(), {"idle": 0, "busy": 0, "draining": 0, "connecting": 0, "waiting": 0, "failures": 1})

    def test_try_request_connect_that_hangs_fails_after_connect_timeout(self) -> None:
        """A connect with no answer fails try_request's request with ConnectError after connect_timeout, not queue_timeout."""
        pool = self.make_pool(connect_timeout=2.0, queue_timeout=30.0)
        d = pool.try_request(params("/a.php"), b"", RecordingSink())
        assert d is not None
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, ConnectError)
        self.assertIs(self.endpoint.last.cancelled, True)

    def test_on_capacity_follows_each_freed_connection(self) -> None:
        """on_capacity is called when a request ends, when a connection closes and when a connect fails."""
        calls: list[bool] = []
        pool = self.make_pool(size=1)
        pool.on_capacity = lambda: calls.append(pool.has_room())
        d = pool.try_request(params("/a.php"), b"", RecordingSink())
        backend = self.endpoint.last.succeed()
        self.assertEqual(calls, [])
        backend.respond()
        self.successResultOf(d)
        self.assertEqual(calls, [True])
        backend.close()
        self.assertEqual(calls, [True, True])
        self.endpoint.refusing = True
        self.failureResultOf(pool.try_request(params("/b.php"), b"", RecordingSink()), ConnectError)  # type: ignore[arg-type]
        self.assertEqual(calls, [True, True, True])

    def test_stale_connection_retry_keeps_try_request_within_size(self) -> None:
        """A resend after php-fpm threw a request away unread takes the place its connection left before on_capacity is told, so size 1 stays one connection."""
        pool = self.make_pool(size=1)
        d1 = pool.try_request(params("/1.php"), b"", RecordingSink())
        first = self.endpoint.last.succeed()
        first.respond()
        self.successResultOf(d1)  # type: ignore[arg-type]
        d2 = pool.try_request(params("/2.php"), b"", RecordingSink())
        assert d2 is not None
        taken: list[object] = []
        pool.on_capacity = lambda: taken.append(pool.try_request(params("/other.php"), b"", RecordingSink()))
        first.drain_and_close()  # pm.max_requests: never ran
        self.assertEqual(taken, [None, None])  # told twice (the end of the request, the closed connection), room neither time
        self.assertEqual(len(self.endpoint.connects), 2)
        second = self.endpoint.last.succeed()
        self.assertEqual(second.script(), b"/2.php")
        self.assertNoResult(d2)

    def test_try_request_leaves_a_resend_on_a_stale_connection_to_its_caller(self) -> None:
        """A GET whose kept connection closes under it fails try_request with BackendClosed marked resendable, and nothing connects again; a POST is not resendable."""
        pool = self.make_pool(size=1)
        d1 = pool.try_request(params("/1.php"), b"", RecordingSink())
        first = self.endpoint.last.succeed()
        first.respond()
        self.successResultOf(d1)  # type: ignore[arg-type]
        get = pool.try_request(params("/2.php"), b"", RecordingSink())
        first.close()
        error = self.failureResultOf(get, BackendClosed).value  # type: ignore[arg-type]
        self.assertEqual((error.resendable, error.never_ran, len(self.endpoint.connects)), (True, False, 1))
        d3 = pool.try_request(params("/3.php"), b"", RecordingSink())
        again = self.endpoint.last.succeed()
        again.respond()
        self.successResultOf(d3)  # type: ignore[arg-type]
        post = pool.try_request(params("/4.php", b"POST"), b"", RecordingSink())
        again.close()
        self.assertIs(self.failureResultOf(post, BackendClosed).value.resendable, False)  # type: ignore[arg-type]

    def test_drop_idle_closes_idle_connections_only(self) -> None:
        """drop_idle closes idle connections and leaves busy ones running."""
        pool = self.make_pool(size=2)
        d1, _ = self.run_one(pool)
        d2, _ = self.run_one(pool)
        a = self.endpoint.connects[0].succeed()
        b = self.endpoint.connects[1].succeed()
        a.respond()
        self.successResultOf(d1)
        pool.drop_idle()
        self.assertIs(a.transport.disconnecting, True)
        self.assertIs(b.transport.disconnecting, False)
        self.assertEqual(pool.stats()["idle"], 0)
        b.respond()
        self.successResultOf(d2)

    # -- probe ------------------------------------------------------------------------------------

    def test_probe_asks_get_values_on_a_connection_of_its_own(self) -> None:
        """probe() connects separately, sends GET_VALUES for the three spec names, and closes after the answer."""
        pool = self.make_pool()
        pooled = self.serve_one(pool)
        pooled.received()

        probing = pool.probe()
        self.assertEqual(len(self.endpoint.connects), 2)
        backend = self.endpoint.last.succeed()
        self.assertEqual(
            backend.received(),
            [GetValues((b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"))],
        )
        backend.proto.dataReceived(backend.server.get_values_result({b"FCGI_MPXS_CONNS": b"0"}))
        self.assertEqual(self.successResultOf(probing), {b"FCGI_MPXS_CONNS": b"0"})
        self.assertIs(backend.transport.disconnecting, True)
        self.assertEqual(pooled.transport.value(), b"")
        self.assertEqual(pool.stats()["idle"], 1)

    def test_probe_times_out_when_the_backend_does_not_answer(self) -> None:
        """A probe with no GET_VALUES_RESULT within connect_timeout fails and closes its connection."""
        pool = self.make_pool(connect_timeout=5.0)
        probing = pool.probe()
        backend = self.endpoint.last.succeed()
        self.clock.advance(5)
        self.failureResultOf(probing)
        self.assertIs(backend.transport.disconnecting, True)


@pytest.mark.parametrize(
    ("error", "reused", "retried", "unread", "rewindable", "idempotent", "expected"),
    [
        (BackendClosed("closed"), True, False, 0, True, True, True),
        (BackendClosed("closed"), True, False, 0, True, False, False),
        (BackendClosed("closed"), False, False, 0, True, True, False),
        (BackendClosed("closed"), True, True, 0, True, True, False),
        (BackendClosed("closed"), True, False, 0, False, True, False),
        (BackendClosed("closed", response_started=True), True, False, 0, True, True, False),
        (ConnectError("refused"), True, False, 0, True, True, False),
        (BackendClosed("closed", never_ran=True), True, False, 0, True, False, True),
        (BackendClosed("closed", never_ran=True), False, False, 0, True, False, True),
        (BackendClosed("closed", never_ran=True), True, True, MAX_UNREAD_RESENDS - 1, True, False, True),
        (BackendClosed("closed", never_ran=True), True, False, MAX_UNREAD_RESENDS, True, True, False),
        (BackendClosed("closed", never_ran=True), True, False, 0, False, False, False),
    ],
    ids=[
        "idempotent-on-kept-connection",
        "post-on-kept-connection",
        "idempotent-on-fresh-connection",
        "already-retried",
        "body-not-rewindable",
        "response-started",
        "not-a-close",
        "post-thrown-away-unread",
        "thrown-away-unread-on-fresh-connection",
        "thrown-away-unread-after-a-retry",
        "thrown-away-unread-too-often",
        "thrown-away-unread-but-body-not-rewindable",
    ],
)
def test_should_retry(
    error: Exception, reused: bool, retried: bool, unread: int, rewindable: bool, idempotent: bool, expected: bool
) -> None:
    """A request closed on before any response byte goes again only if PHP never had it, or once if it is idempotent; always rewindable."""
    assert (
        should_retry(error, reused=reused, retried=retried, unread=unread, rewindable=rewindable, idempotent=idempotent)
        is expected
    )


class FiguresAndDrainTests(PoolTestCase):
    """What the admin side reads from a pool, and the graceful drain of a reload's old pool."""

    def test_figures_count_waits_failures_and_aborts(self) -> None:
        """A waited-for connection's wait, an immediate reuse, a failed connect, a cancelled request and the errors' statuses are counted."""
        pool = self.make_pool(size=1)
        d1, _ = self.run_one(pool)
        self.clock.advance(0.02)
        backend = self.endpoint.last.succeed()
        backend.respond(b"one", app_status=0)
        self.successResultOf(d1)
        d2, _ = self.run_one(pool)  # the idle connection, at once
        self.assertEqual(len(self.endpoint.connects), 1)
        backend.respond(b"two", app_status=0)
        self.successResultOf(d2)
        d3, _ = self.run_one(pool)
        d3.cancel()
        self.failureResultOf(d3, CancelledError)
        figures = pool.figures()
        self.assertEqual((figures["immediate"], figures["aborts"]), (2, 1))
        self.assertEqual(sum(figures["queue_wait"]["counts"]), 1)
        self.assertAlmostEqual(figures["queue_wait"]["sum"], 0.02)
        self.assertEqual((figures["size"], figures["busy"], figures["waiting"]), (1, 0, 0))

    def test_a_failed_connect_counts_and_its_502(self) -> None:
        """A refused connect is a connect failure, and the request it fails a 502."""
        pool = self.make_pool(size=1, connect_timeout=1.0)
        d, _ = self.run_one(pool)
        self.endpoint.last.refuse()
        self.run_until(2.0)
        self.failureResultOf(d, ConnectError)
        figures = pool.figures()
        self.assertGreaterEqual(figures["connects_failed"], 1)
        self.assertEqual(figures["errors"], {"502": 1, "503": 0, "504": 0})

    def test_drain_lets_waiting_requests_finish_then_closes(self) -> None:
        """A drained pool still serves the request in flight and the one waiting behind it, then fires."""
        pool = self.make_pool(size=1)
        d1, _ = self.run_one(pool, "/1.php")
        backend = self.endpoint.last.succeed()
        self.assertEqual(backend.script(), b"/1.php")
        d2, _ = self.run_one(pool, "/2.php")
        drained = pool.drain()
        self.assertNoResult(drained)
        backend.respond(b"one", app_status=0)
        self.successResultOf(d1)
        self.assertNoResult(drained)
        self.assertEqual(backend.script(), b"/2.php")
        backend.respond(b"two", app_status=0)
        self.successResultOf(d2)
        self.successResultOf(drained)
