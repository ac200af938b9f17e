"""The PHP worker backend on a fake process and a Clock: the request context, the CGI head, restarts, timeouts, health."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fephp.backend.errors import BackendClosed, ConnectError, PoolOverloaded, QueueTimeout, ResponseTimeout
from fephp.backend.workers import RESTART_REASONS, WorkerBackend, cgi_head, restart_reason, worker_context
from fephp.roadrunner import PidRequest, Request, StopRequest, StreamStop, WorkerConnection, response_context


class FakeProcess:
    """The transport of one spawned worker: what fephp wrote, and the worker's end of the codec to answer with."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written = b""
        self.signals: list[str] = []
        self.stdin_closed = False
        self.worker = WorkerConnection()
        self.proto: Any = None

    def write(self, data: bytes) -> None:
        self.written += data

    def closeStdin(self) -> None:  # noqa: N802 - Twisted's name
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:  # noqa: N802 - Twisted's name
        self.signals.append(name)

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def received(self) -> list[Any]:
        """What the worker reads of what fephp wrote since the last call."""
        data, self.written = self.written, b""
        return self.worker.receive_data(data)

    def answer(self, data: bytes) -> None:
        self.proto.outReceived(data)

    def boot(self) -> None:
        assert self.received() == [PidRequest()]
        self.answer(self.worker.pid(self.pid))

    def exit(self, code: int = 0) -> None:
        self.proto.processEnded(Failure(ProcessTerminated(exitCode=code)))


class Sink:
    def __init__(self) -> None:
        self.out = b""
        self.started = 0

    def response_started(self, producer: Any) -> None:
        self.started += 1

    def stdout_received(self, data: Any) -> None:
        self.out += bytes(data)

    def stderr_received(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


def make(clock: Clock, **options: Any) -> "tuple[WorkerBackend, list[FakeProcess]]":
    spawned: list[FakeProcess] = []

    def spawn(proto: Any) -> FakeProcess:
        process = FakeProcess(1000 + len(spawned))
        process.proto = proto
        spawned.append(process)
        proto.makeConnection(process)
        return process

    options.setdefault("count", 1)
    return WorkerBackend(clock, ["php", "w.php"], env={}, spawn=spawn, rss=lambda pid: 10 << 20, **options), spawned


PARAMS = [
    (b"SCRIPT_FILENAME", b"/srv/public/index.php"),
    (b"QUERY_STRING", b"a=1"),
    (b"REQUEST_METHOD", b"POST"),
    (b"CONTENT_TYPE", b"text/plain"),
    (b"CONTENT_LENGTH", b"5"),
    (b"REQUEST_URI", b"/caf\xc3\xa9?a=1"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    (b"REQUEST_SCHEME", b"https"),
    (b"HTTPS", b"on"),
    (b"REMOTE_ADDR", b"203.0.113.7"),
    (b"SERVER_NAME", b"example.test"),
    (b"SERVER_PORT", b"443"),
    (b"HTTP_HOST", b"example.test"),
    (b"HTTP_CONTENT_TYPE", b"text/plain"),
    (b"HTTP_COOKIE", b"a=1; b=x%20y"),
    (b"HTTP_X_REQUEST_ID", b"r-42"),
    (b"HTTP_ACCEPT", b"text/html, */*"),
]


def test_worker_context_carries_what_the_cgi_environment_says() -> None:
    """The CGI environment becomes RoadRunner's context: absolute URI, headers by canonical name, cookies, request id."""
    context, body = worker_context(PARAMS, b"hello")
    assert body == b"hello"
    assert json.loads(context) == {
        "remoteAddr": "203.0.113.7",
        "protocol": "HTTP/1.1",
        "method": "POST",
        "uri": "https://example.test/caf%C3%A9?a=1",
        "headers": {
            "Content-Type": ["text/plain"],
            "Content-Length": ["5"],
            "Cookie": ["a=1; b=x%20y"],
            "X-Request-Id": ["r-42"],
            "Accept": ["text/html, */*"],
        },
        "cookies": {"a": "1", "b": "x y"},
        "rawQuery": "a=1",
        "parsed": False,
        "uploads": None,
        "attributes": {"requestId": "r-42"},
    }


def test_worker_context_without_a_host_names_the_server() -> None:
    """Without a Host header the URI's authority is SERVER_NAME with a port that is not the scheme's."""
    context, _ = worker_context([(b"REQUEST_URI", b"/"), (b"SERVER_NAME", b"s"), (b"SERVER_PORT", b"8080")], None)
    assert json.loads(context)["uri"] == "http://s:8080/"


def test_cgi_head_keeps_every_set_cookie_and_drops_a_status_header() -> None:
    """The head is Status then each header apart, in order; the worker's own Status header is not repeated."""
    head = cgi_head(201, ((b"Set-Cookie", b"a=1"), (b"Status", b"500"), (b"Set-Cookie", b"b=2")))
    assert head == b"Status: 201\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({}, None),
        ({"reusable": False}, "error"),
        ({"jobs": 10, "max_jobs": 10}, "max_jobs"),
        ({"jobs": 9, "max_jobs": 10}, None),
        ({"rss": 200, "max_memory": 100}, "max_memory"),
        ({"rss": None, "max_memory": 100}, None),
        ({"age": 60.0, "ttl": 60.0}, "ttl"),
    ],
)
def test_restart_reason(kwargs: dict[str, Any], reason: Any) -> None:
    """A worker is kept unless a limit that is on was reached; 0 turns a limit off."""
    args: dict[str, Any] = {"jobs": 1, "max_jobs": 0, "rss": 50, "max_memory": 0, "age": 1.0, "ttl": 0.0, "reusable": True}
    args.update(kwargs)
    assert restart_reason(**args) == reason


