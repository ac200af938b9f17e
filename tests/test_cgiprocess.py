"""PHPCGIBackend: on a fake reactor (timeouts, pause, kill), then against the real php-cgi (environment, body, output, exit code, cancel)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.internet.interfaces import IPushProducer

from fephp.cgiprocess import PHPCGIBackend, find_php_cgi
from fephp.cgiresponse import HeadParser
from fephp.errors import BackendClosed, ConnectError, ResponseTimeout
from tests.conftest import require_binary

SCRIPTS = Path(__file__).parent / "php" / "cgiprocess"
#: Keys PHP adds to $_SERVER by itself, whatever the environment.
PHP_OWN = {"PHP_SELF", "REQUEST_TIME", "REQUEST_TIME_FLOAT"}
#: Settings that make $_SERVER and getenv() comparable with the params, php.ini or not.
TEST_INI = {"register_argc_argv": "0", "variables_order": "EGPCS", "memory_limit": "77M"}


class Sink:
    """Collects one request's output; ``received(pattern)`` waits for stdout to match."""

    def __init__(self) -> None:
        self.producer: Optional[IPushProducer] = None
        self.stdout = b""
        self.stderr = b""
        self._waiting: list[tuple[bytes, Deferred[None]]] = []

    def received(self, pattern: bytes) -> "Deferred[None]":
        """Fires once the regular expression *pattern* matches the stdout so far."""
        d: Deferred[None] = Deferred()
        self._waiting.append((pattern, d))
        self._check()
        return d

    def response_started(self, producer: IPushProducer) -> None:
        assert self.producer is None and self.stdout == b""
        self.producer = producer

    def flush(self) -> None:
        pass

    def stdout_received(self, data: bytes) -> None:
        self.stdout += data
        self._check()

    def _check(self) -> None:
        for pattern, d in list(self._waiting):
            if re.search(pattern, self.stdout):
                self._waiting.remove((pattern, d))
                d.callback(None)

    def stderr_received(self, data: bytes) -> None:
        self.stderr += data


def params(script: str, *, method: str = "GET", query: str = "", body_length: Optional[int] = None) -> list[tuple[bytes, bytes]]:
    """The CGI params php-cgi needs to run *script* (from tests/php/cgiprocess)."""
    path = str(SCRIPTS / script)
    pairs = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REDIRECT_STATUS": "200",
        "REQUEST_METHOD": method,
        "SCRIPT_FILENAME": path,
        "SCRIPT_NAME": "/" + script,
        "REQUEST_URI": "/" + script + ("?" + query if query else ""),
        "QUERY_STRING": query,
        "DOCUMENT_ROOT": str(SCRIPTS),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "fephp/test",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
    }
    if body_length is not None:
        pairs["CONTENT_LENGTH"] = str(body_length)
        pairs["CONTENT_TYPE"] = "application/octet-stream"
    return [(k.encode(), v.encode()) for k, v in pairs.items()]


@pytest.fixture
def backend() -> Any:
    from twisted.internet import reactor

    binary = require_binary(find_php_cgi(), "php-cgi")
    cgi = PHPCGIBackend(reactor, binary, ini=TEST_INI, timeout=20.0)
    yield cgi
    cgi.close()


def split(output: bytes) -> tuple[Any, bytes]:
    parsed = HeadParser().feed(output)
    assert parsed is not None, output
    return parsed


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_headers_and_body(backend: PHPCGIBackend) -> Any:
    """A GET gets the script's Status and header, then exactly its body, and exit code 0."""
    sink = Sink()
    status = yield backend.request(params("hello.php", query="name=ada"), None, sink)
    head, body = split(sink.stdout)
    assert status == 0
    assert (head.status, head.reason) == (201, b"Created")
    assert (b"X-Greeting", b"hello") in head.headers
    assert body == b"hello ada\n"
    assert sink.producer is not None
    assert backend.running == 0


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_post_body_reaches_php(backend: PHPCGIBackend) -> Any:
    """A 3 MiB POST body, given as bytes and as a file, reaches php://input whole (same length and sha256)."""
    data = os.urandom(3 * 1024 * 1024 + 7)
    expected = f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()
    for body in (data, _file(data)):
        sink = Sink()
        status = yield backend.request(params("echo_hash.php", method="POST", body_length=len(data)), body, sink)
        assert status == 0
        assert split(sink.stdout)[1] == expected


