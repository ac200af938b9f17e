"""ManagedPHPFPM: against the real php-fpm (ready, serving, restarted after a crash, stopped with nothing left), then on a fake reactor (backoff, timeouts, log levels)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.logger import LogLevel, globalLogPublisher

from fephp.cgiresponse import HeadParser
from fephp.config import Config
from fephp.fastcgi import ClientConnection, EndRequest, Stderr, Stdout
from fephp.phpfpm import ManagedPHPFPM, PHPFPMError, find_php_fpm, php_fpm_argv
from tests.conftest import processes_with, require_binary

SCRIPT = Path(__file__).parent / "php" / "cgiprocess" / "environment.php"


@pytest.fixture
def fpm(tmp_path: Path) -> Iterator[ManagedPHPFPM]:
    """A managed php-fpm with two workers (not yet started); stopped at teardown whatever the test did."""
    binary = require_binary(find_php_fpm(), "php-fpm")
    service = ManagedPHPFPM(
        reactor, binary=binary, worker_pool_size=2, max_requests=0,
        ini={"memory_limit": "77M"}, run_dir_parent=str(tmp_path),
    )
    yield service
    if service.running:
        pytest_twisted.blockon(service.stopService())


def fastcgi_request(path: str) -> tuple[bytes, bytes, EndRequest]:
    """One FastCGI request for environment.php over a plain blocking socket."""
    conn = ClientConnection()
    params = {
        b"GATEWAY_INTERFACE": b"CGI/1.1",
        b"REQUEST_METHOD": b"GET",
        b"SCRIPT_FILENAME": str(SCRIPT).encode(),
        b"SCRIPT_NAME": b"/environment.php",
        b"REQUEST_URI": b"/environment.php",
        b"QUERY_STRING": b"",
        b"SERVER_PROTOCOL": b"HTTP/1.1",
    }
    stdout = stderr = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(conn.begin_request(1, params, keep_conn=False) + conn.end_stdin(1))
        while True:
            data = s.recv(65536)
            assert data, "php-fpm closed the connection before END_REQUEST"
            for event in conn.receive_data(data):
                if isinstance(event, Stdout):
                    stdout += event.data
                elif isinstance(event, Stderr):
                    stderr += event.data
                elif isinstance(event, EndRequest):
                    return stdout, stderr, event


def served(path: str) -> Any:
    """Deferred: the decoded JSON body environment.php returns through php-fpm at *path*."""

    def check(result: tuple[bytes, bytes, EndRequest]) -> Any:
        stdout, _, end = result
        assert (end.app_status, end.protocol_status) == (0, 0)
        parsed = HeadParser().feed(stdout)
        assert parsed is not None
        return json.loads(parsed[1])

    return threads.deferToThread(fastcgi_request, path).addCallback(check)


def ours(service: ManagedPHPFPM) -> list[int]:
    """The master (titled with our config path) and workers (titled with our pool name) alive now."""
    return sorted(set(processes_with(service.config_path) + processes_with(f"pool {service.pool_name}")))


def wait_until(predicate: Any, what: str, within: float = 15.0) -> Any:
    """Deferred that fires once *predicate()* is true, polled on the reactor with a deadline."""

    @pytest_twisted.inlineCallbacks
    def poll() -> Any:
        deadline = reactor.seconds() + within
        while not predicate():
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            yield deferLater(reactor, 0.02, lambda: None)

    return poll()


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_ready_serves_and_stops_leaving_nothing(fpm: ManagedPHPFPM) -> Any:
    """Started, it fires ready(), answers FastCGI on its private socket with our ini; stopped, no process and no run dir remain."""
    assert stat.S_IMODE(os.stat(fpm.run_dir).st_mode) == 0o700
    fpm.startService()
    yield fpm.ready()
    seen = yield served(fpm.socket_path)
    assert seen["memory_limit"] == "77M"
    assert seen["server"]["SCRIPT_NAME"] == "/environment.php"
    assert len(ours(fpm)) == 3  # the master and two workers
    yield fpm.stopService()
    assert ours(fpm) == []
    assert not os.path.exists(fpm.run_dir)
    assert fpm.pid is None


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_killed_master_is_restarted(fpm: ManagedPHPFPM) -> Any:
    """kill -9 of the master: its orphaned workers are killed, a new master comes up and serves, and stop leaves nothing."""
    fpm.startService()
    yield fpm.ready()
    first = fpm.pid
    assert first is not None
    old_workers = [p for p in ours(fpm) if p != first]
    assert len(old_workers) == 2
    os.kill(first, signal.SIGKILL)
    yield wait_until(lambda: fpm.pid not in (None, first), "a new php-fpm master")
    yield fpm.ready()
    assert fpm.restarts == 1
    assert not set(old_workers) & set(ours(fpm))
    seen = yield served(fpm.socket_path)
    assert seen["memory_limit"] == "77M"
    yield fpm.stopService()
    assert ours(fpm) == []
    assert not os.path.exists(fpm.run_dir)


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_log_lines_reach_twisted_logger(fpm: ManagedPHPFPM) -> Any:
    """php-fpm's "ready to handle connections" NOTICE arrives as an info event, its timestamp and level prefix removed."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        fpm.startService()
        yield fpm.ready()
        yield wait_until(
            lambda: any(e.get("line") == "ready to handle connections" for e in events), "the NOTICE line"
        )
        yield fpm.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    ready = [e for e in events if e.get("line") == "ready to handle connections"]
    assert [e["log_level"] for e in ready] == [LogLevel.info]


