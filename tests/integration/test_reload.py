"""SIGHUP and SIGUSR1 on a real twistd fephp: a reload under a steady load drops nothing, a broken one changes nothing, logs reopen after logrotate."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import time
from pathlib import Path

import pytest

from fephp.process.binaries import find_php
from tests.support.daemon import (
    answers,
    daemonize,
    get,
    listening_on,
    start_daemon,
    wait_for,
)
from tests.support.load import HTTPLoad
from tests.support.processes import processes_with, require_binary
from tests.support.tls import self_signed_pem, served_der

pytestmark = pytest.mark.php


def _root(base: Path, name: str) -> Path:
    root = base / f"root-{name}"
    root.mkdir()
    (root / "which.php").write_text(f"<?php usleep(2000); echo '{name}';\n")
    (root / "hello.txt").write_text("hello\n")
    return root


def _config(path: Path, port: int, root: Path, pool: int, workers: int) -> None:
    path.write_text(
        f"""
server:
  listen: ["tcp:{port}:interface=127.0.0.1"]
  root: {root}
  shutdown_grace: 5
  workers: {workers}
php:
  worker_pool_size: {pool}
logging:
  access_log: access.log
"""
    )


class Server:
    def __init__(self, tmp_path: Path, workers: int) -> None:
        require_binary(find_php("php-fpm"), "php-fpm")
        self.tmp = tmp_path
        self.workers = workers
        self.config = tmp_path / "fephp.yaml"
        _config(self.config, 0, _root(tmp_path, "A"), 2, workers)
        self.pidfile, self.pid = start_daemon(tmp_path, self.config)
        (self.port,) = listening_on(self.pid)
        wait_for(lambda: answers(self.url("/hello.txt")), "the listener")
        if workers > 1:
            wait_for(lambda: len(self.worker_pids()) == workers, "the workers")
        self.log = tmp_path / "fephp.log"
        # php-fpm retitles its master a moment after it starts.
        wait_for(lambda: len(_managed_masters(self)) == 1, "php-fpm's master")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        return sorted(processes_with(f"fephp.server.worker --config {self.config}"))

    def stop(self) -> None:
        if self.pidfile.exists():
            os.kill(self.pid, signal.SIGTERM)
            wait_for(lambda: not self.pidfile.exists(), "the pidfile to go")
            wait_for(lambda: not processes_with(str(self.config)), "no process left")


@pytest.fixture(params=[1, 2], ids=["single", "workers"])
def server(request, tmp_path: Path):
    s = Server(tmp_path, request.param)
    yield s
    s.stop()


def _managed_masters(server: Server) -> list[int]:
    """php-fpm masters fephp runs for this server: children of fephp's process, titled as php-fpm titles its master."""
    found = []
    for pid in processes_with("php-fpm: master process"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == server.pid:
            found.append(pid)
    return sorted(found)


def test_reload_under_load_drops_nothing(server: Server) -> None:
    """A steady load runs through a reload that changes the document root and the php-fpm pool size: every request is answered, by A before and B after."""
    masters_before = _managed_masters(server)
    workers_before = server.worker_pids()
    assert len(masters_before) == 1
    load = HTTPLoad(None, ("127.0.0.1", server.port), "/which.php", total=40000, concurrency=4, timeout=10.0, within=300.0).start()
    wait_for(lambda: load.completed >= 300, "the first 300 answers", within=120)
    _config(server.config, 0, _root(server.tmp, "B"), 3, server.workers)  # the same listener string: the reload keeps its socket
    reloaded_at = time.monotonic()
    os.kill(server.pid, signal.SIGHUP)
    wait_for(lambda: "reload: serving the configuration" in server.log.read_text(), "the reload to finish", within=240)
    done_at = time.monotonic()
    seen_b = load.completed
    wait_for(lambda: load.completed >= seen_b + 300, "300 answers after the reload", within=120)
    load.stop()
    outcomes = load.wait()
    assert len(outcomes) == load.started
    failed = [o for o in outcomes if not o.ok]
    before = {o.body for o in outcomes if o.ended < reloaded_at}
    after = {o.body for o in outcomes if o.started > done_at}
    print(
        f"\nreload ({'workers' if server.workers > 1 else 'single'}): {len(outcomes)} requests, {len(failed)} failed,"
        f" {outcomes[-1].ended - outcomes[0].started:.1f} s of load, the reload took {done_at - reloaded_at:.2f} s"
    )
    assert failed == []
    # Before the signal the old root answered, once the reload is over the new one.
    assert (before, after) == ({b"A"}, {b"B"})
    masters_after = _managed_masters(server)
    assert len(masters_after) == 1 and masters_after != masters_before  # a new php-fpm took over, the old one stopped
    if server.workers > 1:
        workers_after = server.worker_pids()
        assert len(workers_after) == server.workers and not set(workers_after) & set(workers_before)
    assert get(server.url("/which.php")) == (200, b"B")


def test_a_broken_config_changes_nothing(server: Server) -> None:
    """SIGHUP with a configuration that does not validate logs why and leaves the same processes serving the same site."""
    masters = _managed_masters(server)
    workers = server.worker_pids()
    text = server.config.read_text()
    server.config.write_text(text.replace("worker_pool_size: 2", "worker_pool_size: many"))
    os.kill(server.pid, signal.SIGHUP)
    wait_for(lambda: "reload: the configuration is not valid, keeping the running one" in server.log.read_text(), "the refusal")
    assert "php.worker_pool_size: must be an integer, not the string 'many'" in server.log.read_text()
    assert get(server.url("/which.php")) == (200, b"A")
    assert _managed_masters(server) == masters
    assert server.worker_pids() == workers
    assert server.pidfile.exists() and int(server.pidfile.read_text()) == server.pid


def test_sigusr1_reopens_the_logs_after_logrotate(server: Server) -> None:
    """After the access log and fephp's log are moved away, SIGUSR1 makes fephp write new lines to new files at the paths."""
    access = server.tmp / "access.log"
    assert get(server.url("/which.php?before=1"))[0] == 200
    wait_for(lambda: access.exists() and "before=1" in access.read_text(), "the first access line")
    access.rename(server.tmp / "access.log.1")
    server.log.rename(server.tmp / "fephp.log.1")
    os.kill(server.pid, signal.SIGUSR1)
    wait_for(lambda: server.log.exists() and "SIGUSR1 received: log files reopened" in server.log.read_text(), "the new fephp.log")
    # The workers reopen when the parent's command reaches them: poll until a line lands.
    deadline = time.monotonic() + 20
    while not (access.exists() and "after=1" in access.read_text()):
        assert time.monotonic() < deadline, "no access line in the new file"
        assert get(server.url("/which.php?after=1"))[0] == 200
        time.sleep(0.2)
    assert "after=1" not in (server.tmp / "access.log.1").read_text()


@pytest.mark.parametrize("engine", ["pyopenssl", "stdlib"])
def test_a_reload_reads_the_tls_certificate_again(tmp_path: Path, engine: str) -> None:
    """An ssl: listener (either server.tls_engine) keeps its port across a reload and serves the certificate now in the file."""
    require_binary(find_php("php-fpm"), "php-fpm")
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    pem = tmp_path / "server.pem"
    shutil.copy(self_signed_pem(tmp_path / "old"), pem)
    root = _root(tmp_path, "A")
    config = tmp_path / "fephp.yaml"
    config.write_text(
        f'server:\n  tls_engine: {engine}\n  listen: ["ssl:0:interface=127.0.0.1:privateKey={pem}"]\n  root: {root}\n'
        "  shutdown_grace: 5\n"
        "php:\n  worker_pool_size: 2\n"
    )
    pidfile = daemonize(tmp_path, config)
    log = tmp_path / "fephp.log"
    try:
        wait_for(pidfile.exists, "the pidfile")
        pid = int(pidfile.read_text())
        (port,) = listening_on(pid)

        def served() -> str:
            return _served_certificate(port)

        wait_for(lambda: _answers_tls(port), "the TLS listener")
        before = served()
        assert before.strip() in pem.read_text()
        shutil.copy(self_signed_pem(tmp_path / "new"), pem)  # as certbot renews it, in place
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "reload: serving the configuration" in log.read_text(), "the reload")
        after = served()
        assert after != before and after.strip() in pem.read_text()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
            wait_for(lambda: not pidfile.exists(), "the pidfile to go")


def _served_certificate(port: int) -> str:
    """The certificate the TLS listener on *port* presents, as PEM (ssl.get_server_certificate's timeout is 3.10's)."""
    return ssl.DER_cert_to_PEM_cert(served_der(port))


def _answers_tls(port: int) -> bool:
    try:
        _served_certificate(port)
        return True
    except OSError:
        return False