def _file(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_environment_is_exactly_the_params(backend: PHPCGIBackend, monkeypatch: pytest.MonkeyPatch) -> Any:
    """$_SERVER (less PHP's own keys) and getenv() equal the params exactly; fephp's environment does not leak; ini applies."""
    monkeypatch.setenv("FEPHP_LEAK_MARKER", "secret")
    pairs = params("environment.php", query="a=1")
    sink = Sink()
    status = yield backend.request(pairs, None, sink)
    assert status == 0
    seen = json.loads(split(sink.stdout)[1])
    ours = {k.decode(): v.decode() for k, v in pairs}
    assert {k: str(v) for k, v in seen["server"].items() if k not in PHP_OWN} == ours
    assert seen["env"] == ours
    assert "FEPHP_LEAK_MARKER" not in seen["server"]
    assert seen["memory_limit"] == "77M"


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_stderr_and_exit_code(backend: PHPCGIBackend) -> Any:
    """What the script writes to STDERR reaches stderr_received, and exit(3) fires the Deferred with 3."""
    sink = Sink()
    status = yield backend.request(params("stderr_exit.php"), None, sink)
    assert status == 3
    assert sink.stderr == b"a line for the log\n"
    assert split(sink.stdout)[1] == b"some output"


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_cancel_kills_the_process(backend: PHPCGIBackend) -> Any:
    """Cancelling a running request fails it with CancelledError and php-cgi is gone once close() fires."""
    sink = Sink()
    d = backend.request(params("pid_then_sleep.php"), None, sink)
    yield sink.received(rb"pid=\d+\n")
    _, body = split(sink.stdout)
    pid = int(body.split(b"=")[1])
    assert alive(pid)
    d.cancel()
    with pytest.raises(CancelledError):
        yield d
    yield backend.close()
    assert backend.running == 0
    assert not alive(pid)


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_silence_times_out_and_kills() -> Any:
    """php-cgi silent for longer than the timeout fails the request with ResponseTimeout (504) and is killed."""
    from twisted.internet import reactor

    backend = PHPCGIBackend(reactor, require_binary(find_php_cgi(), "php-cgi"), ini=TEST_INI, timeout=1.0)
    sink = Sink()
    d = backend.request(params("pid_then_sleep.php"), None, sink)
    with pytest.raises(ResponseTimeout) as raised:
        yield d
    pid = int(split(sink.stdout)[1].split(b"=")[1])
    assert raised.value.http_status == 504
    assert not alive(pid)
    assert b"too late" not in sink.stdout


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_missing_binary_is_a_connect_error(tmp_path: Path) -> Any:
    """A php-cgi path that does not exist fails the request with ConnectError (502) and starts nothing."""
    from twisted.internet import reactor

    backend = PHPCGIBackend(reactor, str(tmp_path / "no-php-cgi"), timeout=5)
    sink = Sink()
    with pytest.raises(ConnectError) as raised:
        yield backend.request(params("hello.php"), None, sink)
    assert raised.value.http_status == 502
    assert (sink.producer, backend.running) == (None, 0)


# -- on a fake reactor: the process is a stand-in the test drives by hand ----------


class FakeProcessTransport:
    """Records what the backend does to its child."""

    def __init__(self) -> None:
        self.signals: list[str] = []
        self.paused = False
        self.stdin = b""
        self.stdin_closed = False
        self.producer: Any = None

    def signalProcess(self, name: str) -> None:  # noqa: N802 - Twisted's name
        self.signals.append(name)

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = False

    def closeStdin(self) -> None:  # noqa: N802 - Twisted's name
        self.stdin_closed = True

    def write(self, data: bytes) -> None:
        self.stdin += data

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802 - Twisted's name
        self.producer = producer

    def unregisterProducer(self) -> None:  # noqa: N802 - Twisted's name
        self.producer = None


class FakeReactor(Clock):
    """A Clock that "spawns" processes by recording them."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, FakeProcessTransport, list[str], dict[bytes, bytes]]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: dict[bytes, bytes], path: Any = None, usePTY: bool = False) -> FakeProcessTransport:  # noqa: N802,N803
        transport = FakeProcessTransport()
        protocol.makeConnection(transport)
        self.spawned.append((protocol, transport, args, env))
        return transport


def fake_backend(timeout: float = 10.0) -> tuple[FakeReactor, PHPCGIBackend]:
    reactor = FakeReactor()
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
    sink = Sink()
    d = backend.request([(b"A", b"1"), (b"B", b"2")], b"x" * 40000, sink)
    protocol, transport, args, env = reactor.spawned[0]
    assert args == ["/bin/sh", "-d", "a=1", "-d", "b=2"]
    assert env == {b"A": b"1", b"B": b"2"}
    while transport.producer is not None:
        transport.producer.resumeProducing()
    assert (transport.stdin, transport.stdin_closed) == (b"x" * 40000, True)
    protocol.outReceived(b"Status: 200 OK\r\n\r\nok")
    protocol.errReceived(b"warn")
    protocol.processEnded(ended(0))
    statuses: list[int] = []
    d.addCallback(statuses.append)
    assert (sink.stdout, sink.stderr, statuses) == (b"Status: 200 OK\r\n\r\nok", b"warn", [0])


def test_fake_timeout_counts_silence_only() -> None:
    """Each output restarts the response timeout; silence for the whole timeout SIGKILLs and fails with ResponseTimeout."""
    reactor, backend = fake_backend(timeout=5)
    d = backend.request([], None, Sink())
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
    sink = Sink()
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
    sink = Sink()
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
    d = backend.request([], None, Sink())
    protocol, _, _, _ = reactor.spawned[0]
    protocol.processEnded(Failure(ProcessTerminated(signal=11)))
    error = failure_of(d)
    assert (type(error), str(error), error.response_started) == (
        BackendClosed, "php-cgi died of SIGSEGV", False,
    )


def test_fake_close_kills_children_and_refuses_requests() -> None:
    """close() SIGKILLs running children, fires once they have exited, and later requests fail with BackendClosed."""
    reactor, backend = fake_backend()
    d = backend.request([], None, Sink())
    protocol, transport, _, _ = reactor.spawned[0]
    closed = backend.close()
    assert (transport.signals, closed.called) == (["KILL"], False)
    protocol.processEnded(Failure(ProcessTerminated(signal=9)))
    assert closed.called
    assert isinstance(failure_of(d), BackendClosed)
    assert isinstance(failure_of(backend.request([], None, Sink())), BackendClosed)
    assert len(reactor.spawned) == 1