def test_a_request_runs_on_a_booted_worker() -> None:
    """The request waits for the pid handshake, goes out as one frame, and the answer reaches the sink as CGI output."""
    clock = Clock()
    backend, spawned = make(clock)
    sink = Sink()
    d = backend.request(PARAMS, b"hello", sink)
    assert backend.figures()["waiting"] == 1
    (process,) = spawned
    process.boot()
    (request,) = process.received()
    assert isinstance(request, Request) and request.body == b"hello"
    process.answer(process.worker.respond(b"hi", response_context(200, {"Set-Cookie": ["a=1", "b=2"]})))
    assert sink.out == b"Status: 200\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhi"
    assert (sink.started, d.result) == (1, 0)
    assert backend.pids() == [1000]


def test_exec_timeout_kills_the_worker_and_answers_504() -> None:
    """A request over exec_timeout fails with ResponseTimeout, its worker is SIGKILLed, and a new one is spawned at once."""
    clock = Clock()
    backend, spawned = make(clock, exec_timeout=5.0)
    spawned[0].boot()
    d = backend.request(PARAMS, None, Sink())
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.1)
    assert d.result.check(ResponseTimeout)  # type: ignore[attr-defined]
    d.addErrback(lambda _: None)
    assert spawned[0].signals == ["KILL"]
    assert len(spawned) == 2
    assert backend.restarts["exec_timeout"] == 1
    assert backend.errors[504] == 1


def test_max_jobs_retires_the_worker_with_the_stop_frame() -> None:
    """After max_jobs requests the worker is told to stop and its replacement is spawned before it exits."""
    clock = Clock()
    backend, spawned = make(clock, max_jobs=1)
    spawned[0].boot()
    backend.request(PARAMS, None, Sink())
    spawned[0].received()
    spawned[0].answer(spawned[0].worker.respond(b"", response_context(204)))
    assert spawned[0].received() == [StopRequest()]
    assert spawned[0].stdin_closed
    assert len(spawned) == 2
    assert backend.restarts["max_jobs"] == 1
    spawned[0].exit()
    assert backend.restarts["crash"] == 0


def test_boot_failures_make_the_backend_unhealthy() -> None:
    """max_consecutive_failures workers exiting before the handshake: unhealthy, waiting requests fail with 502."""
    clock = Clock()
    backend, spawned = make(clock, max_consecutive_failures=2)
    d = backend.request(PARAMS, None, Sink())
    spawned[0].exit(3)
    assert backend.health() == (False, "php workers: no worker has booted yet")
    assert not d.called
    clock.advance(1)
    spawned[1].exit(3)
    assert backend.health() == (False, "php workers: 2 workers in a row failed to boot"
                                " (the worker exited before the pid handshake: A process has ended with a probable error condition: process ended with exit code 3.)")
    assert d.result.check(ConnectError)  # type: ignore[attr-defined]
    d.addErrback(lambda _: None)
    clock.advance(1)
    spawned[2].boot()
    assert backend.health() == (True, "php workers: 1 of 1 workers ready")


