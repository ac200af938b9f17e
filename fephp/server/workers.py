"""``server.workers``, from the parent's side: several worker processes serving the same listening sockets.

The twistd process (the parent) serves no requests.  It binds every
``server.listen`` endpoint once, before twistd daemonizes or drops
privileges, runs the managed php-fpm (if any), and supervises the workers:
processes running ``python -m fephp.server.worker`` that each adopt the listening
sockets (passed as file descriptors) and serve them with the same site as a
single fephp.  The kernel hands each new connection to one of the workers
waiting in accept.

What flows between them:

- fd 0, parent to worker: the configuration text, length-prefixed, so that a
  worker restarted later runs the configuration the server started with.
  Then commands, one per line: ``figures ID`` (send your figures, for the
  admin listener), ``reopen`` (reopen the access log, SIGUSR1) and
  ``certs`` (ACME stored a certificate: load the sites' stored ones again).
  EOF means the parent is gone and the worker stops.
- fd 1: the worker's standard output (the ``access_log: "-"`` lines), which
  the parent copies to its own standard output a whole line at a time.
- fd 2: the worker's stderr (a traceback if it cannot start), logged as errors.
- fd 3: the worker's log events as JSON records, re-emitted into the parent's
  log with the worker's number and pid as the log system; and its replies,
  records that start with ``\x1d`` (:func:`reply_record`): ``ready`` once
  it serves, ``figures`` with a JSON document.
- fd 4 and up: the listening sockets, in ``server.listen`` order.  An
  ``ssl:`` one is a TCP socket: the worker runs TLS on it
  (:mod:`fephp.server.tls`) with the endpoint's files and the sites' SNI map.

With ``tls.acme``, the parent alone obtains and renews certificates (one
order per name set): HTTP-01 key authorizations reach the workers as files
(:class:`fephp.server.acme.ChallengeFiles`), certificates through the state
folder, which a worker reads at its start and at each ``certs``.

A worker that dies is started again after a backoff.  Stopping the parent
(SIGTERM) sends SIGTERM to the workers, which drain as a single fephp does,
then stops php-fpm and closes the listening sockets.  A worker also stops
when its parent dies: Linux's parent-death signal, and EOF on its stdin
elsewhere.

The worker's side is :mod:`fephp.server.worker`.
"""

from __future__ import annotations

import functools
import itertools
import json
import struct
import sys
from typing import Any, Callable, Optional, Sequence, cast

from twisted.application.internet import backoffPolicy
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure

from .._deferreds import chained
from ..process.supervisor import ChildProcess, SupervisedProcess
from .listeners import Listener

__all__ = [
    "CERTS",
    "COMMANDS",
    "CONFIG_HEADER",
    "EXIT_CONFIG",
    "FIRST_LISTEN_FD",
    "LOG_FD",
    "SharedListener",
    "WorkerSupervisor",
    "WorkersService",
    "connections_per_worker",
]

#: The first descriptor number of the listening sockets in a worker.
FIRST_LISTEN_FD = 4
LOG_FD = 3
#: Bound on a buffered partial line or log record from a worker.
MAX_RECORD = 64 * 1024
#: Exit status of a worker whose configuration does not load (EX_CONFIG).
EXIT_CONFIG = 78
#: The length prefix of the configuration text on a worker's stdin.
CONFIG_HEADER = struct.Struct("!I")
#: The parent's commands to a worker (a line each on its stdin), and the names of its replies.
FIGURES = b"figures"
REOPEN = b"reopen"
CERTS = b"certs"
READY = b"ready"
COMMANDS = (FIGURES, REOPEN, CERTS)
#: A worker's reply on fd 3 starts with this byte (a log record starts with \x1e).
REPLY_MARK = "\x1d"
#: Seconds a worker has to answer ``figures`` before the scrape goes on without it.
FIGURES_TIMEOUT = 2.0
#: Seconds a new worker of a reload has to say ``ready``.
READY_TIMEOUT = 120.0


