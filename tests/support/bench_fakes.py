"""Fakes for the load generator's unit tests: a reactor with thread calls, and the far end of a run's connections."""

from __future__ import annotations

import io
from typing import Any, Callable

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from fephp.bench.client import HTTPClientConnection

#: The answer the fake server gives by default.
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
#: The one URL the fakes expect, on the origin FakePeer accepts.
URL = "http://127.0.0.1:8080/hello?x=1"


class ThreadCallReactor(MemoryReactorClock):
    """A MemoryReactorClock with ``callFromThread``: the calls wait for :meth:`next_turn`, as a reactor's next loop."""

    def __init__(self) -> None:
        super().__init__()
        self.thread_calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:  # noqa: N802 - Twisted's name
        self.thread_calls.append((f, args))

    def next_turn(self) -> None:
        """Run the calls queued from a thread (or a signal handler) so far, as the reactor's next turn does first."""
        calls, self.thread_calls = self.thread_calls, []
        for f, args in calls:
            f(*args)


class FakePeer:
    """The server side of a run's connections: completes its connects by hand and answers on StringTransports."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor
        self.connections: list[tuple[HTTPClientConnection, StringTransport]] = []
        self._seen = 0

    def accept(self) -> list[tuple[HTTPClientConnection, StringTransport]]:
        """Complete every connect asked for since the last call."""
        new = []
        for host, port, factory, timeout, _ in self.reactor.tcpClients[self._seen :]:
            assert (host, port) == ("127.0.0.1", 8080)
            protocol: Any = factory.buildProtocol(None)
            transport = StringTransport()
            protocol.makeConnection(transport)
            new.append((protocol, transport))
        self._seen = len(self.reactor.tcpClients)
        self.connections.extend(new)
        return new

    def refuse(self, reason: Exception) -> int:
        """Fail every connect asked for since the last call; returns how many."""
        pending = self.reactor.tcpClients[self._seen :]
        self._seen = len(self.reactor.tcpClients)
        no_connector: Any = None
        for _, _, factory, _, _ in pending:
            factory.clientConnectionFailed(no_connector, Failure(reason))
        return len(pending)

    def take_requests(self, transport: StringTransport) -> int:
        """How many requests arrived on *transport* since the last call."""
        count = transport.value().count(b"\r\n\r\n")
        transport.clear()
        return count

    def answer_all(self, response: bytes = OK) -> int:
        """Answer every request that arrived since the last call; returns how many."""
        answered = 0
        for protocol, transport in list(self.connections):
            for _ in range(self.take_requests(transport)):
                protocol.dataReceived(response)
                answered += 1
        return answered


class TtyStream(io.StringIO):
    """A text stream that says it is a terminal, as ``sys.stdout`` on one."""

    def isatty(self) -> bool:
        return True
