"""server.workers: the supervisor on a fake reactor, then real twistd with two workers sharing one port."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from fephp.process.binaries import find_php
from tests.support.daemon import (
    daemonize,
    listening_on,
    wait_for,
    worker_processes,
    zombie,
)
from tests.support.docroot import make_docroot
from tests.support.processes import children_of, processes_with, require_binary

# -- the supervisor on a fake reactor ---------------------------------------------------


# -- real twistd with two workers -------------------------------------------------------


def socket_owner(conn: http.client.HTTPConnection, server_port: int, candidates: list[int]) -> int | None:
    """Which of *candidates* holds the server side of *conn* (from /proc/net/tcp and /proc/PID/fd)."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                inode = fields[9]
    assert inode is not None, "the server side of the connection is in /proc/net/tcp"
    for pid in candidates:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def served_by_only(worker: int, workers: list[int], port: int, count: int = 5) -> list[int]:
    """With every other worker stopped (SIGSTOP), *count* PHP requests on new connections; the owners of their server sockets."""
    others = [w for w in workers if w != worker]
    owners = []
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(count):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/status.php")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"status body")
                owner = socket_owner(conn, port, workers)
                assert owner is not None
                owners.append(owner)
            finally:
                conn.close()
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)
    return owners


def _get(conn: http.client.HTTPConnection, url: str) -> tuple[int, bytes]:
    """GET *url* on *conn*, then close it: the status and the body."""
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_unix(path: str, url: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("localhost", timeout=10)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    conn.sock = sock
    return _get(conn, url)


def get_tcp(port: int, url: str) -> tuple[int, bytes]:
    return _get(http.client.HTTPConnection("127.0.0.1", port, timeout=10), url)


def answers(port: int) -> bool:
    try:
        return get_tcp(port, "/static/hello.txt")[0] == 200
    except OSError:
        return False


@pytest.mark.php
def test_two_workers_share_the_port_restart_and_stop_cleanly(tmp_path: Path) -> None:
    """Both workers serve PHP from one port; a SIGKILLed worker is replaced; SIGTERM leaves no pidfile, socket or process."""
    require_binary(find_php("php-fpm"), "php-fpm")
    root = make_docroot(tmp_path)
    unix_path = tmp_path / "http.sock"
    config = tmp_path / "fephp.yaml"
    config.write_text(
        f"""
server:
  listen: ["tcp:0:interface=127.0.0.1", "unix:{unix_path}"]
  root: {root}
  workers: 2
  shutdown_grace: 5
php:
  worker_pool_size: 4
logging:
  access_log: access.log
"""
    )
    pidfile = tmp_path / "fephp.pid"
    logfile = tmp_path / "fephp.log"
    daemonize(tmp_path, config)
    parent = 0
    try:
        wait_for(pidfile.exists, "the pidfile")
        parent = int(pidfile.read_text())
        (port,) = listening_on(parent)  # the parent binds, the workers inherit it
        workers = worker_processes(parent)
        wait_for(lambda: len(children_of(parent, "php-fpm: master")) == 1, "php-fpm")
        masters = children_of(parent, "php-fpm: master")
        php_fpm = masters + children_of(masters[0], "php-fpm: pool")
        assert len(php_fpm) == 1 + 4, "one php-fpm, run by the parent, with worker_pool_size children for all workers"
        wait_for(lambda: answers(port), "the listener")

        for worker in workers:
            assert served_by_only(worker, workers, port) == [worker] * 5
        assert get_unix(str(unix_path), "/status.php") == (200, b"status body")

        killed = workers[0]
        os.kill(killed, signal.SIGKILL)
        # kill() returns before the signal lands: a worker still running could
        # answer one more request (its access-log line then lost with it).
        wait_for(lambda: zombie(killed) or not os.path.exists(f"/proc/{killed}"), "the killed worker to die")
        for _ in range(20):  # the other worker serves while the first is replaced
            assert get_tcp(port, "/status.php") == (200, b"status body")
        wait_for(
            lambda: len(children_of(parent, "fephp.server.worker")) == 2 and killed not in children_of(parent, "fephp.server.worker"),
            "the killed worker to be replaced",
        )
        replaced = children_of(parent, "fephp.server.worker")
        new = next(pid for pid in replaced if pid not in workers)
        assert served_by_only(new, replaced, port) == [new] * 5
        assert f"worker 1 (pid {killed}) exited" in logfile.read_text()

        # A request in flight at SIGTERM is finished: the workers drain.
        slow: list[tuple[int, bytes]] = []
        client = threading.Thread(target=lambda: slow.append(get_tcp(port, "/sleep.php?ms=1500")))
        client.start()
        wait_for(lambda: any(_sleeping(pid) for pid in php_fpm), "PHP to be running the request")
        os.kill(parent, signal.SIGTERM)
        client.join(timeout=20)
        assert slow and slow[0][0] == 200 and slow[0][1].isdigit()
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")
        wait_for(lambda: zombie(parent), "the parent to exit")
        wait_for(lambda: not processes_with(str(config)), "no worker left")
        wait_for(lambda: all(zombie(pid) for pid in php_fpm), "php-fpm to exit")
        assert not unix_path.exists()
        access = (tmp_path / "access.log").read_text()
        # Every worker that stopped gracefully flushed its lines: the survivor's
        # 5 + 20 and the replacement's 5.  The SIGKILLed one may lose its buffer.
        assert 5 + 20 + 5 <= access.count('"GET /status.php HTTP/1.1" 200') <= 5 + 5 + 1 + 20 + 5
        assert '"GET /sleep.php?ms=1500 HTTP/1.1" 200' in access
    finally:
        if parent and not zombie(parent):
            os.kill(parent, signal.SIGKILL)


def _sleeping(pid: int) -> bool:
    """Whether *pid* is in a sleep call (a PHP child in usleep())."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "nanosleep" in f.read()
    except OSError:
        return False


def start_daemon(tmp_path: Path, workers: int) -> tuple[int, int, Path, Path]:
    """twistd fephp with *workers* workers in managed mode: (parent pid, port, config, pidfile), once it answers."""
    root = make_docroot(tmp_path)
    config = tmp_path / "fephp.yaml"
    config.write_text(
        f"server:\n  listen: [\"tcp:0:interface=127.0.0.1\"]\n  root: {root}\n  workers: {workers}\n"
        "php:\n  worker_pool_size: 2\n"
    )
    pidfile = tmp_path / "fephp.pid"
    daemonize(tmp_path, config)
    wait_for(pidfile.exists, "the pidfile")
    parent = int(pidfile.read_text())
    (port,) = listening_on(parent)  # the parent binds, the workers inherit it
    wait_for(lambda: answers(port), "the listener")
    return parent, port, config, pidfile


@pytest.mark.php
def test_killed_parent_leaves_no_worker_and_no_php_fpm(tmp_path: Path) -> None:
    """SIGKILL to the parent: the workers (parent-death signal, EOF) and php-fpm all exit by themselves."""
    require_binary(find_php("php-fpm"), "php-fpm")
    parent, port, config, _ = start_daemon(tmp_path, 2)
    try:
        wait_for(lambda: len(children_of(parent, "fephp.server.worker")) == 2, "two workers")
        wait_for(lambda: len(children_of(parent, "php-fpm: master")) == 1, "php-fpm")
        assert get_tcp(port, "/status.php") == (200, b"status body")
        master = children_of(parent, "php-fpm: master")[0]
        ours = children_of(parent, "fephp.server.worker") + [master] + children_of(master, "php-fpm: pool")
    finally:
        os.kill(parent, signal.SIGKILL)
    wait_for(lambda: all(zombie(pid) for pid in ours), "every worker and php-fpm process to exit")
    assert not processes_with(str(config))


