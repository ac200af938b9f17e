"""The Balancer on a Clock, over one FakeEndpoint per backend whose connects the test fires by hand."""

from __future__ import annotations

import io
import json
from typing import Any, Optional

import pytest
from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from fephp.backend.balancer import (
    DOWN_FIRST,
    DOWN_MAX,
    BackendConfig,
    Balancer,
    HashRing,
    MemberState,
    backend_token,
    cookie_value,
    session_cookie_set,
    should_fail_over,
    takes_out_of_service,
)
from fephp.backend.errors import (
    BackendClosed,
    BackendProtocolError,
    ConnectError,
    PoolOverloaded,
    QueueTimeout,
    RequestRejected,
    ResponseTimeout,
)
from fephp.backend.pool import FastCGIPool
from fephp.fastcgi import GetValues, Params
from fephp.testing import FakeEndpoint, FakeFastCGIServer, RecordingSink


def params(name: str, cookie: Optional[str] = None) -> list[tuple[bytes, bytes]]:
    found = [(b"SCRIPT_NAME", name.encode()), (b"REQUEST_METHOD", b"GET")]
    if cookie is not None:
        found.append((b"HTTP_COOKIE", cookie.encode()))
    return found


class BalancerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoints: dict[str, FakeEndpoint] = {}

    def make(self, *backends: BackendConfig, **kwargs: Any) -> Balancer:
        for backend in backends:
            self.endpoints.setdefault(backend.address, FakeEndpoint(self.clock))
        response_timeout = kwargs.pop("response_timeout", None)

        def make_pool(backend: BackendConfig) -> FastCGIPool:
            endpoint = self.endpoints.setdefault(backend.address, FakeEndpoint(self.clock))
            return FastCGIPool(
                endpoint, clock=self.clock, size=backend.pool_size, connect_timeout=5.0,
                response_timeout=response_timeout, idle_timeout=None, name=backend.address,
            )

        kwargs.setdefault("connect_timeout", 5.0)
        kwargs.setdefault("queue_timeout", 10.0)
        return Balancer(list(backends), make_pool, clock=self.clock, **kwargs)

    def run_one(self, balancer: Balancer, name: str = "/a.php", cookie: Optional[str] = None, body: Any = b"") -> "Deferred[int]":
        return balancer.request(params(name, cookie), body, RecordingSink())

    def connects(self, address: str) -> int:
        return len(self.endpoints[address].connects)

    def serve(self, address: str, index: int = -1) -> FakeFastCGIServer:
        """Let connect *index* to *address* succeed: its fake php-fpm end."""
        return self.endpoints[address].connects[index].succeed()

    # -- balancing ---------------------------------------------------------------------------

    def test_requests_go_to_the_backend_with_the_fewest_outstanding(self) -> None:
        """With equal weights, requests alternate between two idle backends and go where fewer are outstanding."""
        balancer = self.make(BackendConfig("a", pool_size=4), BackendConfig("b", pool_size=4))
        for i in range(4):
            self.run_one(balancer, f"/{i}.php")
        self.assertEqual((self.connects("a"), self.connects("b")), (2, 2))
        a = self.serve("a", 0)
        a.respond()
        a.received()
        self.run_one(balancer, "/next.php")
        self.assertEqual(a.script(), b"/next.php")  # a has 1 outstanding, b 2
        self.assertEqual(self.connects("b"), 2)

    def test_weights_share_outstanding_requests(self) -> None:
        """With weights 1 and 2, six requests in flight are two on the first backend and four on the second."""
        balancer = self.make(BackendConfig("a", weight=1, pool_size=8), BackendConfig("b", weight=2, pool_size=8))
        for i in range(6):
            self.run_one(balancer, f"/{i}.php")
        self.assertEqual((self.connects("a"), self.connects("b")), (2, 4))
        stats = balancer.stats()["backends"]
        self.assertEqual((stats["a"]["outstanding"], stats["b"]["outstanding"]), (2, 4))

    def test_one_queue_for_all_backends(self) -> None:
        """With every connection busy, a waiting request takes the first connection freed on any backend."""
        balancer = self.make(BackendConfig("a", pool_size=1), BackendConfig("b", pool_size=1))
        d1, d2 = self.run_one(balancer, "/1.php"), self.run_one(balancer, "/2.php")
        a, b = self.serve("a"), self.serve("b")
        a.received()
        b.received()
        d3 = self.run_one(balancer, "/3.php")
        self.assertEqual(balancer.stats()["waiting"], 1)
        self.assertEqual((self.connects("a"), self.connects("b")), (1, 1))
        b.respond()
        self.successResultOf(d2)
        self.assertEqual(b.script(), b"/3.php")
        self.assertEqual(balancer.stats()["waiting"], 0)
        b.respond()
        self.successResultOf(d3)
        self.assertNoResult(d1)

    def test_full_queue_refuses_and_a_long_wait_times_out(self) -> None:
        """Beyond queue_size waiting requests, 503 PoolOverloaded at once; a request waiting queue_timeout gets 503 QueueTimeout."""
        balancer = self.make(BackendConfig("a", pool_size=1), queue_size=1, queue_timeout=10.0)
        self.run_one(balancer)
        self.serve("a")
        waiting = self.run_one(balancer)
        self.assertEqual(self.failureResultOf(self.run_one(balancer), PoolOverloaded).value.http_status, 503)
        self.clock.advance(9.9)
        self.assertNoResult(waiting)
        self.clock.advance(0.1)
        self.assertEqual(self.failureResultOf(waiting, QueueTimeout).value.http_status, 503)

    def test_cancelled_waiting_request_leaves_the_queue(self) -> None:
        """A client that goes away while its request waits takes it out of the queue, and the next one gets the connection."""
        balancer = self.make(BackendConfig("a", pool_size=1))
        d1 = self.run_one(balancer, "/1.php")
        a = self.serve("a")
        a.received()
        gone = self.run_one(balancer, "/gone.php")
        d3 = self.run_one(balancer, "/3.php")
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        a.respond()
        self.successResultOf(d1)
        self.assertEqual(a.script(), b"/3.php")
        self.assertNoResult(d3)

    # -- failover ----------------------------------------------------------------------------------

    def test_refused_connect_fails_over_once_and_takes_the_backend_out(self) -> None:
        """A refused connect sends the request to the other backend; later requests skip the refused one until its check."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        self.endpoints["a"].refusing = True
        results = [self.run_one(balancer, f"/{i}.php") for i in range(3)]
        self.assertEqual(self.connects("a"), 1)
        self.assertEqual(self.connects("b"), 3)
        for i, d in enumerate(results):
            self.serve("b", i).respond()
            self.assertEqual(self.successResultOf(d), 0)
        stats = balancer.stats()["backends"]["a"]
        self.assertEqual((stats["state"], stats["taken_out"], stats["failed_over"]), ("down", 1, 1))

    def test_failover_happens_once(self) -> None:
        """When the second backend refuses too, the request fails with 502 ConnectError."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        self.endpoints["a"].refusing = True
        self.endpoints["b"].refusing = True
        failure = self.failureResultOf(self.run_one(balancer), ConnectError)
        self.assertEqual(failure.value.http_status, 502)
        self.assertEqual((self.connects("a"), self.connects("b")), (1, 1))

    def test_failover_rewinds_a_file_body(self) -> None:
        """A file body failed over is sent whole to the second backend, from where it started."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        self.endpoints["a"].refusing = True
        body = io.BytesIO(b"skip:payload")
        body.seek(5)
        d = self.run_one(balancer, "/post.php", body=body)
        b = self.serve("b")
        stdin = b"".join(e.data for e in b.received() if type(e).__name__ == "Stdin")
        self.assertEqual(stdin, b"payload")
        b.respond()
        self.successResultOf(d)

    def test_a_request_php_may_have_started_is_never_sent_again(self) -> None:
        """A request whose connection closes after it was sent on a new connection, or that times out, fails and is not sent elsewhere."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"), response_timeout=3.0)
        d1 = self.run_one(balancer, "/1.php")
        d2 = self.run_one(balancer, "/2.php")
        a, b = self.serve("a"), self.serve("b")
        a.received()
        a.close()  # php-fpm's child died under the request
        self.assertEqual(self.failureResultOf(d1, BackendClosed).value.http_status, 502)
        self.clock.advance(3)
        self.assertEqual(self.failureResultOf(d2, ResponseTimeout).value.http_status, 504)
        self.assertEqual((self.connects("a"), self.connects("b")), (1, 1))
        stats = balancer.stats()["backends"]
        self.assertEqual((stats["a"]["state"], stats["b"]["state"]), ("up", "down"))  # the silent one is out

    def test_a_get_whose_kept_connection_dies_goes_to_another_backend(self) -> None:
        """A GET on a kept connection that closes before any output is sent once more, to the other backend, and answered."""
        balancer = self.make(BackendConfig("a", weight=2), BackendConfig("b"))  # a while both are idle
        d1 = self.run_one(balancer, "/1.php")
        a = self.serve("a")
        a.respond()
        self.successResultOf(d1)
        a.received()
        d2 = self.run_one(balancer, "/2.php")  # on a's kept connection
        self.assertEqual(a.script(), b"/2.php")
        a.close()
        self.assertEqual(self.connects("a"), 1)  # not to a again
        b = self.serve("b")
        self.assertEqual(b.script(), b"/2.php")
        b.respond()
        self.successResultOf(d2)
        self.assertEqual(balancer.stats()["backends"]["a"]["failed_over"], 1)

    def test_a_post_whose_kept_connection_dies_is_not_sent_again(self) -> None:
        """A POST on a kept connection that closes before any output fails with 502: PHP may have run it."""
        balancer = self.make(BackendConfig("a", weight=2), BackendConfig("b"))  # a while both are idle
        d1 = self.run_one(balancer, "/1.php")
        a = self.serve("a")
        a.respond()
        self.successResultOf(d1)
        d2 = balancer.request([(b"SCRIPT_NAME", b"/pay.php"), (b"REQUEST_METHOD", b"POST")], b"x", RecordingSink())
        a.close()
        self.failureResultOf(d2, BackendClosed)
        self.assertEqual((self.connects("a"), self.connects("b")), (1, 0))

    def test_a_hung_backend_holds_up_only_its_own_requests(self) -> None:
        """While one backend's request hangs, every new request goes to the other and is answered."""
        balancer = self.make(BackendConfig("a", pool_size=2), BackendConfig("b", pool_size=2), response_timeout=30.0)
        hung = self.run_one(balancer, "/hung.php")
        self.serve("a").received()
        first = self.run_one(balancer, "/0.php")
        b = self.serve("b")
        b.respond()
        b.received()
        self.successResultOf(first)
        for i in range(1, 6):
            d = self.run_one(balancer, f"/{i}.php")
            self.assertEqual(b.script(), f"/{i}.php".encode())
            b.respond()
            b.received()
            self.successResultOf(d)
        self.assertEqual((self.connects("a"), self.connects("b")), (1, 1))
        self.assertNoResult(hung)

    # -- health -----------------------------------------------------------------------------------

    def test_backend_out_of_service_is_checked_after_the_backoff_and_comes_back(self) -> None:
        """A refused backend gets one GET_VALUES check after DOWN_FIRST, another after twice that, and takes requests once one passes."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        self.endpoints["a"].refusing = True
        d = self.run_one(balancer)
        self.serve("b").respond()
        self.successResultOf(d)
        self.clock.advance(DOWN_FIRST)
        self.assertEqual(self.connects("a"), 2)  # the check
        self.clock.advance(DOWN_FIRST * 2 - 0.01)
        self.assertEqual(self.connects("a"), 2)
        self.endpoints["a"].refusing = False
        self.clock.advance(0.01)
        self.assertEqual(self.connects("a"), 3)
        checked = self.serve("a")
        self.assertEqual(checked.received(), [GetValues((b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"))])
        self.assertEqual(balancer.stats()["backends"]["a"]["state"], "checking")
        checked.proto.dataReceived(checked.server.get_values_result({b"FCGI_MPXS_CONNS": b"0"}))
        self.assertEqual(balancer.stats()["backends"]["a"]["state"], "up")
        self.run_one(balancer, "/x.php")
        self.run_one(balancer, "/y.php")
        self.assertEqual(self.connects("a"), 4)

    def test_protocol_error_takes_the_backend_out(self) -> None:
        """A backend that answers something that is not FastCGI fails that request with 502 and is taken out."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        d = self.run_one(balancer)
        a = self.serve("a")
        a.proto.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        self.failureResultOf(d, BackendProtocolError)
        self.assertEqual(balancer.stats()["backends"]["a"]["state"], "down")

    def test_every_backend_down_requests_wait_connect_timeout_then_fail_naming_them(self) -> None:
        """With no backend in service a request waits for one to come back, and fails with 502 after connect_timeout."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"), connect_timeout=5.0)
        self.endpoints["a"].refusing = True
        self.endpoints["b"].refusing = True
        self.failureResultOf(self.run_one(balancer), ConnectError)
        waiting = self.run_one(balancer)
        self.assertEqual((self.connects("a"), self.connects("b")), (1, 1))
        self.clock.advance(4.99)
        self.assertNoResult(waiting)
        self.clock.advance(0.01)
        failure = self.failureResultOf(waiting, ConnectError)
        message = str(failure.value)
        self.assertTrue(message.startswith("no php-fpm backend reachable within 5 s: a: "), message)
        self.assertIn("; b: ", message)

    def test_waiting_request_goes_to_a_backend_that_comes_back(self) -> None:
        """A request waiting during an outage runs as soon as a check puts a backend back in service."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"), connect_timeout=5.0)
        self.endpoints["a"].refusing = True
        self.endpoints["b"].refusing = True
        self.failureResultOf(self.run_one(balancer), ConnectError)
        waiting = self.run_one(balancer, "/waiting.php")
        self.endpoints["b"].refusing = False
        self.clock.advance(DOWN_FIRST)
        check = self.serve("b")
        check.proto.dataReceived(check.server.get_values_result({b"FCGI_MPXS_CONNS": b"0"}))
        backend = self.serve("b")
        self.assertEqual(backend.script(), b"/waiting.php")
        backend.respond()
        self.successResultOf(waiting)

    def test_ping_finds_a_hung_backend_and_brings_it_back(self) -> None:
        """With ping_path, an in-service backend silent to a ping for ping_timeout is taken out, and a later answered ping puts it back."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"), ping_path="/ping", ping_interval=2.0, ping_timeout=1.0)
        d = self.run_one(balancer)
        a = self.serve("a")
        a.respond()
        a.received()
        self.successResultOf(d)
        self.clock.advance(2.0)
        pinged = [e for e in a.received() if isinstance(e, Params)]
        self.assertEqual(dict(pinged[0].params)[b"SCRIPT_NAME"], b"/ping")
        b = self.serve("b")  # b had no connection: its ping made one
        b.received()
        b.proto.dataReceived(b.server.stdout(1, b"Content-Type: text/plain\r\n\r\npong", close=True) + b.server.end_request(1))
        self.clock.advance(1.0)  # a stays silent
        stats = balancer.stats()["backends"]
        self.assertEqual((stats["a"]["state"], stats["b"]["state"]), ("down", "up"))
        for i in range(3):
            self.run_one(balancer, f"/{i}.php")
        self.assertEqual(self.connects("a"), 1)
        self.clock.advance(1.0)  # the check: a new connection (the silent one was aborted)
        again = self.serve("a")
        self.assertEqual(dict([e for e in again.received() if isinstance(e, Params)][0].params)[b"SCRIPT_NAME"], b"/ping")
        again.proto.dataReceived(again.server.stdout(1, b"Content-Type: text/plain\r\n\r\npong", close=True) + again.server.end_request(1))
        self.assertEqual(balancer.stats()["backends"]["a"]["state"], "up")

    # -- draining and reconfiguring ---------------------------------------------------------------

    def test_drained_backend_finishes_its_requests_and_gets_nothing_new(self) -> None:
        """Reconfigured with drain, a backend's request in flight completes and every new request goes to the other."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        d1 = self.run_one(balancer, "/1.php")
        a = self.serve("a")
        a.received()
        balancer.reconfigure([BackendConfig("a", drain=True), BackendConfig("b")])
        later = [self.run_one(balancer, f"/{i}.php") for i in range(3)]
        self.assertEqual((self.connects("a"), self.connects("b")), (1, 3))
        a.respond()
        self.assertEqual(self.successResultOf(d1), 0)
        for i in range(3):
            self.serve("b", i).respond()
        self.assertEqual([self.successResultOf(d) for d in later], [0, 0, 0])
        self.assertEqual(balancer.stats()["backends"]["a"]["state"], "drain")

    def test_reconfigure_adds_and_removes_backends(self) -> None:
        """A backend added takes requests at once; one removed finishes its request, then its pool closes its connections."""
        balancer = self.make(BackendConfig("a"))
        d1 = self.run_one(balancer, "/1.php")
        a = self.serve("a")
        a.received()
        balancer.reconfigure([BackendConfig("b")])
        d2 = self.run_one(balancer, "/2.php")
        b = self.serve("b")
        self.assertEqual(b.script(), b"/2.php")
        self.assertEqual(list(balancer.stats()["backends"]), ["b"])
        a.respond()
        self.successResultOf(d1)
        self.assertIs(a.transport.disconnecting, True)
        b.respond()
        self.successResultOf(d2)

    def test_close_fails_waiting_requests_and_waits_for_running_ones(self) -> None:
        """close() fails what waits with 502 and fires once the requests in flight are done."""
        balancer = self.make(BackendConfig("a", pool_size=1))
        d1 = self.run_one(balancer)
        a = self.serve("a")
        waiting = self.run_one(balancer)
        closing = balancer.close()
        self.failureResultOf(waiting, ConnectError)
        self.assertNoResult(closing)
        a.respond()
        self.successResultOf(d1)
        self.successResultOf(closing)

    def test_drain_serves_what_it_holds_then_closes(self) -> None:
        """drain() (the old balancer of a reload) runs its waiting request too, and fires once both are answered and the pools closed."""
        balancer = self.make(BackendConfig("a", pool_size=1))
        d1 = self.run_one(balancer, "/1.php")
        a = self.serve("a")
        a.received()
        d2 = self.run_one(balancer, "/2.php")
        drained = balancer.drain()
        a.respond()
        self.successResultOf(d1)
        self.assertEqual(a.script(), b"/2.php")
        self.assertNoResult(drained)
        a.respond()
        self.successResultOf(d2)
        self.successResultOf(drained)
        self.assertIs(a.transport.disconnecting, True)

    # -- states, one test per transition, and the backoff --------------------------------------

    def take_out(self, balancer: Balancer, address: str = "a") -> None:
        """Refuse *address*'s connects and send one request, which fails over to "b": *address* goes out of service at this time."""
        self.endpoints[address].refusing = True
        made = self.connects("b")
        d = self.run_one(balancer)
        if self.connects("b") > made:
            self.b_end = self.serve("b")
        self.b_end.respond()
        self.successResultOf(d)

    def test_in_service_to_out_of_service_on_a_refused_connect(self) -> None:
        """IN_SERVICE -> OUT_OF_SERVICE: a refused connect takes the backend out, its reason kept, its next check at the first delay."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        a = balancer.members[0]
        self.assertIs(a.state, MemberState.IN_SERVICE)
        self.take_out(balancer)
        self.assertIs(a.state, MemberState.OUT_OF_SERVICE)
        self.assertEqual((a.state.value, a.failures, a.reason),
                         ("down", 1, "cannot connect to a: Connection was refused by other side: refused."))
        self.assertEqual([call.getTime() for call in self.clock.getDelayedCalls() if call.args == (a,)], [DOWN_FIRST])

    def test_out_of_service_to_checking_when_its_delay_has_passed(self) -> None:
        """OUT_OF_SERVICE -> CHECKING: the check starts at the end of the delay, not before, with one connect of its own."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        self.take_out(balancer)
        self.endpoints["a"].refusing = False
        self.clock.advance(DOWN_FIRST - 0.125)
        self.assertEqual((balancer.members[0].state, self.connects("a")), (MemberState.OUT_OF_SERVICE, 1))
        self.clock.advance(0.125)
        self.assertEqual((balancer.members[0].state, self.connects("a")), (MemberState.CHECKING, 2))
        self.assertEqual(balancer.stats()["backends"]["a"]["state"], "checking")

    def test_checking_to_in_service_when_the_check_passes(self) -> None:
        """CHECKING -> IN_SERVICE: a check that passes puts it back with its failures forgotten, so a new outage starts again at the first delay."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        a = balancer.members[0]
        self.take_out(balancer)
        self.clock.advance(DOWN_FIRST)  # refused: the next check in twice the delay
        self.endpoints["a"].refusing = False
        self.clock.advance(DOWN_FIRST * 2)
        checked = self.serve("a")
        checked.proto.dataReceived(checked.server.get_values_result({b"FCGI_MPXS_CONNS": b"0"}))
        self.assertEqual((a.state, a.failures, a.reason), (MemberState.IN_SERVICE, 0, ""))
        self.take_out(balancer)
        self.assertEqual([call.getTime() - self.clock.seconds() for call in self.clock.getDelayedCalls() if call.args == (a,)],
                         [DOWN_FIRST])

    def test_checking_to_out_of_service_when_the_check_fails(self) -> None:
        """CHECKING -> OUT_OF_SERVICE: a refused check counts one more failure and waits twice as long."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        a = balancer.members[0]
        self.take_out(balancer)
        self.clock.advance(DOWN_FIRST)
        self.assertEqual((a.state, a.failures, self.connects("a")), (MemberState.OUT_OF_SERVICE, 2, 2))
        self.assertEqual([call.getTime() - self.clock.seconds() for call in self.clock.getDelayedCalls() if call.args == (a,)],
                         [DOWN_FIRST * 2])

    def test_checking_to_out_of_service_when_every_connection_is_busy(self) -> None:
        """CHECKING -> OUT_OF_SERVICE: with ping.path and every connection busy, the check is put off by the same delay, and runs once one is free."""
        balancer = self.make(BackendConfig("a", pool_size=2), BackendConfig("b"), ping_path="/ping", ping_interval=2.0, ping_timeout=1.0)
        a = balancer.members[0]
        self.run_one(balancer, "/hung.php")
        self.serve("a").received()
        self.clock.advance(2.0)  # the periodic ping, on a second connection
        silent = self.serve("a", 1)
        silent.received()
        self.clock.advance(1.0)  # unanswered: out; its connection drains until php-fpm ends the ping
        self.assertEqual((a.state, a.failures, a.reason), (MemberState.OUT_OF_SERVICE, 1, "no answer to a check within 1 s"))
        self.clock.advance(DOWN_FIRST)
        self.assertEqual((a.state, a.failures, self.connects("a")), (MemberState.OUT_OF_SERVICE, 1, 2))
        silent.proto.dataReceived(silent.server.end_request(1))
        self.clock.advance(DOWN_FIRST)
        pinged = [e for e in silent.received() if isinstance(e, Params)]
        self.assertEqual([dict(e.params)[b"SCRIPT_NAME"] for e in pinged], [b"/ping"])
        self.assertIs(a.state, MemberState.CHECKING)
        silent.proto.dataReceived(silent.server.stdout(1, b"Content-Type: text/plain\r\n\r\npong", close=True) + silent.server.end_request(1))
        self.assertIs(a.state, MemberState.IN_SERVICE)

    def test_in_service_to_out_of_service_on_an_unanswered_ping(self) -> None:
        """IN_SERVICE -> OUT_OF_SERVICE: a periodic ping unanswered for ping_timeout takes an idle backend out, its check within ping_interval."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"), ping_path="/ping", ping_interval=2.0, ping_timeout=1.0,
                             backoff=backoffPolicy(5.0, 60.0, 2.0, jitter=lambda: 0.0))
        a = balancer.members[0]
        self.clock.advance(2.0)
        self.serve("a").received()
        self.serve("b").received()
        self.clock.advance(1.0)
        self.assertEqual((a.state, a.reason), (MemberState.OUT_OF_SERVICE, "no answer to a check within 1 s"))
        # The policy says 5 s; ping_interval caps it.
        self.assertEqual([call.getTime() for call in self.clock.getDelayedCalls() if call.args == (a,)], [3.0 + 2.0])

    def test_out_of_service_to_retired_cancels_its_check(self) -> None:
        """OUT_OF_SERVICE -> RETIRED: a backend removed while out of service is never checked again."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        a = balancer.members[0]
        self.take_out(balancer)
        balancer.reconfigure([BackendConfig("b")])
        self.assertIs(a.state, MemberState.RETIRED)
        self.clock.advance(DOWN_MAX * 3)
        self.assertEqual((a.state, self.connects("a")), (MemberState.RETIRED, 1))

    def test_checking_to_retired_ignores_the_check(self) -> None:
        """CHECKING -> RETIRED: a check that passes after its backend was removed does not bring it back."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"))
        a = balancer.members[0]
        self.take_out(balancer)
        self.endpoints["a"].refusing = False
        self.clock.advance(DOWN_FIRST)
        self.assertIs(a.state, MemberState.CHECKING)
        balancer.reconfigure([BackendConfig("b")])
        checked = self.serve("a")
        checked.proto.dataReceived(checked.server.get_values_result({b"FCGI_MPXS_CONNS": b"0"}))
        self.assertEqual((a.state, list(balancer.stats()["backends"])), (MemberState.RETIRED, ["b"]))

    def test_in_service_to_retired_when_its_pool_size_changes(self) -> None:
        """IN_SERVICE -> RETIRED: a new pool size retires the backend's member (its pool finishes what it runs) for a new one in service."""
        balancer = self.make(BackendConfig("a", pool_size=2), BackendConfig("b"))
        old = balancer.members[0]
        balancer.reconfigure([BackendConfig("a", pool_size=4), BackendConfig("b")])
        new = balancer.members[0]
        self.assertEqual((old.state, new.state, new.pool.size), (MemberState.RETIRED, MemberState.IN_SERVICE, 4))

    def test_drain_is_shown_beside_the_state_and_does_not_change_it(self) -> None:
        """A draining backend in service shows "drain" and stays IN_SERVICE; out of service it shows "down"; drained no more, "up" once checked."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"), ping_path="/ping", ping_interval=2.0, ping_timeout=1.0)
        a = balancer.members[0]
        balancer.reconfigure([BackendConfig("a", drain=True), BackendConfig("b")])
        self.assertEqual((a.state, balancer.stats()["backends"]["a"]["state"]), (MemberState.IN_SERVICE, "drain"))
        self.clock.advance(2.0)  # a draining backend is pinged too
        self.serve("a").received()
        self.serve("b").received()
        self.clock.advance(1.0)
        self.assertEqual((a.state, balancer.stats()["backends"]["a"]["state"]), (MemberState.OUT_OF_SERVICE, "down"))
        balancer.reconfigure([BackendConfig("a"), BackendConfig("b")])
        self.assertIs(a.state, MemberState.OUT_OF_SERVICE)
        self.clock.advance(DOWN_FIRST)
        again = self.serve("a")
        again.received()
        again.proto.dataReceived(again.server.stdout(1, b"Content-Type: text/plain\r\n\r\npong", close=True) + again.server.end_request(1))
        self.assertEqual((a.state, balancer.stats()["backends"]["a"]["state"]), (MemberState.IN_SERVICE, "up"))

    def test_check_delays_follow_the_backoff_policy(self) -> None:
        """With Twisted's backoffPolicy(1, 6, 2) and a jitter of 0.25 s, a backend that keeps refusing is checked after 1.25, 2.25, 4.25, 6.25, 6.25 s."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"), backoff=backoffPolicy(1.0, 6.0, 2.0, jitter=lambda: 0.25))
        self.take_out(balancer)
        checks = []
        while len(checks) < 5:
            self.clock.advance(0.125)  # exact in binary: the times below are exact
            if self.connects("a") > len(checks) + 1:
                checks.append(self.clock.seconds())
        self.assertEqual([later - earlier for earlier, later in zip([0.0, *checks], checks)], [1.25, 2.25, 4.25, 6.25, 6.25])
        self.assertEqual(balancer.members[0].failures, 6)

    def test_states_show_their_historic_strings(self) -> None:
        """Each state's value is the string stats(), the status page and the workers' figures have always shown."""
        self.assertEqual([state.value for state in MemberState], ["up", "down", "checking", "retired"])
        self.assertEqual(json.dumps([MemberState.IN_SERVICE, MemberState.CHECKING]), '["up", "checking"]')

    # -- affinity ---------------------------------------------------------------------------------

    def test_session_cookie_keeps_a_session_on_one_backend(self) -> None:
        """With affinity, every request of a session goes to one backend whatever the load; others are balanced."""
        balancer = self.make(BackendConfig("a", pool_size=8), BackendConfig("b", pool_size=8), session_cookie="PHPSESSID")
        home = HashRing([("a", 1), ("b", 1)]).walk(b"s1")[0]
        for i in range(4):
            self.run_one(balancer, f"/{i}.php", cookie="theme=dark; PHPSESSID=s1")
        self.assertEqual(self.connects(home), 4)
        other = "b" if home == "a" else "a"
        self.run_one(balancer, "/anon.php")
        self.assertEqual(self.connects(other), 1)

    def test_session_waits_for_its_full_backend_and_moves_when_it_is_out(self) -> None:
        """A session's request waits while its backend is busy, and goes to the next on the ring while it is out of service."""
        balancer = self.make(BackendConfig("a", pool_size=1), BackendConfig("b", pool_size=1), session_cookie="PHPSESSID")
        home, other = HashRing([("a", 1), ("b", 1)]).walk(b"s1")
        first = self.run_one(balancer, "/1.php", cookie="PHPSESSID=s1")
        backend = self.serve(home)
        backend.received()
        second = self.run_one(balancer, "/2.php", cookie="PHPSESSID=s1")
        self.assertEqual(self.connects(other), 0)
        self.assertEqual(balancer.stats()["waiting"], 1)
        backend.respond()
        self.successResultOf(first)
        self.assertEqual(backend.script(), b"/2.php")
        backend.close()  # php-fpm goes away under the kept connection: the GET goes to the next backend
        moved = self.serve(other)
        self.assertEqual(moved.script(), b"/2.php")
        moved.respond()
        self.successResultOf(second)
        self.assertEqual(self.connects(home), 1)
        self.endpoints[home].refusing = True  # the next connect finds it dead: out of service
        third = self.run_one(balancer, "/3.php", cookie="PHPSESSID=s1")
        self.assertEqual(moved.script(), b"/3.php")
        moved.respond()
        self.successResultOf(third)
        self.assertEqual(balancer.stats()["backends"][home]["state"], "down")


    def test_a_session_started_away_from_its_ring_place_is_pinned_by_a_cookie(self) -> None:
        """A new session's head gets <cookie>_backend naming its backend when the ring would send it elsewhere, and its requests follow."""
        balancer = self.make(BackendConfig("a", pool_size=4), BackendConfig("b", pool_size=4), session_cookie="PHPSESSID")
        ring = HashRing([("a", 1), ("b", 1)])
        away = next(f"s{i}" for i in range(100) if ring.walk(f"s{i}".encode())[0] == "b")
        home = next(f"s{i}" for i in range(100) if ring.walk(f"s{i}".encode())[0] == "a")
        sinks = [RecordingSink(), RecordingSink()]
        firsts = [balancer.request(params("/login.php"), b"", sink) for sink in sinks]  # no cookie yet: both to a by load
        self.assertEqual(self.connects("a"), 1)
        a1 = self.serve("a", 0)
        self.assertEqual(self.connects("b"), 1)  # the second went to b by load
        b1 = self.serve("b", 0)
        a1.received()
        a1.proto.dataReceived(a1.server.stdout(1, f"Set-Cookie: PHPSESSID={away}; path=/\r\nContent-Type: text/html\r\n\r\nhi".encode(), close=True)
                              + a1.server.end_request(1))
        b1.received()
        b1.proto.dataReceived(b1.server.stdout(1, f"Set-Cookie: PHPSESSID={home}; path=/\r\n\r\nhi".encode(), close=True)
                              + b1.server.end_request(1))
        for d in firsts:
            self.successResultOf(d)
        token = backend_token("a").decode()
        self.assertEqual(sinks[0].split()[0], f"Set-Cookie: PHPSESSID={away}; path=/\r\nContent-Type: text/html\r\n"
                                              f"Set-Cookie: PHPSESSID_backend={token}; path=/; HttpOnly; SameSite=Lax".encode())
        self.assertEqual(sinks[1].split()[0], f"Set-Cookie: PHPSESSID={home}; path=/\r\n"
                                              f"Set-Cookie: PHPSESSID_backend={backend_token('b').decode()}; path=/; HttpOnly; SameSite=Lax".encode())
        for i in range(3):
            self.run_one(balancer, f"/next{i}.php", cookie=f"PHPSESSID={away}; PHPSESSID_backend={token}")
        # All three on a (its kept connection and two new ones); b, the ring place of the id, got none.
        self.assertEqual((self.connects("a"), self.connects("b")), (3, 1))

    def test_a_session_started_at_its_ring_place_gets_no_extra_cookie(self) -> None:
        """When the backend that starts a session is its place on the ring, the head passes unchanged."""
        balancer = self.make(BackendConfig("a"), BackendConfig("b"), session_cookie="PHPSESSID")
        ring = HashRing([("a", 1), ("b", 1)])
        home = next(f"s{i}" for i in range(100) if ring.walk(f"s{i}".encode())[0] == "a")
        sink = RecordingSink()
        d = balancer.request(params("/login.php"), b"", sink)
        a = self.serve("a")
        a.received()
        head = f"Set-Cookie: PHPSESSID={home}; path=/\r\nContent-Type: text/html".encode()
        a.proto.dataReceived(a.server.stdout(1, head[:10]) + a.server.stdout(1, head[10:] + b"\r\n\r\nbody", close=True)
                             + a.server.end_request(1))
        self.successResultOf(d)
        self.assertEqual(sink.stdout, head + b"\r\n\r\nbody")


