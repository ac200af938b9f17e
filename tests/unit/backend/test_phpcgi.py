"""PHPCGIBackend on a fake reactor: the process is a stand-in the test drives by hand."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure

from fephp.backend.errors import BackendClosed, ResponseTimeout
from fephp.backend.phpcgi import PHPCGIBackend
from fephp.testing import FakeProcessReactor, RecordingSink


def fake_backend(timeout: float = 10.0) -> tuple[FakeProcessReactor, PHPCGIBackend]:
    reactor = FakeProcessReactor()
    return reactor, PHPCGIBackend(reactor, "/bin/sh", ini={"b": "2", "a": "1"}, timeout=timeout)


def failure_of(d: "Deferred[Any]") -> Any:
    """The exception *d* has already failed with."""
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert len(failures) == 1, d
    return failures[0].value


def ended(code: int) -> Failure:
    return Failure(ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code))


def test_fake_argv_env_and_body() -> None:
    """argv is the binary and sorted -d settings only; env is exactly the params; the body is streamed to stdin, then closed."""
    reactor, backend = fake_backend()
    sink = RecordingSink()
    d = backend.request([(b"A", b"1"), (b"B", b"2")], b"x" * 40000, sink)
    protocol, transport, args, env = reactor.spawned[0]
    assert args == ["/bin/sh", "-d", "a=1", "-d", "b=2"]
    assert env == {b"A": b"1", b"B": b"2"}
    while transport.producer is not None:
        transport.producer.resumeProducing()
    assert (transport.written, transport.stdin_closed) == (b"x" * 40000, True)
    protocol.outReceived(b"Status: 200 OK\r\n\r\nok")
    protocol.errReceived(b"warn")
    protocol.processEnded(ended(0))
    statuses: list[int] = []
    d.addCallback(statuses.append)
    assert (sink.stdout, sink.stderr, statuses) == (b"Status: 200 OK\r\n\r\nok", b"warn", [0])


def test_fake_timeout_counts_silence_only() -> None:
    """Each output restarts the response timeout; silence for the whole timeout SIGKILLs and fails with ResponseTimeout."""
    reactor, backend = fake_backend(timeout=5)
    d = backend.request([], None, RecordingSink())
    protocol, transport, _, _ = reactor.spawned[0]
    reactor.advance(4)
    protocol.outReceived(b"X: 1\r\n")
    reactor.advance(4)
    assert transport.signals == []
    reactor.advance(1)
    assert transport.signals == ["KILL"]
    protocol.processEnded(Failure(ProcessTerminated(signal=9)))
    assert isinstance(failure_of(d), ResponseTimeout)
    assert backend.running == 0


def test_fake_pause_stops_reading_and_the_clock() -> None:
    """A paused sink pauses reading php-cgi's output and the timeout; resuming restarts both."""
    reactor, backend = fake_backend(timeout=5)
    sink = RecordingSink()
    backend.request([], None, sink)
    protocol, transport, _, _ = reactor.spawned[0]
    assert sink.producer is protocol
    sink.producer.pauseProducing()
    assert transport.paused
    reactor.advance(60)
    assert transport.signals == []
    sink.producer.resumeProducing()
    assert not transport.paused
    reactor.advance(5)
    assert transport.signals == ["KILL"]


def test_fake_stop_producing_and_signal_death() -> None:
    """stopProducing kills php-cgi and fails the request with BackendClosed saying whether output had started."""
    reactor, backend = fake_backend()
    sink = RecordingSink()
    d = backend.request([], None, sink)
    protocol, transport, _, _ = reactor.spawned[0]
    protocol.outReceived(b"X: 1\r\n")
    sink.producer.stopProducing()
    assert transport.signals == ["KILL"]
    protocol.processEnded(Failure(ProcessTerminated(signal=9)))
    error = failure_of(d)
    assert isinstance(error, BackendClosed) and error.response_started


def test_fake_crash_is_backend_closed() -> None:
    """php-cgi killed by a signal nobody sent fails the request with BackendClosed naming the signal."""
    reactor, backend = fake_backend()
    d = backend.request([], None, RecordingSink())
    protocol, _, _, _ = reactor.spawned[0]
    protocol.processEnded(Failure(ProcessTerminated(signal=11)))
    error = failure_of(d)
    assert (type(error), str(error), error.response_started) == (
        BackendClosed, "php-cgi died of SIGSEGV", False,
    )


def test_fake_close_kills_children_and_refuses_requests() -> None:
    """close() SIGKILLs running children, fires once they have exited, and later requests fail with BackendClosed."""
    reactor, backend = fake_backend()
    d = backend.request([], None, RecordingSink())
    protocol, transport, _, _ = reactor.spawned[0]
    closed = backend.close()
    assert (transport.signals, closed.called) == (["KILL"], False)
    protocol.processEnded(Failure(ProcessTerminated(signal=9)))
    assert closed.called
    assert isinstance(failure_of(d), BackendClosed)
    assert isinstance(failure_of(backend.request([], None, RecordingSink())), BackendClosed)
    assert len(reactor.spawned) == 1
