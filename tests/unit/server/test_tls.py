"""fephp.server.tls: the standard library's TLS under a Twisted protocol, against a stdlib client over an in-memory link."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Optional

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from fephp.server.tls import (
    WRITE_GATHER,
    TLSServerFactory,
    context_from_description,
    server_context,
    ssl_arguments,
)
from tests.support.tls import self_signed_pem


@implementer(IHandshakeListener)
class Recorder(Protocol):
    """The wrapped protocol: keeps what it is told."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: Any = None
        self.handshakes = 0

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason

    def handshakeCompleted(self) -> None:
        self.handshakes += 1


@implementer(IProtocolNegotiationFactory)
class Offering(Factory):
    """A factory offering *protocols* by ALPN, as FrontSite does."""

    protocol = Recorder

    def __init__(self, protocols: list[bytes]) -> None:
        self.protocols = protocols

    def acceptableProtocols(self) -> list[bytes]:
        return self.protocols


class CountingTransport(StringTransport):
    """A StringTransport that counts the writes it gets (each would be one send)."""

    writes = 0
    aborted = False
    half_closed = False

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def loseWriteConnection(self) -> None:
        self.half_closed = True


class Link:
    """A TLSServerProtocol over a StringTransport, and a stdlib client SSLObject on the other end."""

    def __init__(self, pem: Path, *, offer: tuple[bytes, ...] = (b"h2", b"http/1.1"),
                 client_alpn: tuple[str, ...] = ("h2", "http/1.1"), server_hostname: Optional[str] = None,
                 sni: Any = None) -> None:
        self.clock = Clock()
        self.factory = TLSServerFactory(server_context(str(pem), str(pem)), Offering(list(offer)), self.clock, sni=sni)
        self.server = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        self.transport = CountingTransport()
        self.server.makeConnection(self.transport)
        self.app: Any = self.server.wrappedProtocol
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if client_alpn:
            context.set_alpn_protocols(list(client_alpn))
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)

    def to_server(self) -> None:
        data = self.outgoing.read()
        if data:
            self.server.dataReceived(data)

    def to_client(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        self.incoming.write(data)
        return data

    def handshake(self) -> None:
        for _ in range(5):
            try:
                self.client.do_handshake()
            except ssl.SSLWantReadError:
                self.to_server()
                self.to_client()
                continue
            self.to_server()  # the client's Finished (TLS 1.3) reaches the server
            self.to_client()
            return
        raise AssertionError("no handshake in 5 round trips")

    def client_reads(self) -> bytes:
        """Every plaintext byte the client can read now."""
        chunks = []
        while True:
            try:
                chunks.append(self.client.read(1 << 20))
            except ssl.SSLWantReadError:
                return b"".join(chunks)


def records(data: bytes) -> list[int]:
    """The outer content types of the TLS records in *data* (23: application data, TLS 1.3's alerts included)."""
    types = []
    while data:
        types.append(data[0])
        data = data[5 + int.from_bytes(data[3:5], "big"):]
    return types


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    return self_signed_pem(tmp_path)


def test_handshake_then_bytes_both_ways(pem: Path) -> None:
    """After the handshake the wrapped protocol reads the client's bytes and the client reads its answer."""
    link = Link(pem)
    link.handshake()
    link.client.write(b"GET / HTTP/1.1\r\n\r\n")
    link.to_server()
    link.server.write(b"HTTP/1.1 200 OK\r\n\r\n")
    link.clock.advance(0)
    link.to_client()
    assert (link.app.received, link.client_reads(), link.app.handshakes) == (
        [b"GET / HTTP/1.1\r\n\r\n"], b"HTTP/1.1 200 OK\r\n\r\n", 1)


def test_writes_of_one_turn_make_one_record_and_one_send(pem: Path) -> None:
    """Three writes in one reactor turn are sent at its end as one TLS record in one transport write."""
    link = Link(pem)
    link.handshake()
    before = link.transport.writes
    link.server.write(b"head ")
    link.server.writeSequence([b"body ", b"tail"])
    assert link.transport.value() == b""
    link.clock.advance(0)
    sent = link.to_client()
    assert (records(sent), link.transport.writes - before, link.client_reads()) == ([23], 1, b"head body tail")


def test_a_large_write_goes_without_waiting_for_the_turn(pem: Path) -> None:
    """Once WRITE_GATHER bytes are held they are encrypted and sent at once."""
    link = Link(pem)
    link.handshake()
    link.server.write(b"x" * WRITE_GATHER)
    link.to_client()
    assert link.client_reads() == b"x" * WRITE_GATHER


def test_writes_during_the_handshake_wait_for_its_end(pem: Path) -> None:
    """What the wrapped protocol writes before the handshake ends is sent after it."""
    link = Link(pem)
    link.server.write(b"early")
    link.clock.advance(0)
    assert link.transport.value() == b""
    link.handshake()
    link.clock.advance(0)
    link.to_client()
    assert link.client_reads() == b"early"


@pytest.mark.parametrize(
    ("offer", "client_alpn", "chosen"),
    [
        ((b"h2", b"http/1.1"), ("h2", "http/1.1"), b"h2"),
        ((b"http/1.1",), ("h2", "http/1.1"), b"http/1.1"),
        ((b"h2", b"http/1.1"), (), None),
    ],
    ids=["h2", "http2-off", "client-offers-none"],
)
def test_alpn_answer_as_negotiated_protocol(pem: Path, offer: tuple[bytes, ...], client_alpn: tuple[str, ...],
                                            chosen: Optional[bytes]) -> None:
    """negotiatedProtocol is None before the handshake, then ALPN's answer (None when the client offered nothing)."""
    link = Link(pem, offer=offer, client_alpn=client_alpn)
    before = link.server.negotiatedProtocol
    link.handshake()
    assert (before, link.server.negotiatedProtocol, link.client.selected_alpn_protocol()) == (
        None, chosen, chosen.decode() if chosen else None)


def test_sni_hook_picks_the_certificate_by_name(pem: Path, tmp_path: Path) -> None:
    """The SNI hook gets the client's name, and the context it returns serves the connection, ALPN included."""
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = self_signed_pem(other_dir, host="127.0.0.2")
    other_context = server_context(str(other), str(other))
    asked: list[Optional[str]] = []

    def sni(name: Optional[str]) -> Optional[ssl.SSLContext]:
        asked.append(name)
        return other_context if name == "other.test" else None

    link = Link(pem, server_hostname="other.test", sni=sni)
    link.handshake()
    assert (asked, link.client.getpeercert(True) == _der(other), link.server.negotiatedProtocol,
            link.server.getHandle().get_servername()) == (["other.test"], True, b"h2", b"other.test")


def test_sni_hook_none_keeps_the_listeners_certificate(pem: Path) -> None:
    """A hook returning None leaves the listener's own certificate in place."""
    link = Link(pem, server_hostname="unknown.test", sni=lambda name: None)
    link.handshake()
    assert link.client.getpeercert(True) == _der(pem)


@pytest.mark.parametrize(("server_hostname", "name"), [("a.example", b"a.example"), (None, None)], ids=["sni", "none"])
def test_the_sni_name_through_get_handle(pem: Path, server_hostname: Optional[str], name: Optional[bytes]) -> None:
    """Without a hook too, getHandle().get_servername() gives the name the client asked for, as under Twisted's TLS."""
    link = Link(pem, server_hostname=server_hostname)
    link.handshake()
    assert link.server.getHandle().get_servername() == name


def test_lose_connection_sends_what_was_written_then_close_notify(pem: Path) -> None:
    """loseConnection sends the held writes and a close_notify, half-closes the socket, and drops later writes."""
    link = Link(pem)
    link.handshake()
    link.server.write(b"last words")
    link.server.loseConnection()
    link.server.write(b"too late")
    link.clock.advance(0)
    sent = link.to_client()
    # SSLObject reads a close_notify as b"".
    assert (records(sent), link.client.read(100), link.client.read(100), link.transport.half_closed,
            link.transport.disconnecting) == ([23, 23], b"last words", b"", True, False)


def test_after_close_notify_the_clients_bytes_are_dropped_until_it_closes(pem: Path) -> None:
    """Once closing, what the client still sends (its close_notify too) is dropped unread; its socket's end is a clean close."""
    link = Link(pem)
    link.handshake()
    link.server.loseConnection()
    link.to_client()
    link.client.write(b"GET /more HTTP/1.1\r\n\r\n")
    link.client.read(100)  # the server's close_notify
    link.client.unwrap()
    link.to_server()
    still_open = link.transport.disconnecting
    link.server.connectionLost(Failure(ConnectionDone()))
    assert (still_open, link.app.received, link.app.lost.type) == (False, [], ConnectionDone)


def test_client_close_notify_is_answered_and_the_close_is_clean(pem: Path) -> None:
    """A client's close_notify gets one back, the socket closes, and the wrapped protocol sees ConnectionDone."""
    link = Link(pem)
    link.handshake()
    with pytest.raises(ssl.SSLWantReadError):
        link.client.unwrap()
    link.to_server()
    sent = link.to_client()
    link.server.connectionLost(Failure(ConnectionDone()))
    link.client.unwrap()  # the server's close_notify completes the client's shutdown
    assert (records(sent), link.transport.disconnecting, link.app.lost.type) == ([23], True, ConnectionDone)


def test_close_before_the_handshake_aborts(pem: Path) -> None:
    """loseConnection before the handshake ends aborts the socket, as Twisted's TLS does."""
    link = Link(pem)
    link.server.loseConnection()
    assert (link.transport.aborted, link.transport.value()) == (True, b"")


def test_abort_drops_held_writes(pem: Path) -> None:
    """abortConnection closes at once; what was held is never sent."""
    link = Link(pem)
    link.handshake()
    link.server.write(b"never")
    link.server.abortConnection()
    link.clock.advance(0)
    assert (link.transport.aborted, link.transport.value()) == (True, b"")


def test_eof_without_close_notify_is_connection_lost(pem: Path) -> None:
    """A socket closed without a close_notify reaches the wrapped protocol as ConnectionLost."""
    link = Link(pem)
    link.handshake()
    link.server.connectionLost(Failure(ConnectionDone()))
    assert link.app.lost.type is ConnectionLost


def test_plain_http_fails_with_the_ssl_error(pem: Path) -> None:
    """Plain HTTP on a TLS port closes the connection; the wrapped protocol gets the SSLError and no bytes."""
    link = Link(pem)
    link.server.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    link.server.connectionLost(Failure(ConnectionDone()))
    assert (link.transport.disconnecting, link.app.lost.type, link.app.received) == (True, ssl.SSLError, [])


def test_producer_and_pause_reach_the_socket(pem: Path) -> None:
    """A producer registered on the TLS transport is the socket's; pausing the TLS transport pauses the socket's reads."""
    link = Link(pem)
    link.handshake()
    producer = Recorder()
    link.server.registerProducer(producer, True)
    registered = link.transport.producer
    link.server.pauseProducing()
    paused = link.transport.producerState
    link.server.resumeProducing()
    link.server.unregisterProducer()
    assert (registered is producer, paused, link.transport.producerState, link.transport.producer) == (
        True, "paused", "producing", None)


@pytest.mark.parametrize(
    ("description", "args", "kwargs"),
    [
        ("ssl:443", ["ssl", "443"], {}),
        ("ssl:0:interface=127.0.0.1:privateKey=k.pem", ["ssl", "0"], {"interface": "127.0.0.1", "privateKey": "k.pem"}),
        (r"ssl:port=8443:privateKey=a\:b.pem:certKey=c=d.pem", ["ssl"],
         {"port": "8443", "privateKey": "a:b.pem", "certKey": "c=d.pem"}),
    ],
    ids=["positional", "keywords", "escaped-colon-and-equals-in-value"],
)
def test_ssl_arguments_as_twisted_parses_them(description: str, args: list[str], kwargs: dict[str, str]) -> None:
    """An ssl: string splits into the arguments Twisted's endpoint parser would see."""
    assert ssl_arguments(description) == (args, kwargs)


def _der(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text().split("-----END PRIVATE KEY-----\n")[1])


def test_context_from_description_with_an_extra_chain(pem: Path, tmp_path: Path) -> None:
    """privateKey and extraCertChain load from an ssl: string: the server's flight holds its certificate then the chain's."""
    chain_dir = tmp_path / "chain"
    chain_dir.mkdir()
    chain = self_signed_pem(chain_dir, host="127.0.0.3")
    context = context_from_description(f"ssl:0:privateKey={pem}:extraCertChain={chain}")
    server = TLSServerFactory(context, Offering([b"http/1.1"]), Clock()).buildProtocol(None)
    transport = StringTransport()
    server.makeConnection(transport)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2  # certificates travel in the clear
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    server.dataReceived(outgoing.read())
    flight = transport.value()
    own, theirs = flight.find(_der(pem)), flight.find(_der(chain))
    assert (own > 0, theirs > own) == (True, True)
