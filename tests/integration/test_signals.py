"""The operator's signals: SIGHUP reloads, SIGUSR1 reopens the logs, SIGUSR2 changes nothing; none kills fephp, alone or with worker processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from fephp.process.binaries import find_php
from tests.support.daemon import answers, daemonize, get, listening_on, wait_for, write_config, zombie
from tests.support.processes import children_of, processes_with, require_binary

pytestmark = pytest.mark.php


@pytest.mark.parametrize("workers", [1, 2])
def test_operator_signals_keep_fephp_running(tmp_path: Path, workers: int) -> None:
    """SIGUSR1 and SIGUSR2 leave the same processes serving, SIGHUP reloads (the same php-fpm when its settings did not change); each is logged, the pidfile stays, SIGTERM still stops cleanly."""
    require_binary(find_php("php-fpm"), "php-fpm")
    config = write_config(tmp_path, "  use_fpm: true")
    if workers > 1:
        config.write_text(config.read_text().replace("  shutdown_grace: 5\n", f"  shutdown_grace: 5\n  workers: {workers}\n"))
    pidfile = daemonize(tmp_path, config)
    log = tmp_path / "fephp.log"
    try:
        wait_for(pidfile.exists, "the pidfile")
        pid = int(pidfile.read_text())
        (port,) = listening_on(pid)  # the parent's, which the workers share
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(base + "/static/hello.txt"), "the listener")
        # php-fpm's master, and the workers.
        wait_for(lambda: len(children_of(pid)) == 1 + (workers if workers > 1 else 0), "fephp's child processes")
        before = children_of(pid)
        for signum, line in (
            (signal.SIGUSR1, "SIGUSR1 received: log files reopened"),
            (signal.SIGUSR2, "SIGUSR2 received: SIGUSR2 is not supported yet; nothing changed"),
        ):
            os.kill(pid, signum)
            wait_for(lambda: line in log.read_text(), f"the {line!r} log line")
        assert children_of(pid) == before
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "reload: serving the configuration" in log.read_text(), "the reload", within=240)
        assert get(base + "/status.php") == (200, b"status body")
        assert pidfile.exists() and not zombie(pid)
        fpm = children_of(pid, "php-fpm: master")
        assert len(fpm) == 1 and fpm[0] in before  # php-fpm's settings did not change: the same master
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")
        wait_for(lambda: not processes_with(str(config)), "no process left")
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
