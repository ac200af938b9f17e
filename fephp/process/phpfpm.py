"""The managed php-fpm, from fephp's side: started, watched, restarted and stopped by fephp.

Its configuration text comes from :mod:`fephp.process.fpmconfig`; the
binary and every setting are plain arguments (the server's build step reads
them from the configuration).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
import tempfile
from typing import Any, Mapping, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from .fpmconfig import PoolSpec, php_fpm_argv, render_config
from .supervisor import death_guard_argv, processes_titled

__all__ = ["ManagedPHPFPM", "PHPFPMError"]


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


class ManagedPHPFPM(Service):
    """A php-fpm master that fephp starts, watches, restarts and stops.

    It listens on a UNIX socket (:attr:`socket_path`) in a private run
    directory (mode 0700) made at construction and removed when the service
    stops.  :meth:`ready` fires once a connect to the socket succeeds.  A
    php-fpm that exits unexpectedly is restarted after a backoff that doubles
    from *restart_delay* up to *max_restart_delay* and resets once it is
    ready again.  Its error log (its stderr) goes to twisted.logger.
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
    ) -> None:
        self._reactor = reactor
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.probe_interval = probe_interval
        # Unique, so that workers orphaned by a killed master can be told apart
        # from any other php-fpm on the host by their process title.
        self.pool_name = "fephp_" + secrets.token_hex(4)
        self.run_dir = tempfile.mkdtemp(prefix="fephp-fpm-", dir=run_dir_parent)
        self.socket_path = os.path.join(self.run_dir, "php-fpm.sock")
        self.config_path = os.path.join(self.run_dir, "php-fpm.conf")
        pool = PoolSpec(
            self.pool_name,
            self.socket_path,
            max_children=children,
            max_requests=max_requests,
            php_admin_values=dict(ini or {}),
        )
        # php-fpm opens its error_log as a file; /proc/self/fd/2 is its stderr,
        # the pipe fephp reads, so no log file has to be tailed.
        text = render_config(
            [pool], pid_file=os.path.join(self.run_dir, "php-fpm.pid"), error_log="/proc/self/fd/2"
        )
        with open(self.config_path, "w") as f:
            f.write(text)
        self.restarts = 0
        self._process: Optional[_FPMProcess] = None
        self._is_ready = False
        self._waiters: list[Deferred[None]] = []
        self._failures = 0
        self._probe: Any = None  # IDelayedCall
        self._restart: Any = None
        self._stopping = False
        self._stopped = False
        self._stop_waiters: list[Deferred[None]] = []

    @property
    def pid(self) -> Optional[int]:
        """The running master's process id."""
        return self._process.pid if self._process is not None else None

    def ready(self) -> "Deferred[None]":
        """Fires when php-fpm accepts connections; fails with PHPFPMError if it exits or times out first."""
        if self._is_ready:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    # -- the service ------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self._spawn()

    def stopService(self) -> "Deferred[None]":  # noqa: N802 - Twisted's name
        super().stopService()
        if self._stopped:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._stop_waiters.append(done)
        if not self._stopping:
            self._stopping = True
            self._cancel_timers()
            self._fail_waiters("php-fpm is being stopped")
            process = self._process
            if process is None:
                self._finish_stop()
            else:
                self.log.info("stopping php-fpm (pid {pid})", pid=process.pid)
                process.signal("TERM")
                # php-fpm ends its children on SIGTERM; one that hangs gets SIGKILL.
                process.kill_call = self._reactor.callLater(self.stop_grace, process.signal, "KILL")
        return done

    def _finish_stop(self) -> None:
        self._kill_orphans()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._stopped = True
        self.log.info("php-fpm stopped")
        waiters, self._stop_waiters = self._stop_waiters, []
        for d in waiters:
            d.callback(None)

    # -- the process ----------------------------------------------------------------

    def _spawn(self) -> None:
        self._restart = None
        self._is_ready = False
        self._kill_orphans()
        try:
            os.unlink(self.socket_path)  # php-fpm refuses a socket another instance answers on
        except FileNotFoundError:
            pass
        process = _FPMProcess(self)
        try:
            argv = death_guard_argv(php_fpm_argv(self.binary, self.config_path))
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
            self.log.error("cannot start php-fpm {binary}: {error}", binary=self.binary, error=str(e))
            self._fail_waiters(f"cannot start php-fpm: {e}")
            self._schedule_restart()
            return
        self._process = process
        self.log.info("php-fpm started (pid {pid}), {socket}", pid=process.pid, socket=self.socket_path)
        deadline = self._reactor.seconds() + self.ready_timeout
        self._probe = self._reactor.callLater(0, self._check_ready, process, deadline)

    def _check_ready(self, process: "_FPMProcess", deadline: float) -> None:
        self._probe = None
        if process is not self._process:
            return
        if _accepts(self.socket_path):
            self._is_ready = True
            self._failures = 0
            self.log.info("php-fpm ready (pid {pid})", pid=process.pid)
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)
        elif self._reactor.seconds() >= deadline:
            self.log.error("php-fpm not ready after {timeout} s, killing it", timeout=self.ready_timeout)
            self._fail_waiters(f"php-fpm not ready after {self.ready_timeout} s")
            process.signal("KILL")
        else:
            self._probe = self._reactor.callLater(self.probe_interval, self._check_ready, process, deadline)

    def _exited(self, process: "_FPMProcess", reason: Failure) -> None:
        if process.kill_call is not None and process.kill_call.active():
            process.kill_call.cancel()
        if process is not self._process:
            return
        self._process = None
        self._is_ready = False
        if self._stopping:
            self._finish_stop()
            return
        self.log.error(
            "php-fpm (pid {pid}) exited unexpectedly: {reason}", pid=process.pid, reason=reason.getErrorMessage()
        )
        self._fail_waiters(f"php-fpm exited: {reason.getErrorMessage()}")
        self._kill_orphans()
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        if not self.running:
            return
        delay = min(self.max_restart_delay, self.restart_delay * 2**self._failures)
        self._failures += 1
        self.restarts += 1
        self.log.warn("restarting php-fpm in {delay} s", delay=delay)
        self._restart = self._reactor.callLater(delay, self._spawn)

    def _fail_waiters(self, message: str) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(PHPFPMError(message))

    def _cancel_timers(self) -> None:
        for call in (self._probe, self._restart):
            if call is not None and call.active():
                call.cancel()
        self._probe = self._restart = None

    def _kill_orphans(self) -> None:
        """SIGKILL workers of our pool whose master is gone (they would keep the socket)."""
        for pid in processes_titled(f"php-fpm: pool {self.pool_name}"):
            self.log.warn("killing orphaned php-fpm worker {pid}", pid=pid)
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


