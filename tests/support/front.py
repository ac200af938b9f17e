"""fephp itself on a simulated host, from the test's side: a config file, ``twistd -n fephp``, its log, SIGHUP and a kill.

Used by the scale-out tests: a :class:`Front` runs on any
:class:`tests.support.netns.Host` (the root namespace, beside pytest, or a
namespace of its own) and listens on that host's address::

    front = Front(network.root, tmp_path / "front", port=8080, php={"backends": [...]}).start()
    network.http_get(front.address, "/who.php")
    front.reload(php={...})        # a new config file, then SIGHUP
    front.wait_log("taken out of service")
    front.kill()

The document root is tests/php/scale (copied): ``who.php`` answers
``PID REMOTE_ADDR`` after ``?ms=`` milliseconds, ``session.php`` counts a
PHP session's requests, ``health.txt`` is a static file for health checks.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from tests.support import PHP_DIR, REPO
from tests.support.netns import READY_WITHIN, Host, HostProcess, wait_until

__all__ = ["Front", "SCALE_SITE", "make_scale_root"]

SCALE_SITE = PHP_DIR / "scale"


def make_scale_root(base: Path) -> Path:
    """A fresh copy of tests/php/scale under *base*."""
    root = base / "root"
    if not root.exists():
        shutil.copytree(SCALE_SITE, root)
    return root


class Front:
    """One fephp (``twistd -n fephp``) on *host*, listening on the host's address at *port*.

    *listen* replaces the listener string (e.g. ``haproxy:tcp:...`` behind
    HAProxy); *php*, *timeouts*, *server* and *extra* are merged into the
    generated YAML.  States: not started, running, killed.
    """

    def __init__(
        self,
        host: Host,
        workdir: Path,
        *,
        port: int = 8080,
        listen: Optional[str] = None,
        php: Optional[Mapping[str, Any]] = None,
        timeouts: Optional[Mapping[str, Any]] = None,
        server: Optional[Mapping[str, Any]] = None,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.host = host
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.listen = listen or f"tcp:{port}:interface={host.address}"
        self.root = make_scale_root(workdir)
        self.config = workdir / "fephp.yaml"
        self.log = workdir / "fephp.log"
        self.process: Optional[HostProcess] = None
        self.write_config(php=php, timeouts=timeouts, server=server, extra=extra)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host.address, self.port)

    def write_config(
        self,
        *,
        php: Optional[Mapping[str, Any]] = None,
        timeouts: Optional[Mapping[str, Any]] = None,
        server: Optional[Mapping[str, Any]] = None,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> None:
        data: dict[str, Any] = {
            "server": {"listen": [self.listen], "root": str(self.root), "shutdown_grace": 2, **(server or {})},
            "php": dict(php or {}),
            "timeouts": dict(timeouts or {}),
            "logging": {"level": "info"},
            "compression": {"enabled": False},
        }
        data.update(extra or {})
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def start(self) -> "Front":
        """Start fephp and return once its listener accepts (and, with server.workers, each worker process serves)."""
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "fephp", "--config", str(self.config)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.process = self.host.spawn(argv, log=self.log, env=env, cwd=self.workdir)
        self.host.network.wait_connectable(self.address, self.process, within=READY_WITHIN * 2)
        workers = yaml.safe_load(self.config.read_text())["server"].get("workers", 1)
        if workers > 1:
            # The parent listens before its worker processes run: a connect
            # succeeds into the backlog long before anyone answers it.
            self.wait_log(" serving (pid ", within=READY_WITHIN * 2, count=workers)
        return self

    def reload(self, **sections: Any) -> None:
        """Write a new config (the sections given) and send SIGHUP."""
        self.write_config(**sections)
        assert self.process is not None
        self.process.signal(signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL fephp and everything it started (a managed php-fpm too), as a crash would."""
        if self.process is not None:
            self.process.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, text: str, within: float = READY_WITHIN, count: int = 1) -> None:
        """Return once *text* has appeared *count* times in fephp's log."""
        try:
            wait_until(lambda: self.log_text().count(text) >= count, f"{text!r} in fephp's log", within=within)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log_text()[-3000:]}") from None