def test_hash_ring_moves_only_the_share_of_a_removed_or_added_backend() -> None:
    """Removing one of four backends moves only its own keys, and adding a fifth takes about a fifth from the others."""
    keys = [f"session-{i}".encode() for i in range(4000)]
    four = HashRing([(n, 1) for n in "abcd"])
    three = HashRing([(n, 1) for n in "abc"])
    five = HashRing([(n, 1) for n in "abcde"])
    before = {k: four.walk(k)[0] for k in keys}
    without_d = {k: three.walk(k)[0] for k in keys}
    with_e = {k: five.walk(k)[0] for k in keys}
    assert [k for k in keys if before[k] != "d" and without_d[k] != before[k]] == []
    assert [k for k in keys if with_e[k] not in (before[k], "e")] == []
    share = sum(1 for k in keys if with_e[k] == "e") / len(keys)
    assert 0.15 < share < 0.25
    counts = {n: sum(1 for k in keys if before[k] == n) for n in "abcd"}
    assert all(0.2 < c / len(keys) < 0.3 for c in counts.values()), counts


def test_hash_ring_weights_and_walk_order() -> None:
    """A backend of weight 2 holds about two thirds of the keys, and a walk names every backend once."""
    ring = HashRing([("a", 1), ("b", 2)])
    keys = [f"k{i}".encode() for i in range(3000)]
    share = sum(1 for k in keys if ring.walk(k)[0] == "b") / len(keys)
    assert 0.6 < share < 0.73
    assert sorted(ring.walk(b"x")) == ["a", "b"]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"Content-Type: text/html\r\nSet-Cookie: PHPSESSID=abc; path=/", b"abc"),
        (b"set-cookie:PHPSESSID=abc", b"abc"),
        (b"Set-Cookie: PHPSESSID=old\r\nSet-Cookie: PHPSESSID=new; HttpOnly", b"new"),
        (b"Set-Cookie: PHPSESSID=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT", None),
        (b"Set-Cookie: XPHPSESSID=abc", None),
        (b"X-Set-Cookie: PHPSESSID=abc", None),
    ],
)
def test_session_cookie_set(head: bytes, expected: Optional[bytes]) -> None:
    """The session id a CGI head sets is the last Set-Cookie of that exact name; a deleted session sets none."""
    assert session_cookie_set(head, b"PHPSESSID") == expected


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("PHPSESSID=abc", b"abc"),
        ("a=1; PHPSESSID=abc; b=2", b"abc"),
        ("a=1;PHPSESSID=abc", b"abc"),
        ("XPHPSESSID=abc", None),
        ("PHPSESSID=", None),
        ("PHPSESSID", None),
        (None, None),
    ],
)
def test_cookie_value(cookie: Optional[str], expected: Optional[bytes]) -> None:
    """The session cookie is found by its exact name among the request's cookies; an empty one counts as none."""
    assert cookie_value(params("/x.php", cookie), b"PHPSESSID") == expected


