"""The managed php-fpm, from fephp's side: started, watched, restarted and stopped by fephp.

Its configuration text comes from :mod:`fephp.process.fpmconfig`; the
binary and every setting are plain arguments (the server's build step reads
them from the configuration).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from .._deferreds import Waiters, chained
from .fpmconfig import PoolSpec, php_fpm_argv, render_config
from .supervisor import ChildProcess, SupervisedProcess, death_guard_argv, processes_titled

__all__ = ["ManagedPHPFPM", "ManagedPool", "PHPFPMError", "pool_socket_name"]


class PHPFPMError(Exception):
    """Managed php-fpm did not come up (it exited, timed out, or was stopped first)."""


#: php-fpm's own log levels, as its error_log lines spell them.
_FPM_LEVELS = {
    "DEBUG": LogLevel.debug,
    "NOTICE": LogLevel.info,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
    "ALERT": LogLevel.critical,
}
#: Bound on a buffered partial log line from php-fpm.
MAX_LOG_LINE = 8192


@dataclass(frozen=True)
class ManagedPool:
    """One pool of several in the managed php-fpm: one site's children, php.ini values and identity."""

    site: str
    children: int
    max_requests: int = 1000
    ini: Mapping[str, str] = field(default_factory=dict)
    user: Optional[str] = None
    group: Optional[str] = None


def pool_socket_name(site: str) -> str:
    """The socket file of *site*'s pool in the run directory (a worker process finds it beside the first)."""
    return "site-" + re.sub(r"[^A-Za-z0-9_.-]", "_", site) + ".sock"


