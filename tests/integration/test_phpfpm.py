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
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher

from fephp.cgi.response import HeadParser
from fephp.fastcgi import EndRequest
from fephp.process.binaries import find_php
from fephp.process.phpfpm import ManagedPHPFPM, PHPFPMError
from tests.support import PHP_DIR, REPO
from tests.support.php_fpm import fastcgi_get
from tests.support.processes import processes_with, require_binary

SCRIPT = PHP_DIR / "cgiprocess" / "environment.php"


@pytest.fixture
def fpm(tmp_path: Path) -> Iterator[ManagedPHPFPM]:
    """A managed php-fpm with two workers (not yet started); stopped at teardown whatever the test did."""
    binary = require_binary(find_php("php-fpm"), "php-fpm")
    service = ManagedPHPFPM(
        reactor, binary=binary, children=2, max_requests=0,
        ini={"memory_limit": "77M"}, run_dir_parent=str(tmp_path),
    )
    yield service
    if service.running:
        pytest_twisted.blockon(service.stopService())


def fastcgi_request(path: str) -> tuple[bytes, bytes, EndRequest]:
    """One FastCGI request for environment.php over a plain blocking socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        return fastcgi_get(s, str(SCRIPT), "/environment.php")


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


#: A fephp stand-in: starts a managed php-fpm, prints its master pid and pool name once ready.
HOLDER = """
import sys
from twisted.internet import reactor
from fephp.process.phpfpm import ManagedPHPFPM
fpm = ManagedPHPFPM(reactor, binary=sys.argv[1], children=2, run_dir_parent=sys.argv[2])
def started():
    fpm.startService()
    fpm.ready().addCallback(lambda _: print(fpm.pid, fpm.pool_name, fpm.config_path, flush=True))
reactor.callWhenRunning(started)
reactor.run()
"""


@pytest.mark.php
def test_no_orphan_when_fephp_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the process that runs ManagedPHPFPM still ends its php-fpm master and workers (parent-death signal)."""
    binary = require_binary(find_php("php-fpm"), "php-fpm")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, binary, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
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


