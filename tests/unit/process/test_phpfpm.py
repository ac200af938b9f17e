"""ManagedPHPFPM on a fake reactor: spawn arguments, readiness, backoff, timeouts, log levels."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from fephp.process.fpmconfig import php_fpm_argv
from fephp.process.phpfpm import ManagedPHPFPM
from fephp.testing import FakeProcessReactor


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeProcessReactor, ManagedPHPFPM]]:
    clock = FakeProcessReactor()
    service = ManagedPHPFPM(clock, binary="/usr/sbin/php-fpm", run_dir_parent=str(tmp_path), children=3)
    yield clock, service


def listen_on(path: str) -> socket.socket:
    """A listening UNIX socket at *path*: what a ready php-fpm looks like to the probe."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    return s


def exit_with(protocol: Any, code: int) -> None:
    protocol.processExited(Failure(ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code)))


def test_fake_spawn_arguments(fake: tuple[FakeProcessReactor, ManagedPHPFPM]) -> None:
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


def test_fake_ready_after_connect(fake: tuple[FakeProcessReactor, ManagedPHPFPM]) -> None:
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


def test_fake_ready_timeout_kills(fake: tuple[FakeProcessReactor, ManagedPHPFPM]) -> None:
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


def test_fake_restart_backoff(fake: tuple[FakeProcessReactor, ManagedPHPFPM]) -> None:
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


def test_fake_stop_term_then_kill(fake: tuple[FakeProcessReactor, ManagedPHPFPM]) -> None:
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


def test_fake_log_levels(fake: tuple[FakeProcessReactor, ManagedPHPFPM]) -> None:
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
