"""php.worker.watch in a real fephp (twistd -n): a change to a watched file restarts the PHP workers, gracefully."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import REPO
from tests.support.daemon import TWISTD, get
from tests.support.ports import wait_listening
from tests.support.worker_pipes import php_cli, require_php_files

pytestmark = pytest.mark.php

APP = Path(__file__).resolve().parent.parent / "php" / "workers" / "uploads.php"
#: Bounds on the polling below: requests, and seconds.
MAX_POLLS = 2000
WITHIN = 30.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """fephp in the foreground with one worker watching app/src/**/*.php: its base URL and the app folder."""
    require_php_files(["Nyholm/Psr7/autoload.php"], "nyholm/psr7 (php-nyholm-psr7)")
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "index.php").write_text("<?php\n")
    src = tmp_path / "app" / "src" / "Model"
    src.mkdir(parents=True)
    (src / "User.php").write_text("<?php // v1\n")
    config = tmp_path / "fephp.yaml"
    config.write_text(f"""
server: {{listen: ["tcp:0:interface=127.0.0.1"], root: public, shutdown_grace: 5}}
php:
  worker:
    script: {APP}
    command: [{php_cli()}]
    count: 1
    watch: ["app/src/**/*.php"]
logging: {{access_log: null, level: info}}
""")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = open(tmp_path / "fephp.log", "wb")
    proc = subprocess.Popen([*TWISTD, "-n", "--pidfile", "", "fephp", "--config", str(config)], cwd=tmp_path,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        port = wait_listening(proc.pid)[0][1]
        yield f"http://127.0.0.1:{port}", tmp_path / "app"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


def pid_of(base: str) -> int:
    status, body = get(base + "/api/pid")
    assert status == 200, (status, body)
    answer = json.loads(body)
    assert answer["sapi"] == "cli"
    return int(answer["pid"])


def pids_until(base: str, done, what: str) -> set[int]:
    """Ask /api/pid (each answer must be 200) until *done*(pids seen so far) holds; bounded in requests and time."""
    seen: set[int] = set()
    deadline = time.monotonic() + WITHIN
    for _ in range(MAX_POLLS):
        seen.add(pid_of(base))
        if done(seen):
            return seen
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"{what}: only {sorted(seen)} answered")


def test_a_watched_change_restarts_the_workers(server: tuple[str, Path]) -> None:
    """Editing a watched PHP file makes the next answers come from new worker pids, with no request failing."""
    base, app = server
    before = {pid_of(base)}
    (app / "src" / "Model" / "User.php").write_text("<?php // v2\n")
    after = pids_until(base, lambda seen: bool(seen - before), "a worker started after the change")
    fresh = after - before
    assert len(fresh) == 1
    # The new worker took over whole: the old one answers no more.
    only_new = {pid_of(base) for _ in range(20)}
    assert only_new == fresh
    # A new file in a new folder under the glob's root is seen as well (the watch grows with the tree).
    (app / "src" / "Http").mkdir()
    (app / "src" / "Http" / "Kernel.php").write_text("<?php\n")
    pids_until(base, lambda seen: bool(seen - only_new), "a worker started after the second change")
