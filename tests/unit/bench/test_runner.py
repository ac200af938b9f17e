"""The bench runner on a fake reactor: schedule, queueing, closed loop, errors, warmup, stop."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.error import TimeoutError as TxTimeoutError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from fephp.bench.report import Report
from fephp.bench.runner import BenchConfig, BenchRun, encode_requests
from tests.support.bench_fakes import OK, URL, FakePeer


class FakeServer(FakePeer):
    """A run on a MemoryReactorClock with its far end: the reports and progress lines it gave."""

    def __init__(self, config: BenchConfig) -> None:
        super().__init__(MemoryReactorClock())
        self.cpu = 0.0
        self.progress: list[str] = []
        self.bench = BenchRun(config, self.reactor, cpu_time=lambda: self.cpu, on_progress=self.progress.append)
        self.reports: list[Report] = []
        self.bench.run().addCallback(self.reports.append)

    @property
    def report(self) -> Report:
        assert len(self.reports) == 1, "the run has not finished"
        return self.reports[0]


def rate_config(**changes: Any) -> BenchConfig:
    # 8 req/s: 1/8 s steps are exact in binary floating point, as the fake clock needs.
    return replace(BenchConfig(urls=(URL,), duration=1.0, rps=8.0, concurrency=2, timeout=5.0), **changes)


class EncodeTests(SynchronousTestCase):
    def test_request_bytes(self) -> None:
        """The request is encoded once: request line, Host, User-Agent, extra headers, body with its length."""
        config = rate_config(method="post", headers=(("X-A", "1"),), body=b"abc")
        origin, requests = encode_requests(config)
        self.assertEqual((origin.host, origin.port), ("127.0.0.1", 8080))
        self.assertEqual(
            requests,
            (
                b"POST /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: fephp-bench/0.1\r\n"
                b"Content-Length: 3\r\nX-A: 1\r\n\r\nabc",
            ),
        )

    def test_header_replaces_default(self) -> None:
        """A --header Host replaces the default Host line instead of adding a second one."""
        _, (request,) = encode_requests(rate_config(headers=(("Host", "example.test"),)))
        self.assertEqual(request.count(b"Host:"), 1)
        self.assertIn(b"\r\nHost: example.test\r\n", request)

    def test_bad_inputs(self) -> None:
        """https, two origins, CR/LF injection and spaces in the method are refused."""
        bad = [
            rate_config(urls=("https://127.0.0.1/",)),
            rate_config(urls=(URL, "http://127.0.0.1:9/")),
            rate_config(headers=(("X", "a\r\nEvil: 1"),)),
            rate_config(method="GET / HTTP/1.1"),
            rate_config(urls=("http:///nohost",)),
        ]
        for config in bad:
            with self.assertRaises(ValueError):
                encode_requests(config)


class RateModeTests(SynchronousTestCase):
    def test_sends_at_the_scheduled_times(self) -> None:
        """At 8 req/s for 1 s, one request leaves every 1/8 s, each on time, then the run ends."""
        server = FakeServer(rate_config())
        sent_at = []
        for step in range(10):
            server.accept()
            for _, transport in server.connections:
                sent_at.extend([round(server.reactor.seconds(), 6)] * server.take_requests(transport))
            for protocol, _ in server.connections:
                if not protocol.parser.idle:
                    protocol.dataReceived(OK)
            server.reactor.advance(0.125)
        self.assertEqual(sent_at, [0.125 * i for i in range(8)])
        report = server.report
        self.assertEqual((report.responses, report.error_count, report.queued, report.unsent), (8, 0, 0, 0))
        self.assertEqual(report.status_codes, {200: 8})
        self.assertEqual(report.achieved_rps, 8.0)
        self.assertEqual(report.bytes_received, 8 * len(OK))
        assert report.lateness is not None
        self.assertEqual(report.lateness.max_ms, 0.001)  # the histogram's floor: 1 us
        # Connections are reused: two connects for eight requests.
        self.assertEqual(len(server.reactor.tcpClients), 2)

    def test_stalled_server_counts_from_the_intended_time(self) -> None:
        """With one connection and a 0.5 s stall, the requests queued behind it carry their waiting time."""
        server = FakeServer(rate_config(concurrency=1))
        ((protocol, transport),) = server.accept()
        self.assertEqual(server.take_requests(transport), 1)
        server.reactor.pump([0.125] * 4)  # requests due at 0.125 .. 0.5 wait for the only connection
        self.assertEqual(server.take_requests(transport), 0)
        # The stall ends at 0.5 s: each answer lets the next queued request go at once.
        for answered in range(5):
            protocol.dataReceived(OK)
            self.assertEqual(server.take_requests(transport), 1 if answered < 4 else 0)
        for _ in range(4):
            server.reactor.advance(0.125)
            server.answer_all()
        report = server.report
        self.assertEqual(report.responses, 8)
        self.assertEqual(report.queued, 4)
        # Intended-time latencies: 500, 375, 250, 125, 0 ms, then three of 0 ms.
        self.assertEqual(report.latency.max_ms, pytest.approx(500, rel=0.01))
        self.assertEqual(report.latency.p90_ms, pytest.approx(375, rel=0.01))
        self.assertEqual(report.latency.p50_ms, pytest.approx(0.001, abs=0.001))
        self.assertEqual(report.latency.mean_ms, pytest.approx(1250 / 8, rel=0.01))
        # From the actual send only the first request looks slow: coordinated omission.
        self.assertEqual(report.service.mean_ms, pytest.approx(500 / 8, rel=0.01))
        assert report.lateness is not None
        self.assertEqual(report.lateness.max_ms, pytest.approx(375, rel=0.01))

    def test_unsent_requests_when_the_server_never_recovers(self) -> None:
        """Requests still queued when the run gives up are reported unsent, and the one in flight times out."""
        server = FakeServer(rate_config(concurrency=1, timeout=30.0))
        server.accept()
        server.reactor.pump([0.125] * 16)
        self.assertEqual(server.reports, [])
        # The first request times out at 30 s, the second is sent then and is
        # cut (as a timeout) when the run stops waiting at 1 + 30 + 1 s.
        server.reactor.pump([0.25] * 118)
        server.accept()
        self.assertEqual(server.reports, [])
        server.reactor.pump([0.25] * 4)
        report = server.report
        self.assertEqual(report.responses, 0)
        self.assertEqual(report.errors["timeout"], 2)
        self.assertEqual(report.unsent, 6)
        self.assertEqual(report.queued, 1)
        self.assertEqual(report.error_rate, 1.0)

    def test_response_timeout(self) -> None:
        """A response slower than --timeout is a timeout error and its connection is dropped."""
        server = FakeServer(rate_config(concurrency=1, rps=1.0, duration=2.0, timeout=0.5))
        ((protocol, transport),) = server.accept()
        server.reactor.pump([0.125] * 6)
        self.assertTrue(protocol.parser.idle)
        self.assertEqual(server.bench.recorder.errors["timeout"], 1)
        protocol.connectionLost(Failure(ConnectionLost()))
        server.reactor.advance(0.25)  # the second request is due at 1.0 s, on a new connection
        ((protocol2, transport2),) = server.accept()
        self.assertEqual(server.take_requests(transport2), 1)
        protocol2.dataReceived(OK)
        server.reactor.pump([0.5] * 4)
        report = server.report
        self.assertEqual((report.responses, report.errors["timeout"]), (1, 1))

    def test_connect_errors_by_kind(self) -> None:
        """Refused, timed-out and other failed connects are counted under their own kinds."""
        server = FakeServer(rate_config(concurrency=3, rps=4.0, duration=0.75))
        self.assertEqual(server.refuse(ConnectionRefusedError()), 1)
        server.reactor.advance(0.25)
        self.assertEqual(server.refuse(TxTimeoutError()), 1)
        server.reactor.advance(0.25)
        self.assertEqual(server.refuse(DNSLookupError()), 1)
        server.reactor.advance(0.25)
        report = server.report
        self.assertEqual(
            report.errors,
            {"connect_refused": 1, "timeout": 1, "connect_error": 1, "reset": 0, "malformed": 0},
        )

    def test_reset_and_malformed(self) -> None:
        """A close mid-response is a reset, nonsense is malformed; the next request reconnects."""
        server = FakeServer(rate_config(concurrency=1, rps=4.0, duration=0.75))
        ((protocol, _),) = server.accept()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        protocol.connectionLost(Failure(ConnectionDone()))
        server.reactor.advance(0.25)
        ((protocol, transport),) = server.accept()
        protocol.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.assertTrue(transport.disconnecting or transport.disconnected)
        server.reactor.advance(0.25)
        ((protocol, _),) = server.accept()
        protocol.dataReceived(OK)
        server.reactor.advance(0.25)
        report = server.report
        self.assertEqual((report.errors["reset"], report.errors["malformed"], report.responses), (1, 1, 1))

    def test_connection_close_response_reconnects(self) -> None:
        """After a response with Connection: close the next request goes on a new connection."""
        server = FakeServer(rate_config(concurrency=1, rps=2.0, duration=1.0))
        ((protocol, transport),) = server.accept()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        server.reactor.advance(0.5)
        ((protocol, _),) = server.accept()
        protocol.dataReceived(OK)
        self.assertEqual(server.report.responses, 2)

    def test_urls_take_turns_and_head_has_no_body(self) -> None:
        """Several URLs are requested in turn; a HEAD answer ends with its header block despite its length."""
        config = rate_config(urls=("http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b"), method="HEAD", concurrency=1)
        server = FakeServer(config)
        lines = []
        for _ in range(9):
            server.accept()
            for protocol, transport in server.connections:
                if transport.value():
                    lines.append(transport.value().split(b"\r\n", 1)[0])
                    transport.clear()
                    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            server.reactor.advance(0.125)
        self.assertEqual(lines, [b"HEAD /a HTTP/1.1", b"HEAD /b HTTP/1.1"] * 4)
        self.assertEqual(server.report.responses, 8)

    def test_warmup_is_not_measured(self) -> None:
        """Requests intended during the warmup are sent but left out of the report."""
        server = FakeServer(rate_config(warmup=0.5))
        for _ in range(14):
            server.accept()
            server.answer_all()
            server.reactor.advance(0.125)
        report = server.report
        self.assertEqual(report.responses, 8)
        self.assertEqual(report.elapsed_s, pytest.approx(1.0))
        self.assertEqual([round(s.end_s, 6) for s in report.timeseries], [1.0])

    def test_stop_reports_what_was_measured(self) -> None:
        """stop() ends the run at once with the requests done so far."""
        server = FakeServer(rate_config(duration=60.0))
        for _ in range(5):
            server.accept()
            server.answer_all()
            server.reactor.advance(0.125)
        server.bench.stop()
        self.assertTrue(server.bench.interrupted)
        self.assertEqual(server.report.responses, 5)
        self.assertEqual(server.report.unsent, 0)

    def test_cpu_fraction(self) -> None:
        """The report divides the process's CPU time by the wall time of the run (0.875 s: the last answer)."""
        server = FakeServer(rate_config())
        server.cpu = 0.9
        for _ in range(9):
            server.accept()
            server.answer_all()
            server.reactor.advance(0.125)
        self.assertEqual(server.report.cpu_fraction, pytest.approx(0.9 / 0.875))

    def test_progress_once_a_second(self) -> None:
        """The progress callback gets one line per second with the rate of that second and the p99 so far."""
        server = FakeServer(rate_config(duration=2.5, warmup=1.0))
        for _ in range(30):
            server.accept()
            server.answer_all()
            server.reactor.advance(0.125)
        self.assertEqual(len(server.reports), 1)
        # At 1 s (the warmup's end), then 1 s and 2 s into the measured run.
        self.assertEqual(
            server.progress,
            [
                "warmup    1.0 s of 1 s        8.0 req/s  p99 so far      0.00 ms  errors 0",
                "   1.0 s of 2.5 s        8.0 req/s  p99 so far      0.00 ms  errors 0",
                "   2.0 s of 2.5 s        8.0 req/s  p99 so far      0.00 ms  errors 0",
            ],
        )
        self.assertEqual([s.end_s for s in server.report.timeseries], [1.0, 2.0, 2.5])
        self.assertEqual([s.requests for s in server.report.timeseries], [8, 8, 4])


class MaxModeTests(SynchronousTestCase):
    def test_closed_loop(self) -> None:
        """With --rps 0 each connection sends its next request as soon as an answer arrives."""
        server = FakeServer(rate_config(rps=0.0, concurrency=2, duration=1.0))
        connections = server.accept()
        self.assertEqual(len(connections), 2)
        for _ in range(3):
            self.assertEqual(server.answer_all(), 2)
        server.reactor.advance(0.5)
        self.assertEqual(server.answer_all(), 2)
        server.reactor.advance(0.5)  # the deadline: answers end the run, no new request is sent
        self.assertEqual(server.answer_all(), 2)
        self.assertEqual(server.answer_all(), 0)
        report = server.report
        self.assertIsNone(report.target_rps)
        self.assertIsNone(report.lateness)
        self.assertEqual(report.responses, 10)
        self.assertEqual(report.achieved_rps, 10.0)
        self.assertEqual(len(server.reactor.tcpClients), 2)