@pytest.mark.parametrize(
    ("error", "failed_over", "rewindable", "expected"),
    [
        (ConnectError("refused"), False, True, True),
        (ConnectError("refused"), True, True, False),
        (ConnectError("refused"), False, False, False),
        (BackendClosed("closed"), False, True, False),
        (BackendClosed("closed", never_ran=True), False, True, True),
        (BackendClosed("closed", never_ran=True), True, True, False),
        (ResponseTimeout("silent"), False, True, False),
        (BackendProtocolError("bad"), False, True, False),
    ],
    ids=["connect-failed", "already-failed-over", "body-not-rewindable", "closed-after-sending", "thrown-away-unread",
         "unread-already-failed-over", "timed-out", "protocol-error"],
)
def test_should_fail_over(error: Exception, failed_over: bool, rewindable: bool, expected: bool) -> None:
    """Only a request whose connect failed, or that php-fpm threw away unread, goes to another backend, once, with a body that can be rewound."""
    assert should_fail_over(error, failed_over=failed_over, rewindable=rewindable) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectError("refused"), True),
        (BackendProtocolError("bad"), True),
        (ResponseTimeout("silent"), True),
        (BackendClosed("closed"), False),
        (RequestRejected(2), False),
    ],
    ids=["connect", "protocol", "timeout", "child-died", "rejected"],
)
def test_takes_out_of_service(error: Exception, expected: bool) -> None:
    """Connect failures, protocol errors and silence take a backend out; a dead child or a refusal of one request do not."""
    assert takes_out_of_service(error) is expected
