"""Listening ports that a reload can hand to a new site without closing them, from the server's side.

A :class:`Listener` binds one ``server.listen`` (or ``admin.listen``)
endpoint string before twistd drops privileges, as twistd's own strports
services do, and raises when it cannot.  :meth:`Listener.use` gives the
port a new factory: connections accepted from then on go to the new site,
the socket stays open (no connection is refused during a reload), and a TLS
listener reads its certificate and key files again.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

__all__ = ["Listener", "tls_context"]


class _ContextCatcher:
    """Stands in for the reactor so that an ``ssl:`` endpoint hands over the context factory it built."""

    def __init__(self) -> None:
        self.context: Any = None

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = "") -> None:  # noqa: N802,N803
        self.context = contextFactory


def tls_context(description: str) -> Optional[Any]:
    """The TLS context factory of an ``ssl:`` endpoint string, its files read now; None for any other kind."""
    if description.split(":", 1)[0] != "ssl":
        return None
    catcher = _ContextCatcher()
    serverFromString(catcher, description).listen(None)  # type: ignore[arg-type]
    return catcher.context


class Listener(Service):
    """One endpoint, listening from privilegedStartService on, whose factory can be replaced."""

    def __init__(self, reactor: Any, description: str, factory: Any) -> None:
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self.port: Any = None

    def privilegedStartService(self) -> None:  # noqa: N802 - Twisted's name
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self.port is not None:
            return
        result: list[Any] = []
        serverFromString(self._reactor, self.description).listen(self.factory).addBoth(result.append)
        # Stream endpoints listen at once; a port that cannot be bound stops
        # twistd (or the reload) with the error.
        if not result:
            raise RuntimeError(f"{self.description}: the endpoint did not listen at once")
        if isinstance(result[0], Failure):
            result[0].raiseException()
        self.port = result[0]

    def use(self, factory: Any) -> None:
        """Serve new connections with *factory* (a TLS listener re-reads its certificate and key)."""
        self.factory = factory
        port = self.port
        if port is None:
            return
        context = tls_context(self.description)
        wrapped = TLSMemoryBIOFactory(context, False, factory) if context is not None else factory
        old = port.factory
        wrapped.doStart()  # what the port did for the old one when it started listening
        port.factory = wrapped
        old.doStop()

    def stopService(self) -> "Deferred[Any]":  # noqa: N802 - Twisted's name
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return port.stopListening() or succeed(None)