class ManagedPHPFPM(Service):
    """A php-fpm master that fephp starts, watches, restarts and stops.

    It listens on a UNIX socket (:attr:`socket_path`) in a private run
    directory (mode 0700) made at construction and removed when the service
    stops.  :meth:`ready` fires once a connect to the socket succeeds.  A
    php-fpm that exits unexpectedly is restarted by its
    :class:`~fephp.process.supervisor.SupervisedProcess` after a backoff
    that doubles from *restart_delay* up to *max_restart_delay* and starts
    again once php-fpm is ready.  Its error log (its stderr) goes to
    twisted.logger.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        binary: str,
        children: int = 16,
        max_requests: int = 1000,
        ini: Optional[Mapping[str, str]] = None,
        run_dir_parent: Optional[str] = None,
        ready_timeout: float = 10.0,
        stop_grace: float = 10.0,
        restart_delay: float = 0.5,
        max_restart_delay: float = 30.0,
        probe_interval: float = 0.05,
        pools: Optional[Sequence[ManagedPool]] = None,
    ) -> None:
        self._reactor = reactor
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.probe_interval = probe_interval
        # Unique, so that children orphaned by a killed master can be told apart
        # from any other php-fpm on the host by their process title.
        self.pool_name = "fephp_" + secrets.token_hex(4)
        self.run_dir = tempfile.mkdtemp(prefix="fephp-fpm-", dir=run_dir_parent)
        self.config_path = os.path.join(self.run_dir, "php-fpm.conf")
        if pools:
            # Several sites: one [pool] each, named after the site, with its own socket.
            specs = [
                PoolSpec(
                    f"{self.pool_name}_{re.sub(r'[^A-Za-z0-9_]', '_', p.site)}",
                    os.path.join(self.run_dir, pool_socket_name(p.site)),
                    max_children=p.children,
                    max_requests=p.max_requests,
                    php_admin_values=dict(p.ini),
                    user=p.user,
                    group=p.group,
                )
                for p in pools
            ]
            #: Each site's socket, by site name.
            self.sockets = {p.site: spec.listen for p, spec in zip(pools, specs)}
        else:
            specs = [PoolSpec(
                self.pool_name,
                os.path.join(self.run_dir, "php-fpm.sock"),
                max_children=children,
                max_requests=max_requests,
                php_admin_values=dict(ini or {}),
            )]
            self.sockets = {}
        self._pool_names = [spec.name for spec in specs]
        #: The (first) pool's socket.
        self.socket_path = specs[0].listen
        self._socket_paths = [spec.listen for spec in specs]
        # php-fpm opens its error_log as a file; /proc/self/fd/2 is its stderr,
        # the pipe fephp reads, so no log file has to be tailed.
        text = render_config(
            specs, pid_file=os.path.join(self.run_dir, "php-fpm.pid"), error_log="/proc/self/fd/2"
        )
        with open(self.config_path, "w") as f:
            f.write(text)
        self._supervised = SupervisedProcess(
            reactor,
            "php-fpm",
            self._spawn,
            backoff=backoffPolicy(restart_delay, max_restart_delay, 2.0, jitter=lambda: 0.0),
            # php-fpm ends its children on SIGTERM; one that hangs gets SIGKILL.
            stop_grace=stop_grace,
            on_exit=self._died,
        )
        self._is_ready = False
        self._waiters: Waiters[None] = Waiters()
        self._probe: Any = None  # IDelayedCall
        self._stopped = False
        self._stopping: Optional[Deferred[None]] = None

    def socket_for(self, site: str) -> str:
        """The socket of *site*'s pool (the one socket when there are no per-site pools)."""
        return self.sockets.get(site, self.socket_path)

    @property
    def pid(self) -> Optional[int]:
        """The running master's process id."""
        return self._supervised.pid

    @property
    def stop_grace(self) -> float:
        """Seconds between SIGTERM and SIGKILL when stopping."""
        return self._supervised.stop_grace

    @property
    def restarts(self) -> int:
        """How many times php-fpm was started again after it died."""
        return self._supervised.restarts

    def ready(self) -> "Deferred[None]":
        """Fires when php-fpm accepts connections; fails with PHPFPMError if it exits or times out first."""
        if self._is_ready:
            return succeed(None)
        return self._waiters.wait()

    # -- the service ------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self._supervised.start()

    def stopService(self) -> "Deferred[None]":  # noqa: N802 - Twisted's name
        super().stopService()
        if self._stopped:
            return succeed(None)
        if self._stopping is None:
            self._cancel_probe()
            self._waiters.fail(PHPFPMError("php-fpm is being stopped"))
            if self.pid is not None:
                self.log.info("stopping php-fpm (pid {pid})", pid=self.pid)
            self._stopping = self._supervised.stop()
            self._stopping.addCallback(self._finish_stop)
        return chained(self._stopping)

    def _finish_stop(self, _: object) -> None:
        self._kill_orphans()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._stopped = True
        self.log.info("php-fpm stopped")

    # -- the process ----------------------------------------------------------------

    def _spawn(self) -> "_FPMProcess":
        self._is_ready = False
        self._kill_orphans()
        for path in self._socket_paths:
            try:
                os.unlink(path)  # php-fpm refuses a socket another instance answers on
            except FileNotFoundError:
                pass
        process = _FPMProcess()
        argv = death_guard_argv(php_fpm_argv(self.binary, self.config_path))
        try:
            self._reactor.spawnProcess(
                process,
                argv[0],
                argv,
                # Not fephp's environment: NOTIFY_SOCKET would let php-fpm tell
                # systemd it is the service's main process.
                env={"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")},
                path=self.run_dir,
            )
        except Exception as e:
            self._waiters.fail(PHPFPMError(f"cannot start php-fpm: {e}"))
            raise OSError(f"{self.binary}: {e}") from e
        self.log.info("php-fpm started (pid {pid}), {socket}", pid=process.pid, socket=self.socket_path)
        deadline = self._reactor.seconds() + self.ready_timeout
        self._probe = self._reactor.callLater(0, self._check_ready, process, deadline)
        return process

    def _check_ready(self, process: "_FPMProcess", deadline: float) -> None:
        self._probe = None
        if process is not self._supervised.process:
            return
        if all(_accepts(path) for path in self._socket_paths):
            self._is_ready = True
            self._supervised.stable()
            self.log.info("php-fpm ready (pid {pid})", pid=process.pid)
            self._waiters.fire(None)
        elif self._reactor.seconds() >= deadline:
            self.log.error("php-fpm not ready after {timeout} s, killing it", timeout=self.ready_timeout)
            self._waiters.fail(PHPFPMError(f"php-fpm not ready after {self.ready_timeout} s"))
            process.signal("KILL")
        else:
            self._probe = self._reactor.callLater(self.probe_interval, self._check_ready, process, deadline)

    def _died(self, process: ChildProcess, reason: Failure) -> None:
        self._is_ready = False
        self._cancel_probe()
        self.log.error(
            "php-fpm (pid {pid}) exited unexpectedly: {reason}", pid=process.pid, reason=reason.getErrorMessage()
        )
        self._waiters.fail(PHPFPMError(f"php-fpm exited: {reason.getErrorMessage()}"))
        self._kill_orphans()

    def _cancel_probe(self) -> None:
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
        self._probe = None

    def _kill_orphans(self) -> None:
        """SIGKILL children of our pool whose master is gone (they would keep the socket)."""
        for name in self._pool_names:
            for pid in processes_titled(f"php-fpm: pool {name}"):
                self.log.warn("killing orphaned php-fpm child {pid}", pid=pid)
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass


def _accepts(path: str) -> bool:
    """Whether a connect to the UNIX socket at *path* succeeds right now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            return True  # listening, its backlog full
        except OSError as e:
            return e.errno == errno.EAGAIN
        return True


class _FPMProcess(ChildProcess):
    """One php-fpm master: its output lines to the log at php-fpm's own levels."""

    log = Logger()
    max_line = MAX_LOG_LINE

    def line_received(self, fd: int, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            return
        level = LogLevel.warn  # children's own stderr, unknown lines
        if line.startswith("[") and "] " in line:
            rest = line.split("] ", 1)[1]
            name, sep, message = rest.partition(": ")
            if sep and name in _FPM_LEVELS:
                level, line = _FPM_LEVELS[name], message
        self.log.emit(level, "php-fpm: {line}", line=line, pid=self.pid)