def test_the_queue_is_bounded_in_size_and_time() -> None:
    """Past queue_size a request fails with 503 at once; one waiting past queue_timeout fails with 503 too."""
    clock = Clock()
    backend, spawned = make(clock, queue_size=1, queue_timeout=3.0)
    waiting = backend.request(PARAMS, None, Sink())
    refused = backend.request(PARAMS, None, Sink())
    assert refused.result.check(PoolOverloaded)  # type: ignore[attr-defined]
    refused.addErrback(lambda _: None)
    clock.advance(3.0)
    assert waiting.result.check(QueueTimeout)  # type: ignore[attr-defined]
    waiting.addErrback(lambda _: None)
    assert backend.errors[503] == 2


def test_close_stops_idle_workers_and_kills_busy_ones() -> None:
    """close() sends the idle worker the stop frame, SIGKILLs the busy one (its request fails), and fires once both exited."""
    clock = Clock()
    backend, spawned = make(clock, count=2)
    for process in spawned:
        process.boot()
    d = backend.request(PARAMS, None, Sink())
    busy, idle = (spawned[1], spawned[0]) if spawned[1].received() else (spawned[0], spawned[1])
    closed = backend.close()
    assert d.result.check(BackendClosed)  # type: ignore[attr-defined]
    d.addErrback(lambda _: None)
    assert idle.received() == [StopRequest()] and idle.signals == []
    assert busy.signals == ["KILL"]
    assert not closed.called
    idle.exit()
    busy.exit(-9)
    assert closed.result is None
    assert len(spawned) == 2


def test_a_client_gone_mid_stream_stops_the_stream_and_keeps_the_worker() -> None:
    """Cancelling a streamed request sends the STOP bit; the worker's acknowledgement makes it idle for the next request."""
    clock = Clock()
    backend, spawned = make(clock)
    process = spawned[0]
    process.boot()
    sink = Sink()
    d = backend.request(PARAMS, None, sink)
    process.received()
    process.answer(process.worker.respond(b"one", response_context(200), more=True))
    d.cancel()
    d.addErrback(lambda _: None)
    assert process.received() == [StreamStop()]
    process.answer(process.worker.respond(b"two", more=True))  # already on its way: dropped
    process.answer(process.worker.respond(b""))
    assert sink.out == b"Status: 200\r\n\r\none"
    assert backend.figures()["idle"] == 1 and backend.aborts == 1
    assert backend.restarts == {reason: 0 for reason in RESTART_REASONS}


def test_a_worker_asking_to_stop_gives_its_request_to_another() -> None:
    """A worker answering {"stop":true} is retired and the request it did not run goes to the next worker."""
    clock = Clock()
    backend, spawned = make(clock)
    spawned[0].boot()
    sink = Sink()
    d = backend.request(PARAMS, b"x", sink)
    spawned[0].received()
    spawned[0].answer(spawned[0].worker.stop())
    assert backend.restarts["worker_stop"] == 1
    spawned[1].boot()
    (request,) = spawned[1].received()
    assert isinstance(request, Request) and request.body == b"x"
    spawned[1].answer(spawned[1].worker.respond(b"ok", response_context(200)))
    assert (sink.out, d.result) == (b"Status: 200\r\n\r\nok", 0)


def test_ttl_and_idle_ttl_replace_idle_workers() -> None:
    """An idle worker is retired at idle_ttl; one busy at its ttl is retired once its request ends."""
    clock = Clock()
    backend, spawned = make(clock, idle_ttl=10.0)
    spawned[0].boot()
    clock.advance(10.0)
    assert backend.restarts["idle_ttl"] == 1 and spawned[0].received() == [StopRequest()]
    backend, spawned = make(clock, ttl=30.0)
    spawned[0].boot()
    backend.request(PARAMS, None, Sink())
    spawned[0].received()
    clock.advance(30.0)
    assert backend.restarts["ttl"] == 0
    spawned[0].answer(spawned[0].worker.respond(b"", response_context(204)))
    assert backend.restarts["ttl"] == 1 and spawned[0].received() == [StopRequest()]
    assert len(spawned) == 2
