"""Running twistd fephp as a user would: a config file, a daemon, its pidfile and log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support import REPO
from tests.support.docroot import make_docroot
from tests.support.ports import wait_listening
from tests.support.processes import children_of

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


#: The public listener of :func:`write_config`: port 0, the port read back with :func:`listening_on`.
LISTEN = "tcp:0:interface=127.0.0.1"


def write_config(tmp_path: Path, php: str, logging: str = "") -> Path:
    """A config serving the test docroot on :data:`LISTEN` with the *php* section's lines; *logging* (and further sections) after."""
    root = make_docroot(tmp_path)
    config = tmp_path / "fephp.yaml"
    config.write_text(
        f"""
server:
  listen: ["{LISTEN}"]
  root: {root}
  shutdown_grace: 5
php:
{php}
  worker_pool_size: 2
logging:
  access_log: access.log
{logging}"""
    )
    return config


def daemonize(tmp_path: Path, config: Path, *twistd_options: str) -> Path:
    """``twistd [options] --pidfile --logfile fephp --config`` in *tmp_path*; its pidfile once twistd has forked."""
    pidfile = tmp_path / "fephp.pid"
    started = subprocess.run(
        [*TWISTD, *twistd_options, "--pidfile", str(pidfile), "--logfile", str(tmp_path / "fephp.log"),
         "fephp", "--config", str(config)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        timeout=60,
    )
    _started.append(pidfile)
    assert started.returncode == 0, started.stderr.decode()
    return pidfile



def start_daemon(tmp_path: Path, config: Path) -> tuple[Path, int]:
    """:func:`daemonize`, then its pidfile and pid once the daemon has written it."""
    pidfile = daemonize(tmp_path, config)
    wait_for(pidfile.exists, "the pidfile")
    return pidfile, int(pidfile.read_text())

#: The pidfiles of daemons started by the running test (tests/conftest.py stops what is left).
_started: list[Path] = []


def stop_leftovers(within: float = 20.0) -> list[int]:
    """SIGTERM, then SIGKILL after *within* seconds, every daemon of this test still running; returns their pids.

    A test stops its daemon itself; this is for one that failed before it
    could (its fixture never got the daemon), so that no twistd outlives it.
    """
    pids = []
    while _started:
        pidfile = _started.pop()
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            continue  # stopped already, or never wrote its pid
        if not _running(pid):
            continue  # killed by the test (a zombie whose pidfile stays)
        os.kill(pid, signal.SIGTERM)
        pids.append(pid)
        deadline = time.monotonic() + within
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
    return pids


def _running(pid: int) -> bool:
    """Whether *pid* is a live process (not gone, not a zombie nobody reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def listening_on(pid: int, count: int = 1) -> list[int]:
    """The TCP ports the daemon *pid* listens on, once there are *count*: in the order it bound them, server.listen's then admin.listen's."""
    return [port for _, port in wait_listening(pid, count)]


def wait_for(predicate, what: str, within: float = 20.0) -> None:
    """Poll *predicate* (an outside process's state) until true, failing after *within* seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def answers(url: str) -> bool:
    try:
        get(url)
        return True
    except OSError:
        return False


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def worker_processes(parent: int, count: int = 2) -> list[int]:
    """The pids of the *count* fephp worker processes of *parent* (server.workers), once they all run."""
    wait_for(lambda: len(children_of(parent, "fephp.server.worker")) == count, f"{count} workers")
    return children_of(parent, "fephp.server.worker")