@pytest.mark.php
@pytest_twisted.inlineCallbacks
def test_ready_fails_when_php_fpm_exits(tmp_path: Path) -> Any:
    """A "php-fpm" that exits at once fails ready() with PHPFPMError; stopping then removes the run dir."""
    service = ManagedPHPFPM(reactor, binary="/bin/false", run_dir_parent=str(tmp_path), restart_delay=5.0)
    service.startService()
    with pytest.raises(PHPFPMError) as raised:
        yield service.ready()
    assert "exited" in str(raised.value)
    yield service.stopService()
    assert not os.path.exists(service.run_dir)


def test_from_config_takes_the_php_section(tmp_path: Path) -> None:
    """from_config builds the pool from php.*: binary, pool size as max_children, max_requests and ini."""
    (tmp_path / "public").mkdir()
    config = Config.from_dict(
        {"php": {"php_fpm_binary": "/bin/true", "worker_pool_size": 3, "max_requests": 50, "ini": {"memory_limit": "1G"}}},
        base_dir=str(tmp_path),
    )
    service = ManagedPHPFPM.from_config(config, reactor)
    try:
        text = Path(service.config_path).read_text()
        assert service.binary == "/bin/true"
        assert f"[{service.pool_name}]" in text
        assert f"listen = {service.socket_path}" in text
        assert "pm.max_children = 3" in text
        assert "pm.max_requests = 50" in text
        assert "php_admin_value[memory_limit] = 1G" in text
    finally:
        stopped = service.stopService()
    assert stopped.called  # never started: nothing to wait for
    assert not os.path.exists(service.run_dir)


#: A fephp stand-in: starts a managed php-fpm, prints its master pid and pool name once ready.
HOLDER = """
import sys
from twisted.internet import reactor
from fephp.phpfpm import ManagedPHPFPM
fpm = ManagedPHPFPM(reactor, binary=sys.argv[1], worker_pool_size=2, run_dir_parent=sys.argv[2])
def started():
    fpm.startService()
    fpm.ready().addCallback(lambda _: print(fpm.pid, fpm.pool_name, fpm.config_path, flush=True))
reactor.callWhenRunning(started)
reactor.run()
"""


@pytest.mark.php
def test_no_orphan_when_fephp_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the process that runs ManagedPHPFPM still ends its php-fpm master and workers (parent-death signal)."""
    binary = require_binary(find_php_fpm(), "php-fpm")
    repo = Path(__file__).resolve().parent.parent
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, binary, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(repo)),
    )
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 20)
        assert ready, "the holder's php-fpm was not ready within 20 s"
        line = holder.stdout.readline().decode()
        master, pool, config = line.split()
        assert len(processes_with(config) + processes_with(f"pool {pool}")) == 3
    finally:
        holder.kill()
        holder.wait(timeout=10)
    deadline = time.monotonic() + 10
    while processes_with(config) + processes_with(f"pool {pool}"):
        assert time.monotonic() < deadline, "php-fpm outlived the process that started it"
        time.sleep(0.02)  # polling another process's exit, bounded by the deadline
    assert not os.path.exists(f"/proc/{master}") or "Z" in open(f"/proc/{master}/stat").read().rsplit(")", 1)[1].split()[0]


# -- on a fake reactor: "php-fpm" is a recorded spawn the test ends by hand ------


class FakeProcessTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:  # noqa: N802 - Twisted's name
        self.signals.append(name)


class FakeReactor(Clock):
    """A Clock that records spawned processes."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, FakeProcessTransport, list[str], dict[str, str]]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: dict[str, str], path: Any = None) -> FakeProcessTransport:  # noqa: N802
        transport = FakeProcessTransport(100000 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append((protocol, transport, args, env))
        return transport


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeReactor, ManagedPHPFPM]]:
    clock = FakeReactor()
    service = ManagedPHPFPM(clock, binary="/usr/sbin/php-fpm", run_dir_parent=str(tmp_path), worker_pool_size=3)
    yield clock, service