class _FPMProcess(ProcessProtocol):
    """One php-fpm master: its output lines to the log, its exit to the service."""

    log = Logger()

    def __init__(self, service: ManagedPHPFPM) -> None:
        self._service = service
        self._buffers = {1: b"", 2: b""}
        self.kill_call: Any = None
        self.exited = False
        self._pid: Optional[int] = None

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        # Twisted forgets the pid once the child is reaped; the log of its
        # death still needs it.
        self._pid = getattr(transport, "pid", None)
        super().makeConnection(transport)

    @property
    def pid(self) -> Optional[int]:
        return getattr(self.transport, "pid", None) or self._pid

    def signal(self, name: str) -> None:
        if self.exited:
            return
        try:
            transport: Any = self.transport
            transport.signalProcess(name)
        except Exception:
            pass  # exited, not yet reaped

    def childDataReceived(self, fd: int, data: bytes) -> None:  # noqa: N802 - Twisted's name
        buffered = self._buffers.get(fd, b"") + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > MAX_LOG_LINE:
            lines.append(rest)
            rest = b""
        self._buffers[fd] = rest
        for line in lines:
            self._log_line(line)

    def _log_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            return
        level = LogLevel.warn  # workers' own stderr, unknown lines
        if line.startswith("[") and "] " in line:
            rest = line.split("] ", 1)[1]
            name, sep, message = rest.partition(": ")
            if sep and name in _FPM_LEVELS:
                level, line = _FPM_LEVELS[name], message
        self.log.emit(level, "php-fpm: {line}", line=line, pid=self.pid)

    def processExited(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        # Not processEnded: orphaned workers may hold our stderr pipe open.
        self.exited = True
        for fd, rest in self._buffers.items():
            if rest:
                self._log_line(rest)
        self._buffers = {1: b"", 2: b""}
        self._service._exited(self, reason)