def reply_record(kind: bytes, payload: Any) -> str:
    """A worker's reply as written on fd 3: the mark, the kind, a space, JSON, a newline."""
    return REPLY_MARK + kind.decode() + " " + json.dumps(payload, separators=(",", ":")) + "\n"


def connections_per_worker(pool_size: int, workers: int) -> int:
    """Each worker's FastCGI pool: an equal share of *pool_size*, at least one.

    A kept connection pins a php-fpm child, so the workers together must not
    hold more connections than php-fpm has children.
    """
    return max(1, pool_size // workers)


class SharedListener(Listener):
    """One ``server.listen`` endpoint, bound by the parent and never accepted on there.

    It listens through the endpoint (so every option of the string applies:
    interface, backlog, a UNIX socket's mode and lock file, systemd's
    inherited sockets) in privilegedStartService, before twistd drops
    privileges, then stops reading: only the workers accept.
    """

    def __init__(self, reactor: Any, description: str) -> None:
        super().__init__(reactor, description, Factory())

    def _listen(self) -> None:
        if self.port is None:
            super()._listen()
            port: Any = self.port
            port.stopReading()

    @property
    def fileno(self) -> int:
        return int(self.port.fileno())

    @property
    def family(self) -> int:
        return int(self.port.socket.family)


class WorkerSupervisor(Service):
    """Keeps *count* worker processes running, each in a :class:`SupervisedProcess` of its own.

    A worker that exits is started again after a backoff: *restart_delay*
    seconds, doubling up to *max_restart_delay* while it keeps dying within
    *stable_after* seconds of its start.  On stop each gets SIGTERM and,
    after *stop_grace* seconds, SIGKILL.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        count: int,
        argv: Callable[[int], list[str]],
        config_text: str,
        listeners: Sequence[SharedListener],
        env: Optional[dict[str, str]] = None,
        stop_grace: float = 15.0,
        restart_delay: float = 0.5,
        max_restart_delay: float = 30.0,
        stable_after: float = 10.0,
        publish: Callable[[dict[str, Any]], None] = globalLogPublisher,
        stdout: Any = None,
    ) -> None:
        self._reactor = reactor
        self.count = count
        self._argv = argv
        self._config = config_text.encode("utf-8")
        self._listeners = listeners
        self._env = env
        self.stop_grace = stop_grace
        self.stable_after = stable_after
        self._publish = publish
        self._stdout = stdout
        backoff = backoffPolicy(restart_delay, max_restart_delay, 2.0, jitter=lambda: 0.0)
        self._slots = {
            index: SupervisedProcess(
                reactor,
                f"worker {index}",
                functools.partial(self._spawn, index),
                backoff=backoff,
                stop_grace=stop_grace,
                stable_after=stable_after,
                on_exit=self._died,
            )
            for index in range(1, count + 1)
        }
        self._stopping: Optional[Deferred[Any]] = None
        self._figures: dict[str, Deferred[Any]] = {}
        self._ready: dict[int, Deferred[None]] = {}
        #: A reload's new worker, from its start until it replaced the old one (told "certs" too).
        self._pending: list[SupervisedProcess] = []
        self._ids = itertools.count(1)
        self._backoff = backoff

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids, by worker number."""
        return [slot.pid for _, slot in sorted(self._slots.items()) if slot.pid is not None]

    @property
    def restarts(self) -> int:
        """How many times a worker was started again after it died."""
        return sum(slot.restarts for slot in self._slots.values())

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        for slot in self._slots.values():
            slot.start()

    def _spawn(self, index: int) -> "_WorkerProcess":
        worker = _WorkerProcess(self, index)
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r", LOG_FD: "r"}
        for i, listener in enumerate(self._listeners):
            child_fds[FIRST_LISTEN_FD + i] = listener.fileno
        argv = self._argv(index)
        transport = self._reactor.spawnProcess(worker, argv[0], argv, env=self._env, childFDs=child_fds)
        transport.write(CONFIG_HEADER.pack(len(self._config)) + self._config)
        self.log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)
        return worker

    def _died(self, process: ChildProcess, reason: Failure) -> None:
        worker = cast(_WorkerProcess, process)
        self.log.error(
            "worker {index} (pid {pid}) exited: {reason}",
            index=worker.index,
            pid=worker.pid,
            reason=reason.getErrorMessage(),
        )

    def stopService(self) -> "Deferred[None]":  # noqa: N802 - Twisted's name
        super().stopService()
        if self._stopping is None:
            running = [slot for slot in self._slots.values() if slot.process is not None]
            if running:
                self.log.info("stopping {count} workers", count=len(running))
            self._stopping = DeferredList([slot.stop() for slot in self._slots.values()])
        return chained(self._stopping)

    # -- what workers send --------------------------------------------------------

    def _send(self, slot: SupervisedProcess, line: bytes) -> bool:
        process = slot.process
        transport = getattr(process, "transport", None)
        if process is None or process.exited or transport is None:
            return False
        transport.write(line)
        return True

    def reopen_logs(self) -> None:
        """Each worker reopens its access log (SIGUSR1 to the parent)."""
        for slot in self._slots.values():
            self._send(slot, REOPEN + b"\n")

    def reload_certificates(self) -> None:
        """Each worker loads the stored ACME certificates again (the parent's ACME service stored a new one)."""
        for slot in [*self._slots.values(), *self._pending]:
            self._send(slot, CERTS + b"\n")

    def ask_figures(self) -> "Deferred[list[dict[str, Any]]]":
        """Every running worker's figures, by worker number; one that does not answer in time is there without them."""
        asks = []
        for index, slot in sorted(self._slots.items()):
            ident = str(next(self._ids))
            d: Deferred[Any] = Deferred()
            if not self._send(slot, FIGURES + b" " + ident.encode() + b"\n"):
                d.callback(None)
            else:
                self._figures[ident] = d
                d.addTimeout(FIGURES_TIMEOUT, self._reactor)
                d.addErrback(lambda _: None)
                d.addBoth(self._forget_ask, ident)

            def entry(figures: Any, index: int = index, pid: Optional[int] = slot.pid) -> dict[str, Any]:
                out: dict[str, Any] = {"index": index, "pid": pid}
                if figures:
                    out.update({k: figures[k] for k in ("site", "connections", "in_flight", "pools")})
                return out

            asks.append(d.addCallback(entry))
        return DeferredList(asks).addCallback(lambda results: [value for _, value in results])

    def _forget_ask(self, result: Any, ident: str) -> Any:
        self._figures.pop(ident, None)
        return result

    def _reply(self, worker: "_WorkerProcess", record: bytes) -> None:
        kind, _, payload = record[1:].partition(b" ")
        if kind == READY:
            waiter = self._ready.pop(id(worker), None)
            if waiter is not None:
                waiter.callback(None)
            return
        if kind == FIGURES:
            try:
                figures = json.loads(payload)
            except ValueError:
                return
            waiting = self._figures.pop(str(figures.get("id")), None)
            if waiting is not None and not waiting.called:
                waiting.callback(figures)

    def replace(
        self,
        *,
        count: int,
        argv: Callable[[int], list[str]],
        config_text: str,
        listeners: Sequence[SharedListener],
    ) -> "Deferred[None]":
        """A reload: every worker replaced by one of the new configuration, one at a time.

        Worker N's successor starts beside it and says ``ready``; only then
        does the old one get SIGTERM (it drains its requests as at a stop)
        and, once it has exited, the next worker's turn comes.  Workers
        beyond the new *count* stop; new numbers start.  A successor that
        dies or stays silent for READY_TIMEOUT ends the rollover there, the
        old worker still serving.
        """
        self._argv = argv
        self._config = config_text.encode("utf-8")
        self._listeners = listeners
        self.count = count
        return self._rollover(count)

    @inlineCallbacks
    def _rollover(self, count: int) -> Any:
        for index in range(1, max(count, len(self._slots)) + 1):
            old = self._slots.get(index)
            if index > count:
                assert old is not None
                del self._slots[index]
                yield old.stop()
                continue
            new = SupervisedProcess(
                self._reactor,
                f"worker {index}",
                functools.partial(self._spawn, index),
                backoff=self._backoff,
                stop_grace=self.stop_grace,
                stable_after=self.stable_after,
                on_exit=self._died,
            )
            new.start()
            process = new.process
            if process is None:
                new.stop()
                raise RuntimeError(f"worker {index} of the new configuration did not start")
            ready: Deferred[None] = Deferred()
            self._ready[id(process)] = ready
            ready.addTimeout(READY_TIMEOUT, self._reactor)
            self._pending.append(new)
            try:
                yield ready
            except Exception:
                self._ready.pop(id(process), None)
                yield new.stop()
                raise RuntimeError(f"worker {index} of the new configuration did not get ready")
            finally:
                self._pending.remove(new)
            self._slots[index] = new
            if old is not None:
                yield old.stop()

    def _log_record(self, worker: "_WorkerProcess", record: bytes) -> None:
        try:
            event = eventFromJSON(record.decode("utf-8"))
        except ValueError:
            self.log.error("worker {index}: {line}", index=worker.index, line=record.decode("utf-8", "replace"))
            return
        event["log_system"] = f"worker {worker.index} pid {worker.pid}"
        self._publish(event)

    def _stderr_line(self, worker: "_WorkerProcess", line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            self.log.error("worker {index}: {line}", index=worker.index, line=text)

    def _stdout_line(self, worker: "_WorkerProcess", line: bytes) -> None:
        out = self._stdout if self._stdout is not None else sys.stdout
        out.write(line.decode("utf-8", "replace"))
        out.flush()


class _WorkerProcess(ChildProcess):
    """One worker process: its log records, stdout and stderr to the parent's own."""

    # JSON log records are "\x1e" + JSON + "\n", and JSON holds no raw
    # newline: every output is cut at line ends.
    max_line = MAX_RECORD

    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        super().__init__()
        self._workers = supervisor
        self.index = index

    def line_received(self, fd: int, line: bytes) -> None:
        if fd == LOG_FD:
            if line.startswith(REPLY_MARK.encode()):
                self._workers._reply(self, line)
                return
            record = line.strip(b"\x1e\n ")
            if record:
                self._workers._log_record(self, record)
        elif fd == 1:
            self._workers._stdout_line(self, line + b"\n")
        else:
            self._workers._stderr_line(self, line)


class WorkersService(MultiService):
    """The parent: shared listeners, the managed php-fpm, the supervised workers.

    Stopping stops the workers first (they drain their requests), then
    closes the listening sockets, then stops php-fpm.
    """

    def __init__(
        self,
        listeners: Sequence[SharedListener],
        supervisor: WorkerSupervisor,
        php_fpm: Optional[Service] = None,
    ) -> None:
        super().__init__()
        self.listeners = list(listeners)
        self.supervisor = supervisor
        self.php_fpm = php_fpm
        for listener in self.listeners:
            listener.setServiceParent(self)
        if php_fpm is not None:
            php_fpm.setServiceParent(self)
        supervisor.setServiceParent(self)

    def stopService(self) -> "Deferred[Any]":  # noqa: N802 - Twisted's name
        Service.stopService(self)
        return self._stop()

    @inlineCallbacks
    def _stop(self) -> Any:
        yield self.supervisor.stopService()
        yield DeferredList([listener.stopService() for listener in self.listeners])
        if self.php_fpm is not None:
            yield self.php_fpm.stopService()
