"""The load generator's reactors on real sockets: bytes both ways, and Twisted's handling of failures kept."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from fephp.bench.reactor import BenchEPollReactor, BenchSelectReactor


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        transport: Any = self.transport
        transport.write(data)


class _Client(Protocol):
    def __init__(self, reactor: Any, seen: list[bytes]) -> None:
        self.reactor = reactor
        self.seen = seen

    def connectionMade(self) -> None:  # noqa: N802
        transport: Any = self.transport
        transport.write(b"ping")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.seen.append(data)
        if data == b"ping":
            raise RuntimeError("a protocol's exception: Twisted's handling drops the connection")

    def connectionLost(self, reason: object = None) -> None:  # noqa: N802
        self.seen.append(b"lost")
        self.reactor.stop()


@pytest.mark.parametrize("reactor_class", [BenchSelectReactor, BenchEPollReactor], ids=["select", "epoll"])
def test_reactor_dispatches_real_sockets(reactor_class: Any) -> None:
    """Each reactor carries bytes both ways over loopback, and a protocol's exception still ends its connection."""
    reactor = reactor_class()
    seen: list[bytes] = []
    port = reactor.listenTCP(0, Factory.forProtocol(_Echo), interface="127.0.0.1")
    client_factory = ClientFactory()
    client_factory.protocol = lambda: _Client(reactor, seen)  # type: ignore[assignment,misc]
    reactor.connectTCP("127.0.0.1", port.getHost().port, client_factory)
    reactor.callLater(10, reactor.stop)  # the bound on a test that went wrong
    reactor.run(installSignalHandlers=False)
    port.stopListening()
    assert seen == [b"ping", b"lost"]
