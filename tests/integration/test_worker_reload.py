"""SIGHUP on a real twistd fephp serving PHP workers: new workers boot before the old ones stop, and a load through it loses nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.daemon import answers, get, listening_on, start_daemon, wait_for
from tests.support.load import HTTPLoad
from fephp.process.binaries import find_php
from tests.support.processes import processes_with, require_binary
from tests.support.worker_pipes import php_cli, require_php_files

pytestmark = pytest.mark.php

APP = Path(__file__).resolve().parent.parent / "php" / "workers" / "app.php"


def write_worker_config(tmp_path: Path, server: str, worker: str, rest: str = "") -> tuple[Path, str]:
    """fephp.yaml in *tmp_path* serving public/ (an index.php the workers stand for) on port 0 with PHP workers running
    APP, the *server* lines after server.root, the *worker* lines after php.worker.command, then *rest*: its path and
    text."""
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.php").write_text("<?php // served by the workers\n")
    config = tmp_path / "fephp.yaml"
    text = f"""
server:
  listen: ["tcp:0:interface=127.0.0.1"]
  root: {root}
{server}php:
  worker:
    script: {APP}
    command: [{php_cli()}]
{worker}{rest}"""
    config.write_text(text)
    return config, text


@pytest.mark.parametrize("match", ["", "\n    match: [/hello]"], ids=["workers-only", "mixed"])
def test_sighup_under_load_replaces_the_workers_and_drops_nothing(tmp_path: Path, match: str) -> None:
    """A steady load runs through a reload: every request answered, by the old workers before and new ones after.

    Workers alone, and in a mixed site where ``match`` sends /hello to them and the rest to a managed php-fpm.
    """
    if match:
        require_binary(find_php("php-fpm"), "php-fpm")
    require_php_files(["Nyholm/Psr7/autoload.php"], "nyholm/psr7 (php-nyholm-psr7)")
    config, _ = write_worker_config(tmp_path, "  shutdown_grace: 5\n", f"    count: 2{match}\n")
    pidfile, pid = start_daemon(tmp_path, config)
    try:
        (port,) = listening_on(pid)
        url = f"http://127.0.0.1:{port}/hello"
        wait_for(lambda: answers(url), "the listener")
        before = set(processes_with(str(APP)))
        assert len(before) == 2
        load = HTTPLoad(None, ("127.0.0.1", port), "/hello", total=5000, concurrency=4, timeout=10.0, within=120.0).start()
        wait_for(lambda: load.completed >= 200, "the first 200 answers", within=60)
        reloaded_at = time.monotonic()
        os.kill(pid, signal.SIGHUP)
        log = tmp_path / "fephp.log"
        wait_for(lambda: "reload: serving the configuration" in log.read_text(), "the reload to finish", within=60)
        done_at = time.monotonic()
        seen = load.completed
        wait_for(lambda: load.completed >= seen + 200, "200 answers after the reload", within=60)
        load.stop()
        outcomes = load.wait()
        failed = [o for o in outcomes if not o.ok]
        print(f"\nworker reload: {len(outcomes)} requests, {len(failed)} failed, the reload took {done_at - reloaded_at:.2f} s")
        assert failed == []
        old = {json.loads(o.body)["pid"] for o in outcomes if o.ended < reloaded_at}
        new = {json.loads(o.body)["pid"] for o in outcomes if o.started > done_at}
        assert old == before
        assert len(new) == 2 and not new & before
        wait_for(lambda: set(processes_with(str(APP))) == new, "the old workers to exit")
        status, body = get(url)
        assert status == 200 and json.loads(body)["pid"] in new
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")
        wait_for(lambda: not processes_with(str(APP)), "no worker left")


def test_workers_crashing_at_boot_in_worker_processes_make_readyz_fail(tmp_path: Path) -> None:
    """With server.workers: 2, PHP workers that exit before their handshake make the parent's /readyz answer 503."""
    require_php_files(["Nyholm/Psr7/autoload.php"], "nyholm/psr7 (php-nyholm-psr7)")
    config, _ = write_worker_config(
        tmp_path, "  workers: 2\n", '    count: 1\n    max_consecutive_failures: 2\n    env: {CRASH_AT_BOOT: "1"}\n',
        'admin:\n  listen: ["tcp:0:interface=127.0.0.2"]\n',
    )
    pidfile, pid = start_daemon(tmp_path, config)
    try:
        port, admin = listening_on(pid, 2)
        readyz = f"http://127.0.0.2:{admin}/readyz"
        wait_for(lambda: answers(readyz) and get(readyz)[0] == 503, "/readyz to fail")
        status, body = get(readyz)
        assert status == 503
        assert body.decode().startswith("php workers of worker process ") and body.decode().endswith(" fail to boot\n")
        assert get(f"http://127.0.0.1:{port}/hello")[0] == 502
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")


def test_a_reload_whose_workers_cannot_boot_changes_nothing(tmp_path: Path) -> None:
    """SIGHUP to a configuration whose workers exit at boot is undone: the running workers keep serving."""
    require_php_files(["Nyholm/Psr7/autoload.php"], "nyholm/psr7 (php-nyholm-psr7)")
    config, text = write_worker_config(tmp_path, "", "    count: 1\n    max_consecutive_failures: 2\n")
    pidfile, pid = start_daemon(tmp_path, config)
    try:
        (port,) = listening_on(pid)
        url = f"http://127.0.0.1:{port}/hello"
        wait_for(lambda: answers(url), "the listener")
        before = json.loads(get(url)[1])["pid"]
        config.write_text(text + '    env: {CRASH_AT_BOOT: "1"}\n')
        os.kill(pid, signal.SIGHUP)
        log = tmp_path / "fephp.log"
        wait_for(lambda: "keeping the running configuration" in log.read_text(), "the reload to be undone", within=60)
        assert "php workers: 2 workers in a row failed to boot" in log.read_text()
        status, body = get(url)
        assert status == 200 and json.loads(body)["pid"] == before
        assert processes_with(str(APP)) == [before]
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")
