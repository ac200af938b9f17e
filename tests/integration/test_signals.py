"""The operator's signals: SIGHUP, SIGUSR1 and SIGUSR2 leave a running fephp as it was, alone or with worker processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from fephp.process.binaries import find_php
from tests.support.daemon import answers, daemonize, get, wait_for, write_config, zombie
from tests.support.processes import children_of, free_port, processes_with, require_binary

pytestmark = pytest.mark.php


@pytest.mark.parametrize("workers", [1, 2])
def test_operator_signals_change_nothing_and_kill_nothing(tmp_path: Path, workers: int) -> None:
    """After SIGHUP, SIGUSR1 and SIGUSR2 the same processes serve, the pidfile stays, each signal is logged; SIGTERM still stops cleanly."""
    require_binary(find_php("php-fpm"), "php-fpm")
    port = free_port()
    config = write_config(tmp_path, port, "  use_fpm: true")
    if workers > 1:
        config.write_text(config.read_text().replace("  shutdown_grace: 5\n", f"  shutdown_grace: 5\n  workers: {workers}\n"))
    pidfile = daemonize(tmp_path, config)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "fephp.log"
    try:
        wait_for(pidfile.exists, "the pidfile")
        pid = int(pidfile.read_text())
        wait_for(lambda: answers(base + "/static/hello.txt"), "the listener")
        if workers > 1:
            wait_for(lambda: len(processes_with("fephp.server.worker")) >= workers, "the worker processes")
        before = children_of(pid)
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            os.kill(pid, signum)
            name = signal.Signals(signum).name
            wait_for(lambda: f"{name} received" in log.read_text(), f"the {name} log line")
        assert get(base + "/status.php") == (200, b"status body")
        assert pidfile.exists() and not zombie(pid)
        assert children_of(pid) == before
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")
        wait_for(lambda: not processes_with(str(config)), "no process left")
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
