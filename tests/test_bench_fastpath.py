"""The load generator's hot path: remembered header blocks, the closed-loop recorder, its reactors."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from fephp.bench.client import MAX_CACHED_HEADS, MalformedResponse, ResponseParser
from fephp.bench.reactor import SELECT_MAX_CONNECTIONS, BenchEPollReactor, BenchSelectReactor, choose
from fephp.bench.report import Recorder

HEAD = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 5"


def test_a_header_block_seen_before_is_read_from_the_cache() -> None:
    """Two connections reading the same header block share one entry, and both read the same response from it."""
    cache: dict[bytes, Any] = {}
    first, second = ResponseParser(cache), ResponseParser(cache)
    for parser in (first, second):
        parser.expect()
        assert parser.feed(HEAD + b"\r\n\r\nhello") is True
        assert (parser.status, parser.keep_alive, parser.received) == (200, True, len(HEAD) + 9)
    assert cache == {HEAD: (200, True, 5, False)}


def test_the_cache_holds_what_the_head_says_not_what_the_request_was() -> None:
    """A HEAD answer read from a cached block still has no body, and a GET answer from the same block has one."""
    parser = ResponseParser({})
    parser.expect(no_body=True)
    assert parser.feed(HEAD + b"\r\n\r\n") is True
    parser.expect()
    assert parser.feed(HEAD + b"\r\n\r\n") is False
    assert parser.feed(b"hello") is True


def test_the_cache_is_bounded() -> None:
    """Past MAX_CACHED_HEADS distinct blocks the cache starts afresh instead of growing."""
    cache: dict[bytes, Any] = {}
    parser = ResponseParser(cache)
    for i in range(MAX_CACHED_HEADS + 10):
        parser.expect()
        assert parser.feed(b"HTTP/1.1 204 No Content\r\nX-N: %d\r\n\r\n" % i) is True
    assert 0 < len(cache) <= MAX_CACHED_HEADS


def test_interim_and_malformed_blocks_are_not_cached() -> None:
    """A 100 Continue block is not remembered, and a malformed one is refused again the second time."""
    cache: dict[bytes, Any] = {}
    parser = ResponseParser(cache)
    parser.expect()
    assert parser.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n") is True
    assert list(cache) == [b"HTTP/1.1 204 No Content"]
    for _ in range(2):
        parser.expect()
        with pytest.raises(MalformedResponse):
            parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    assert len(cache) == 1


def test_closed_loop_recorder_counts_each_latency_once() -> None:
    """In a closed loop the from-sent histogram is the from-intended one, and warmup stays out of both."""
    recorder = Recorder(rate_mode=False)
    assert recorder.service is recorder.intended
    recorder.response(False, 200, 10, intended=0.0, sent=0.0, done=0.002)  # warmup
    recorder.response(True, 200, 10, intended=1.0, sent=1.0, done=1.002)  # the same latency, measured
    recorder.response(True, 404, 10, intended=1.0, sent=1.0, done=1.005)
    stats = recorder.close_interval(1.0, 1.0, keep=True)
    assert stats.requests == 3
    assert recorder.intended.get_total_count() == 2
    assert recorder.intended.get_min_value() == pytest.approx(2000, rel=0.001)
    assert recorder.intended.get_max_value() == pytest.approx(5000, rel=0.001)
    assert recorder.status_codes == {200: 1, 404: 1}
    assert recorder.bytes_received == 20


def test_rate_recorder_leaves_warmup_out_of_every_total() -> None:
    """A warmup response shows in its second's slice only, in rate mode too."""
    recorder = Recorder(rate_mode=True)
    recorder.response(False, 200, 10, intended=0.0, sent=0.001, done=0.003)
    recorder.response(True, 200, 10, intended=1.0, sent=1.001, done=1.003)
    assert recorder.close_interval(1.0, 1.0, keep=True).requests == 2
    assert [h.get_total_count() for h in (recorder.intended, recorder.service, recorder.lateness)] == [1, 1, 1]


def test_reactor_choice() -> None:
    """A fixed rate takes select() for its microsecond timer up to SELECT_MAX_CONNECTIONS; a closed loop takes epoll."""
    assert choose(10, rate_mode=True) is BenchSelectReactor
    assert choose(SELECT_MAX_CONNECTIONS + 1, rate_mode=True) is BenchEPollReactor
    assert choose(10, rate_mode=False) is BenchEPollReactor


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


def test_select_reactor_survives_a_closed_descriptor() -> None:
    """A descriptor closed behind the reactor's back is dropped by Twisted's recovery, not raised."""
    reactor = BenchSelectReactor()
    a, b = socket.socketpair()

    class Reader:
        lost: list[object] = []

        def fileno(self) -> int:
            return a.fileno()

        def doRead(self) -> None:  # noqa: N802
            pass

        def connectionLost(self, reason: object) -> None:  # noqa: N802
            self.lost.append(reason)

        def logPrefix(self) -> str:  # noqa: N802
            return "reader"

    reader = Reader()
    reactor.addReader(reader)
    a.close()
    b.close()
    reactor.doIteration(0)
    assert reader.lost and reader not in reactor.getReaders()
