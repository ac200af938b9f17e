"""The signals an operator sends, from the server's side: each runs a handler on the reactor, none kills fephp.

SIGTERM and SIGINT are Twisted's (a graceful stop).  SIGHUP, SIGUSR1 and
SIGUSR2 would end a Python process at once, leaving a stale pidfile and, with
``server.workers``, worker processes without their parent: fephp handles
each of them.  SIGHUP reloads the configuration (:func:`reload_handler`),
SIGUSR1 reopens the log files after logrotate moved them
(:func:`reopen_handler`, instead of twistd's own rotation), SIGUSR2 changes
nothing (:func:`not_supported` says so in the log).
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Mapping

from twisted.logger import Logger

__all__ = [
    "OPERATOR_SIGNALS",
    "ignore_operator_signals",
    "install_signal_handlers",
    "not_supported",
    "reload_handler",
    "reopen_handler",
]

#: The signals ``kill``, systemctl and logrotate commonly send beyond TERM and INT.
OPERATOR_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

_log = Logger(namespace="fephp.server.signals")


def install_signal_handlers(reactor: Any, handlers: Mapping[int, Callable[[], None]]) -> None:
    """Route each signal of *handlers* to its function, called on the reactor's thread.

    Call it once the reactor runs (``reactor.callWhenRunning``), after the
    reactor has installed its own handlers.
    """
    for signum, handler in handlers.items():

        def received(number: int, frame: Any, handler: Callable[[], None] = handler) -> None:
            reactor.callFromThread(handler)

        signal.signal(signum, received)


def ignore_operator_signals() -> None:
    """In a worker process: the parent answers the operator's signals, a worker ignores them."""
    for signum in OPERATOR_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def not_supported(signum: int, what: str) -> Callable[[], None]:
    """A handler that logs that *signum* (asking for *what*) changes nothing yet."""
    name = signal.Signals(signum).name

    def handler() -> None:
        _log.warn("{signal} received: {what} is not supported yet; nothing changed", signal=name, what=what)

    return handler


def reload_handler(service: Any) -> Callable[[], None]:
    """SIGHUP: *service*'s ``reload()`` (it logs what it did, or why it kept the running configuration)."""

    def handler() -> None:
        _log.info("SIGHUP received: reloading the configuration")
        service.reload().addErrback(lambda f: _log.failure("reload failed", f))

    return handler


def reopen_handler(service: Any, log_files: Any) -> Callable[[], None]:
    """SIGUSR1: the access log(s) and fephp's own log file open their files anew."""

    def handler() -> None:
        log_files.reopen()
        service.reopen_logs()
        _log.info("SIGUSR1 received: log files reopened")

    return handler
