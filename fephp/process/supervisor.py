"""Keeping fephp's children alive, from the parent's side: one supervisor, the parent-death guard, finding processes by title.

:class:`SupervisedProcess` is the one restart loop (Twisted's backoffPolicy)
behind the managed php-fpm and the worker processes; :class:`ChildProcess`
is the ProcessProtocol both build on.

A child of fephp (php-fpm, a worker process) must not outlive it, even when
fephp is SIGKILLed and has no chance to stop it: on Linux the child asks the
kernel for a signal when its parent dies (``PR_SET_PDEATHSIG``), checking
right after that the parent is still the one that started it (it may have
died between fork and prctl).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any, Callable, NamedTuple, Optional

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._deferreds import Waiters

__all__ = [
    "DEFAULT_BACKOFF",
    "ChildProcess",
    "ProcessInfo",
    "SupervisedProcess",
    "death_guard_argv",
    "die_with_parent",
    "live_processes",
    "processes_titled",
]

#: PR_SET_PDEATHSIG, from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
#: Exit status of a guarded child whose parent was already gone (EX_SOFTWARE).
EXIT_ORPHANED = 70

#: Run before the guarded program is exec'd (same pid): ask Linux to SIGTERM
#: it when fephp dies, then check fephp is still its parent.  php-fpm ends
#: its children on SIGTERM.
_GUARD = (
    "import ctypes,os,sys\n"
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGTERM)}, 0, 0, 0)\n"
    f"if os.getppid() != int(sys.argv[1]): sys.exit({EXIT_ORPHANED})\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def death_guard_argv(argv: list[str]) -> list[str]:
    """*argv* behind the parent-death guard, where Linux provides it; *argv* itself elsewhere.

    For a program that is not Python (php-fpm): a short Python prelude sets
    the guard and execs it, so the pid the parent sees is the program's.
    """
    if not sys.platform.startswith("linux") or not sys.executable:
        return argv
    return [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), *argv]


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Have *signum* sent to this process when *parent* exits (Linux); exit now if it already has.

    For a Python child of fephp (a worker process), called first thing.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit("fephp: the parent process is gone")


class ProcessInfo(NamedTuple):
    """A process as Linux's ``/proc`` shows it."""

    pid: int
    #: The command line, or the title a process gave itself, NULs as spaces.
    cmdline: bytes
    #: ``/proc/PID/stat`` after the name: state, ppid, pgrp, ...
    stat: list[bytes]

    @property
    def ppid(self) -> int:
        return int(self.stat[1])

    @property
    def pgid(self) -> int:
        return int(self.stat[2])


