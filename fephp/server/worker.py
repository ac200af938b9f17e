"""``server.workers``, from a worker's side: serve the listening sockets inherited from the parent.

Started by :class:`fephp.server.workers.WorkerSupervisor` as ``python -m
fephp.server.worker``; what flows between the two is described in
:mod:`fephp.server.workers`.  :func:`main` is a process entry point, like
:mod:`fephp.tap`, and the only place here that touches the global reactor.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from twisted.application.service import Service
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    jsonFileLogObserver,
)
from twisted.python.failure import Failure

from .._twisted import adopt_listening_port
from ..process.supervisor import die_with_parent
from ..web.site import FrontSite
from .acme import ChallengeFiles, acme_sites, front_for
from .admin import backend_pools, sites_figures
from .build import build_front, build_sni
from .config import Config, ConfigError, load_config
from .listeners import SNIMap
from .reactor import install_if_free
from .signals import ignore_operator_signals
from .tls import TLSServerFactory, context_from_description
from .workers import (
    CERTS,
    CONFIG_HEADER,
    EXIT_CONFIG,
    FIGURES,
    LOG_FD,
    MAX_RECORD,
    READY,
    REOPEN,
    connections_per_worker,
    reply_record,
)

__all__ = ["main"]


class _OneAcceptPerWakeup:
    """Accept one connection each time the shared socket is readable.

    Twisted accepts up to 100 or more connections per readiness event, so
    the first worker to wake takes a whole burst (a client opening 64
    keep-alive connections at once gets them all on one worker, and the
    other cores idle).  Taking one at a time lets every waiting worker take
    its turn, and a busy worker, late back in its event loop, takes fewer.
    """

    @property
    def numberAccepts(self) -> int:  # noqa: N802 - Twisted's name
        return 1

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:  # noqa: N802 - Twisted's name
        pass  # Twisted adapts it after each doRead


class _SharedTCPPort(_OneAcceptPerWakeup, tcp.Port):
    """An adopted TCP listening socket shared with other workers."""


class _SharedUNIXPort(_OneAcceptPerWakeup, unix.Port):
    """An adopted UNIX listening socket shared with other workers.

    It leaves its path alone when closed: Twisted's UNIX port unlinks its
    path when it stops listening, even an adopted one, but the path belongs
    to the parent, which removes it last.
    """

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        tcp.Port.connectionLost(self, reason)


class _AdoptedListener(Service):
    """Serves *factory* on a listening socket inherited as descriptor *fd*."""

    def __init__(self, reactor: Any, fd: int, family: int, factory: Any) -> None:
        self._reactor = reactor
        self.fd = fd
        self.family = family
        self.factory = factory
        self.port: Any = None

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        # What reactor.adoptStreamPort does, with our port classes.
        if self.family == socket.AF_UNIX:
            port: Any = adopt_listening_port(_SharedUNIXPort, self._reactor, self.fd, self.factory)
        else:
            port = adopt_listening_port(_SharedTCPPort, self._reactor, self.fd, self.factory, self.family)
        port.startListening()
        self.port = port
        os.close(self.fd)  # the port holds its own duplicate

    def stopService(self) -> "Deferred[Any]":  # noqa: N802 - Twisted's name
        super().stopService()
        port, self.port = self.port, None
        return (port.stopListening() if port is not None else None) or succeed(None)


class _ParentWatch:
    """Reads the worker's stdin, the pipe from its parent: a command per line (:data:`fephp.server.workers.COMMANDS`); EOF calls *on_eof*."""

    def __init__(self, fd: int, on_eof: Callable[[], None], on_command: Callable[[bytes], None] = lambda line: None) -> None:
        self.fd = fd
        self._on_eof = on_eof
        self._on_command = on_command
        self._buffer = b""

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        return "parent"

    def doRead(self) -> Optional[Exception]:  # noqa: N802 - Twisted's name
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return None
        except OSError as e:
            return e
        if not data:
            return ConnectionDone()
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        if len(self._buffer) > MAX_RECORD:
            self._buffer = b""  # no command is that long
        for line in lines:
            if line:
                self._on_command(line)
        return None

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        self._on_eof()


def _served(reactor: Any, description: str, site: FrontSite, sni: Optional[SNIMap]) -> Any:
    """The factory for an adopted socket of *description*: *site*, behind the standard library's TLS for ``ssl:``
    (the endpoint's certificate, the sites' by SNI; the configuration allows no other engine with workers)."""
    if description.split(":", 1)[0] != "ssl":
        return site
    return TLSServerFactory(context_from_description(description), site, reactor,
                            sni=sni.stdlib_hook() if sni else None)