def listen_on(path: str) -> socket.socket:
    """A listening UNIX socket at *path*: what a ready php-fpm looks like to the probe."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    return s


def exit_with(protocol: Any, code: int) -> None:
    protocol.processExited(Failure(ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code)))


def test_fake_spawn_arguments(fake: tuple[FakeReactor, ManagedPHPFPM]) -> None:
    """php-fpm runs in the foreground on the generated config (behind the parent-death guard) with only PATH in its environment."""
    clock, service = fake
    service.startService()
    _, transport, args, env = clock.spawned[0]
    assert args[-len(php_fpm_argv("/usr/sbin/php-fpm", service.config_path)):] == php_fpm_argv(
        "/usr/sbin/php-fpm", service.config_path
    )
    assert list(env) == ["PATH"]
    assert service.pid == transport.pid
    assert "pm.max_children = 3" in Path(service.config_path).read_text()


def test_fake_ready_after_connect(fake: tuple[FakeReactor, ManagedPHPFPM]) -> None:
    """ready() waits until a connect to the socket succeeds, then fires; later calls fire at once."""
    clock, service = fake
    service.startService()
    d = service.ready()
    clock.advance(0)
    assert not d.called
    with listen_on(service.socket_path):
        clock.advance(service.probe_interval)
        assert d.called
        assert service.ready().called


def test_fake_ready_timeout_kills(fake: tuple[FakeReactor, ManagedPHPFPM]) -> None:
    """php-fpm not accepting within ready_timeout fails ready() with PHPFPMError and gets SIGKILL."""
    clock, service = fake
    service.startService()
    d = service.ready()
    clock.pump([0] + [service.probe_interval] * int(service.ready_timeout / service.probe_interval + 2))
    _, transport, _, _ = clock.spawned[0]
    assert transport.signals == ["KILL"]
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert str(failures[0].value) == "php-fpm not ready after 10.0 s"


def test_fake_restart_backoff(fake: tuple[FakeReactor, ManagedPHPFPM]) -> None:
    """Crashes before ready double the restart delay (0.5, 1, 2 s); once ready again it drops back to 0.5 s."""
    clock, service = fake
    service.startService()
    for delay in (0.5, 1.0, 2.0):
        exit_with(clock.spawned[-1][0], 1)
        count = len(clock.spawned)
        clock.advance(delay - 0.01)
        assert len(clock.spawned) == count
        clock.advance(0.01)
        assert len(clock.spawned) == count + 1
    with listen_on(service.socket_path):
        clock.advance(service.probe_interval)
        assert service.ready().called
    exit_with(clock.spawned[-1][0], 1)
    clock.advance(0.5)
    assert (len(clock.spawned), service.restarts) == (5, 4)


def test_fake_stop_term_then_kill(fake: tuple[FakeReactor, ManagedPHPFPM]) -> None:
    """stopService sends SIGTERM, SIGKILL after stop_grace, fires once php-fpm exited, removes the run dir, restarts nothing."""
    clock, service = fake
    service.startService()
    protocol, transport, _, _ = clock.spawned[0]
    waiting = service.ready()
    stopped = service.stopService()
    assert transport.signals == ["TERM"]
    assert waiting.called  # failed: php-fpm is being stopped
    waiting.addErrback(lambda f: None)
    clock.advance(service.stop_grace)
    assert transport.signals == ["TERM", "KILL"]
    assert not stopped.called
    exit_with(protocol, 0)
    assert stopped.called
    assert not os.path.exists(service.run_dir)
    clock.advance(60)
    assert len(clock.spawned) == 1


def test_fake_log_levels(fake: tuple[FakeReactor, ManagedPHPFPM]) -> None:
    """php-fpm's lines, split across reads, are logged at its level without timestamp; other lines at warn."""
    clock, service = fake
    service.startService()
    protocol = clock.spawned[0][0]
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        protocol.childDataReceived(2, b"[27-Nov-2026 03:21:40] NOTICE: fpm is run")
        protocol.childDataReceived(2, b"ning, pid 1\n[27-Nov-2026 03:21:41] WARNING: [pool x] server reached max_children\n")
        protocol.childDataReceived(2, b"[27-Nov-2026 03:21:42] ERROR: unable to bind\nPHP Warning:  something\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [(e["log_level"], e["line"]) for e in events if "line" in e]
    assert logged == [
        (LogLevel.info, "fpm is running, pid 1"),
        (LogLevel.warn, "[pool x] server reached max_children"),
        (LogLevel.error, "unable to bind"),
        (LogLevel.warn, "PHP Warning:  something"),
    ]