def live_processes() -> list[ProcessInfo]:
    """Every process alive now (zombies left out), read from ``/proc``; one that ends meanwhile is skipped."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").strip()
        except (OSError, IndexError):
            continue
        if stat and stat[0] != b"Z":
            found.append(ProcessInfo(int(entry), cmdline, stat))
    return found


def processes_titled(title: str) -> list[int]:
    """Live processes whose command line, as ``/proc`` shows it, is exactly *title*.

    php-fpm's children retitle themselves ``php-fpm: pool NAME``; fephp names
    each managed pool uniquely, so this finds the children of a pool whose
    master is gone and nothing else on the host.
    """
    wanted = title.encode()
    return [p.pid for p in live_processes() if p.cmdline == wanted]


#: The restart delay after the n-th failure in a row: 0.5 s, doubling, at most 30 s.
DEFAULT_BACKOFF: Callable[[int], float] = backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0, jitter=lambda: 0.0)
#: Bound on a buffered partial line of a child's output.
MAX_LINE = 64 * 1024


class ChildProcess(ProcessProtocol):
    """A supervised child's ProcessProtocol, from the parent's side.

    Its pid is kept after the process is reaped (Twisted forgets it, a log
    line about its death still needs it); its output is cut into lines of at
    most :attr:`max_line` bytes for :meth:`line_received`; its exit goes to
    the :class:`SupervisedProcess` that started it.
    """

    #: Bound on a buffered partial line.
    max_line = MAX_LINE

    def __init__(self) -> None:
        self.supervisor: Optional[SupervisedProcess] = None
        self.exited = False
        self._pid: Optional[int] = None
        self._buffers: dict[int, bytes] = {}

    @property
    def pid(self) -> Optional[int]:
        return getattr(self.transport, "pid", None) or self._pid

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        self._pid = getattr(transport, "pid", None)
        super().makeConnection(transport)

    def signal(self, name: str) -> None:
        """Send signal *name* ("TERM", "KILL") unless the process has exited."""
        if self.exited:
            return
        try:
            transport: Any = self.transport
            transport.signalProcess(name)
        except Exception:
            pass  # exited, not yet reaped

    def line_received(self, fd: int, line: bytes) -> None:
        """One line (without its newline) the child wrote to *fd*."""

    def childDataReceived(self, fd: int, data: bytes) -> None:  # noqa: N802 - Twisted's name
        *lines, rest = (self._buffers.get(fd, b"") + data).split(b"\n")
        if len(rest) > self.max_line:
            lines.append(rest)
            rest = b""
        self._buffers[fd] = rest
        for line in lines:
            self.line_received(fd, line)

    def childConnectionLost(self, childFD: int) -> None:  # noqa: N802,N803 - Twisted's names
        rest = self._buffers.pop(childFD, b"")
        if rest:
            self.line_received(childFD, rest)

    def processExited(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        # Not processEnded: the exit is what matters, whatever still holds the
        # pipes (php-fpm's orphaned children may keep its stderr open).
        self.exited = True
        for fd in list(self._buffers):
            self.childConnectionLost(fd)
        if self.supervisor is not None:
            self.supervisor._exited(self, reason)


class SupervisedProcess:
    """One child process kept running: started, restarted after a backoff when it dies, stopped with SIGTERM then SIGKILL.

    States::

        stopped --start()--> running --(the child exits)--> restarting --(backoff)--> running ...
        running, restarting --stop()--> stopping (SIGTERM; SIGKILL after stop_grace) --(exited)--> stopped

    *spawn* starts a child and returns its :class:`ChildProcess`, or raises
    when it cannot be started (then a restart is scheduled as for a death).
    The backoff counts failures in a row: :meth:`stable` (the owner saw the
    child work) or a run of *stable_after* seconds starts it again from the
    first delay.  *on_exit* is told of each death that was not asked for,
    before the restart is scheduled.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        name: str,
        spawn: Callable[[], ChildProcess],
        *,
        backoff: Callable[[int], float] = DEFAULT_BACKOFF,
        stop_grace: float = 10.0,
        stable_after: Optional[float] = None,
        on_exit: Optional[Callable[[ChildProcess, Failure], None]] = None,
    ) -> None:
        self._reactor = reactor
        self.name = name
        self._spawn_child = spawn
        self._backoff = backoff
        self.stop_grace = stop_grace
        self.stable_after = stable_after
        self._on_exit = on_exit
        self.process: Optional[ChildProcess] = None
        #: Restarts scheduled since start (deaths and failed starts).
        self.restarts = 0
        self._failures = 0
        self._started_at = 0.0
        self._active = False
        self._restart_call: Any = None  # IDelayedCall
        self._kill_call: Any = None
        self._stopped: Waiters[None] = Waiters()

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self._active = True
        self._spawn()

    def stable(self) -> None:
        """The child proved it works: the next failure starts the backoff from its first delay."""
        self._failures = 0

    def stop(self) -> "Deferred[None]":
        """Stop for good: SIGTERM, SIGKILL after stop_grace; fires once the child has exited."""
        self._active = False
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        process = self.process
        if process is None:
            return succeed(None)
        if self._kill_call is None:
            process.signal("TERM")
            self._kill_call = self._reactor.callLater(self.stop_grace, process.signal, "KILL")
        return self._stopped.wait()

    def _spawn(self) -> None:
        self._restart_call = None
        try:
            process = self._spawn_child()
        except Exception as e:
            self.log.error("cannot start {name}: {error}", name=self.name, error=str(e))
            self._schedule_restart()
            return
        process.supervisor = self
        self.process = process
        self._started_at = self._reactor.seconds()

    def _exited(self, process: ChildProcess, reason: Failure) -> None:
        if process is not self.process:
            return
        self.process = None
        if self._kill_call is not None:
            if self._kill_call.active():
                self._kill_call.cancel()
            self._kill_call = None
        if not self._active:
            self._stopped.fire(None)
            return
        if self.stable_after is not None and self._reactor.seconds() - self._started_at >= self.stable_after:
            self._failures = 0
        if self._on_exit is not None:
            self._on_exit(process, reason)
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        if not self._active:
            return
        delay = self._backoff(self._failures)
        self._failures += 1
        self.restarts += 1
        self.log.warn("restarting {name} in {delay} s", name=self.name, delay=delay)
        self._restart_call = self._reactor.callLater(delay, self._spawn)
