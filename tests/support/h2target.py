"""The servers the HTTP/2 attacks hit, from the attacker's side: fephp as its own process (``twistd -n fephp``) and nginx, both over TLS with ALPN h2.

fephp runs as a process of its own, not in pytest's, so that its memory
(``VmRSS``) and CPU time (``utime + stime``) are its alone and not the
attacking threads'::

    front = FephpH2(tmp_path / "fephp", root, php_fpm.unix_path, timeouts={"client_send": 1}).start()
    front.port, front.rss_mib(), front.cpu_seconds(), front.problems()
    front.stop()

It listens on ``ssl:0`` and the port it got is read from its log
("FrontSite (TLS) starting on PORT").  :class:`NginxH2` is the same
shape around :class:`tests.support.nginx.Nginx` with ``ssl http2``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from tests.support import REPO
from tests.support.inprocess import tls_engine
from tests.support.nginx import Nginx, find_nginx
from tests.support.tls import self_signed_pem

__all__ = ["FephpH2", "NginxH2", "cpu_seconds", "rss_mib"]

#: The fephp source tree that runs (its folder goes first on PYTHONPATH): this
#: checkout unless ``FEPHP_SOURCE`` names another, e.g. an export of the
#: commit before a fix, to see the attacks succeed against it.
SOURCE = Path(os.environ.get("FEPHP_SOURCE") or REPO)
#: fephp on PyPy runs with the garbage collector settings of
#: etc/fephp-pypy.service; below PYPY_GC_MIN the heap is never collected
#: in full, so up to that much garbage may sit in its RSS.
PYPY_GC = {"PYPY_GC_NURSERY": "32MB", "PYPY_GC_MIN": "64MB"}
PYPY_GC_SLACK_MIB = 64.0
#: How long a server may take to listen after it was started.
READY_WITHIN = 30.0
_LISTENING = re.compile(r"\(TLS\) starting on (\d+)")


def rss_mib(pid: int) -> float:
    """The resident memory of process *pid* (VmRSS), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) that process *pid* has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _implementation(python: str) -> str:
    """``sys.implementation.name`` of the interpreter *python*: "cpython" or "pypy"."""
    if python == sys.executable:
        return sys.implementation.name
    out = subprocess.run([python, "-c", "import sys; print(sys.implementation.name)"], capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


class FephpH2:
    """``twistd -n fephp`` with one ``ssl:0`` listener on 127.0.0.1 over the php-fpm at *fpm_socket* (a UNIX socket's path).

    *timeouts* and *limits* are merged into the config; *python* runs it
    (another interpreter for PyPy).  States: written, running, stopped.
    """

    def __init__(
        self,
        workdir: Path,
        root: Path,
        fpm_socket: str,
        *,
        timeouts: Optional[Mapping[str, Any]] = None,
        limits: Optional[Mapping[str, Any]] = None,
        pool_size: int = 4,
        python: str = sys.executable,
    ) -> None:
        self.name = "fephp"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.pem = self_signed_pem(workdir)
        self.log = workdir / "fephp.log"
        self.config = workdir / "fephp.yaml"
        self.python = python
        self.pypy = _implementation(python) == "pypy"
        #: What the garbage collector may hold uncollected, in MiB (PyPy's PYPY_GC_MIN, 0 on CPython).
        self.gc_slack_mib = PYPY_GC_SLACK_MIB if self.pypy else 0.0
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.port = 0
        config = {
            "server": {
                "listen": [f"ssl:0:interface=127.0.0.1:privateKey={self.pem}"],
                "tls_engine": tls_engine(),  # FEPHP_TLS_ENGINE, as the in-process fronts
                "root": str(root),
                "shutdown_grace": 1,
            },
            "php": {"fpm_socket": f"unix:path={fpm_socket}", "worker_pool_size": pool_size},
            "timeouts": {"client_body": 3, "client_send": 3, "keepalive": 3, **(timeouts or {})},
            "limits": dict(limits or {}),
            "logging": {"level": "info"},
            "compression": {"enabled": False},
        }
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> "FephpH2":
        """Start fephp; return once its log says which port it listens on."""
        argv = [self.python, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "fephp", "--config", str(self.config)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                argv, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=f"{SOURCE}{os.pathsep}{REPO}", **(PYPY_GC if self.pypy else {})),
            )
        deadline = time.monotonic() + READY_WITHIN
        while not self.port:
            found = _LISTENING.search(self.log_text())
            if found:
                self.port = int(found.group(1))
            elif self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fephp did not listen: {self.log_text()[-2000:]}")
            else:
                time.sleep(0.05)  # polling another process's log, bounded by the deadline
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def problems(self) -> list[str]:
        """The log's lines of unhandled errors and tracebacks (each the line and the 3 after it)."""
        lines = self.log_text().splitlines()
        marks = ("Traceback (most recent call last)", "Unhandled", "[Failure instance", "#critical]", "#error]")
        return ["\n".join(lines[i : i + 4]) for i, line in enumerate(lines) if any(m in line for m in marks)]

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers past 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class NginxH2:
    """nginx (``listen ... ssl http2``, one worker) over the php-fpm at *fpm_socket*, with 3 s client timeouts as fephp's above."""

    def __init__(self, workdir: Path, root: Path, fpm_socket: str) -> None:
        self.name = "nginx"
        workdir.mkdir(parents=True, exist_ok=True)
        pem = self_signed_pem(workdir)
        self.nginx = Nginx(
            workdir, root, fpm_socket, find_nginx(), deny=(),
            listen_options="ssl http2",
            server_extra=(
                f"        ssl_certificate {pem};\n        ssl_certificate_key {pem};\n"
                "        client_header_timeout 3s;\n        client_body_timeout 3s;\n"
                "        send_timeout 3s;\n        keepalive_timeout 3s;\n"
            ),
        )

    @property
    def port(self) -> int:
        return self.nginx.port

    def start(self) -> "NginxH2":
        self.nginx.start()
        return self

    def _worker(self) -> int:
        assert self.nginx.process is not None
        children = Path(f"/proc/{self.nginx.process.pid}/task/{self.nginx.process.pid}/children").read_text().split()
        return int(children[0])

    def rss_mib(self) -> float:
        """The worker's resident memory (the master serves nothing)."""
        return rss_mib(self._worker())

    def cpu_seconds(self) -> float:
        return cpu_seconds(self._worker())

    def problems(self) -> list[str]:
        return []

    def stop(self) -> None:
        self.nginx.stop()