def _load_stored(config: Config, sni: Optional[SNIMap]) -> int:
    """``certs``: the ACME sites' certificates as stored now, shown from the next handshake on; how many."""
    count = 0
    for site in config.sites:
        tls = site.tls
        if (sni is not None and tls is not None and tls.acme is not None and os.path.isfile(tls.certificate)
                and os.path.isfile(tls.key)):
            sni.install(site.hosts, site.default, tls)
            count += 1
    return count


def _read_config_text(fd: int) -> str:
    def read_exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = os.read(fd, n - len(data))
            if not chunk:
                raise SystemExit("fephp worker: the parent closed stdin before sending the configuration")
            data += chunk
        return data

    (length,) = CONFIG_HEADER.unpack(read_exactly(CONFIG_HEADER.size))
    return read_exactly(length).decode("utf-8")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one worker: ``python -m fephp.server.worker --config FILE --index N ...`` (started by the parent)."""
    parser = argparse.ArgumentParser(prog="python -m fephp.server.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--listen", action="append", default=[], help="FD:FAMILY")
    parser.add_argument("--fpm-socket")
    parser.add_argument("--acme-challenges", help="the folder of the parent's HTTP-01 key authorizations")
    args = parser.parse_args(argv)

    die_with_parent(args.parent)
    try:
        config = load_config(args.config, _read_config_text(0))
    except ConfigError as e:
        print(f"fephp worker: {e}", file=sys.stderr)
        return EXIT_CONFIG

    log_file = os.fdopen(LOG_FD, "w", encoding="utf-8")
    level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(config.logging.level))
    observer: Any = FilteringLogObserver(jsonFileLogObserver(log_file), [level])  # type: ignore[arg-type, list-item]
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    reactor: Any = install_if_free()

    # The sites' certificates, ACME's as stored now (the parent obtains them; "certs" loads them again).
    sni = build_sni(config)

    def adopted(site: FrontSite) -> list[Service]:
        listeners: list[Service] = []
        # The parent passes the sockets in server.listen order.
        for item, description in zip(args.listen, config.server.listen):
            fd, family = (int(part) for part in item.split(":"))
            listeners.append(_AdoptedListener(reactor, fd, family, _served(reactor, description, site, sni)))
        return listeners

    service = build_front(
        config,
        reactor,
        adopted,
        fpm_socket_path=args.fpm_socket,
        pool_size=connections_per_worker(config.php.worker_pool_size, args.workers),
        workers=args.workers,
    )
    sites = acme_sites(config.sites)
    if sites and args.acme_challenges:
        service.site.resource = front_for(service.site.resource, sites, ChallengeFiles(Path(args.acme_challenges)))

    stopping: list[bool] = []
    log = Logger(namespace="fephp.server.worker")

    def reply(kind: bytes, payload: Any) -> None:
        log_file.write(reply_record(kind, payload))
        log_file.flush()

    def command(line: bytes) -> None:
        name, _, arg = line.partition(b" ")
        if name == REOPEN:
            service.site.reopen_logs()
        elif name == CERTS:
            try:
                count = _load_stored(config, sni)
            except Exception:
                log.failure("the stored certificates do not load; the previous ones are still shown")
            else:
                log.info("the stored certificates loaded ({count} sites)", count=count)
        elif name == FIGURES:
            site = service.site
            connections, in_flight = site.activity()
            backend = service.backend
            reply(FIGURES, {
                "id": arg.decode("ascii", "replace"),
                "site": site.figures.figures() if site.figures is not None else None,
                "connections": connections,
                "in_flight": in_flight,
                "pools": backend_pools(backend),
                "sites": sites_figures(site),
            })

    def stop() -> None:
        if not stopping:
            stopping.append(True)
            reactor.stop()

    def on_signal(signum: int, frame: Any) -> None:
        reactor.callFromThread(stop)

    def started() -> None:
        # After the reactor's own handlers: one stop however many ways it is
        # asked for (SIGTERM from the parent, the parent-death signal, EOF).
        signal.signal(signal.SIGTERM, on_signal)
        # Ctrl-C in a terminal reaches the whole process group: the parent
        # stops the workers itself, and answers the operator's other signals.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ignore_operator_signals()
        service.startService()
        reactor.addReader(_ParentWatch(0, stop, command))
        reply(READY, None)

    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.callWhenRunning(started)
    log.info("worker {index} serving (pid {pid})", index=args.index, pid=os.getpid())
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
