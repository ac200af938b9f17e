"""fephp._twisted against the installed Twisted: each use of a private name still does what fephp relies on.

When a Twisted upgrade renames or changes one of them, the test named after
that function fails here, instead of a request misbehaving somewhere.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from twisted.internet import main, tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from fephp import _twisted
from tests.support.twisted_privates import twisted_private_names


def _connected_pair() -> tuple[tcp.Connection, socket.socket]:
    ours, theirs = socket.socketpair()
    connection = tcp.Connection(ours, Protocol(), reactor=MemoryReactor())  # type: ignore[arg-type]
    connection.connected = 1
    return connection, theirs


def test_send_now_sends_at_once_when_nothing_is_queued() -> None:
    """With an empty buffer the bytes reach the peer during the call, and nothing is left queued."""
    connection, peer = _connected_pair()
    with connection.socket, peer:
        _twisted.send_now(connection, b"hello")
        assert peer.recv(100) == b"hello"
        assert (connection.dataBuffer, connection._tempDataLen) == (b"", 0)


def test_send_now_queues_behind_bytes_already_written() -> None:
    """Bytes Twisted holds (write() since the last flush, counted in _tempDataLen) keep their place: the new ones queue."""
    connection, peer = _connected_pair()
    with connection.socket, peer:
        connection.write(b"first")
        assert connection._tempDataLen == 5
        _twisted.send_now(connection, b"second")
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(100)
        assert connection._tempDataLen == 11


def test_send_now_writes_through_other_transports() -> None:
    """A transport that is not a plain TCP connection just gets write()."""
    transport = StringTransport()
    _twisted.send_now(transport, b"x")
    assert transport.value() == b"x"


def test_send_pieces_now_gathers_bytes_and_views_in_one_send() -> None:
    """Bytes and memoryview pieces reach the peer in order during the call, nothing queued."""
    connection, peer = _connected_pair()
    with connection.socket, peer:
        body = b"0123456789" * 10
        _twisted.send_pieces_now(connection, [b"head|", memoryview(body)[10:30], b"|tail"])
        assert peer.recv(1000) == b"head|" + body[10:30] + b"|tail"
        assert (connection.dataBuffer, connection._tempDataLen) == (b"", 0)


def test_send_pieces_now_queues_what_the_socket_does_not_take_as_bytes() -> None:
    """Past what the socket takes, the rest of the pieces queues joined into bytes, in order."""
    connection, peer = _connected_pair()
    with connection.socket, peer:
        connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * 8192  # 2 MiB: more than the socket buffers hold
        _twisted.send_pieces_now(connection, [b"<", memoryview(big), b">"])
        assert 0 < connection._tempDataLen < len(big) + 2
        assert all(type(piece) is bytes for piece in connection._tempDataBuffer)
        sent = len(big) + 2 - connection._tempDataLen
        queued = b"".join(connection._tempDataBuffer)
        assert (b"<" + big + b">")[sent:] == queued


def test_idle_socket_only_for_a_plain_connection_with_nothing_queued() -> None:
    """The socket is lent while Twisted holds nothing for it; not once bytes are queued, nor for other transports."""
    connection, peer = _connected_pair()
    with connection.socket, peer:
        assert _twisted.idle_socket(connection) is connection.socket
        connection.write(b"queued")
        assert _twisted.idle_socket(connection) is None
    assert _twisted.idle_socket(StringTransport()) is None


class _Received(Protocol):
    """Keeps what dataReceived got."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.chunks.append(data)


@pytest.mark.parametrize("into_buffer", [False, True])
def test_plain_reads_reads_with_recv_and_reports_the_end(monkeypatch: pytest.MonkeyPatch, into_buffer: bool) -> None:
    """doRead hands each read's bytes to the protocol as bytes, None with nothing to read, CONNECTION_DONE at the end, CONNECTION_LOST on an error."""
    monkeypatch.setattr(_twisted, "_READS_INTO_BUFFER", into_buffer)
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    received = _Received()
    connection = tcp.Connection(ours, received, reactor=MemoryReactor())  # type: ignore[arg-type]
    received.makeConnection(connection)
    with ours, peer:
        assert _twisted.plain_reads(connection, 8)
        peer.sendall(b"0123456789ab")
        assert (connection.doRead(), connection.doRead()) == (None, None)
        assert received.chunks == [b"01234567", b"89ab"]
        assert [type(chunk) for chunk in received.chunks] == [bytes, bytes]
        assert connection.doRead() is None  # nothing waits: EWOULDBLOCK
        peer.shutdown(socket.SHUT_WR)
        assert connection.doRead() is main.CONNECTION_DONE
    assert connection.doRead() is main.CONNECTION_LOST  # its socket closed: EBADF
    assert received.chunks == [b"01234567", b"89ab"]


def test_plain_reads_leaves_other_transports_alone() -> None:
    """A transport that is not a plain connection keeps its own reads."""
    transport = StringTransport()
    assert not _twisted.plain_reads(transport, 8)
    assert "doRead" not in vars(transport)


def test_send_pieces_now_writes_joined_bytes_through_other_transports() -> None:
    """A transport that is not a plain TCP connection gets one write() of the joined bytes."""
    transport = StringTransport()
    _twisted.send_pieces_now(transport, [b"a", memoryview(b"bc")])
    assert transport.value() == b"abc"


def test_endpoint_arguments_split_and_unescape() -> None:
    """A systemd: string splits into no positional arguments and its keyword arguments; escaped colons are undone."""
    assert _twisted.endpoint_arguments("systemd:domain=INET:index=0") == ((), {"domain": "INET", "index": "0"})
    assert _twisted.endpoint_arguments("systemd:domain=UNIX:name=a\\:b") == ((), {"domain": "UNIX", "name": "a:b"})


def test_adopt_listening_port_duplicates_the_descriptor() -> None:
    """The adopted port listens on the same address through a descriptor of its own."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(1)
    with listening:
        port = _twisted.adopt_listening_port(tcp.Port, MemoryReactor(), listening.fileno(), Factory(), socket.AF_INET)
        port.startListening()
        try:
            assert port.fileno() != listening.fileno()
            assert port.getHost().port == listening.getsockname()[1]
        finally:
            port.socket.close()


class _Reader:
    """A reader for a reactor's loop on one end of a socket pair: what it read, each call, and why it was dropped."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.calls: list[str] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:  # noqa: N802 - Twisted's name
        self.calls.append(self.sock.recv(10).decode())

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        return "reader"

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        self.lost.append(reason)


def test_epoll_poll_and_dispatch_calls_a_ready_reader() -> None:
    """One turn of the loop finds a readable socket and calls its doRead."""
    epollreactor = pytest.importorskip("twisted.internet.epollreactor", reason="epoll is Linux's")
    reactor = epollreactor.EPollReactor()
    ours, theirs = socket.socketpair()
    reader = _Reader(ours)
    calls = reader.calls
    try:
        reactor.addReader(reader)  # type: ignore[arg-type]
        theirs.send(b"ping")
        _twisted.epoll_poll_and_dispatch(reactor, 1.0)
        assert calls == ["ping"]
    finally:
        reactor.removeReader(reader)  # type: ignore[arg-type]
        reactor._poller.close()
        ours.close()
        theirs.close()


def test_select_and_dispatch_calls_a_ready_reader_and_recovers_a_closed_one() -> None:
    """One turn of the select() loop calls a readable socket's doRead; a descriptor closed meanwhile is dropped."""
    from twisted.internet.selectreactor import SelectReactor

    reactor = SelectReactor()
    ours, theirs = socket.socketpair()
    reader = _Reader(ours)
    calls, lost = reader.calls, reader.lost
    try:
        reactor.addReader(reader)  # type: ignore[arg-type]
        theirs.send(b"ping")
        _twisted.select_and_dispatch(reactor, 1.0)
        assert calls == ["ping"]
        ours.close()
        _twisted.select_and_dispatch(reactor, 0)
        assert len(lost) == 1 and reader not in reactor.getReaders()
    finally:
        ours.close()
        theirs.close()


def test_header_name_is_headers_own_spelling() -> None:
    """A name in any case comes back as Headers keys it, the same object for the same spelling once learnt."""
    assert _twisted.header_name(b"CONTENT-type") == b"Content-Type"
    assert _twisted.header_name(b"x-request-id") == b"X-Request-Id"
    assert _twisted.header_name(b"x-request-id") is _twisted.header_name(b"x-request-id")


def test_headers_raw_is_what_the_headers_hold() -> None:
    """A name written into headers_raw under header_name's spelling is what Headers' own lookups find."""
    headers = Headers()
    raw = _twisted.headers_raw(headers)
    raw[_twisted.header_name(b"x-request-id")] = [b"abc"]
    assert _twisted.header_name(b"CONTENT-type") == b"Content-Type"
    assert headers.getRawHeaders(b"X-REQUEST-ID") == [b"abc"]
    headers.addRawHeader(b"etag", b'"1"')
    assert raw[_twisted.header_name(b"etag")] == [b'"1"']


def test_observer_file_is_the_file_a_text_observer_writes() -> None:
    """The file behind twisted.logger's text observer is found; another observer has none."""
    import io

    from twisted.logger import textFileLogObserver

    out = io.StringIO()
    assert _twisted.observer_file(textFileLogObserver(out)) is out
    assert _twisted.observer_file(print) is None




#: Every private name of Twisted's that fephp/_twisted.py reaches (tests/support/twisted_privates.py says what
#: counts), with the feature that needs it; 22 before the HTTPChannel path moved to
#: tests/support/reference_http1.py (and raise_listen_errors, which nothing called, went).
DOOR_PRIVATES = {
    # send_now, send_pieces_now, idle_socket: a response head and body in one send with no epoll_ctl, a large one
    # gathered by sendmsg, os.sendfile past Twisted's buffer (web/h1.py, backend/protocol.py, server/tls.py, bench).
    "_tempDataLen",
    # endpoint_arguments: checking a systemd: listener string (server/config.py).
    "twisted.internet.endpoints._parseServer",
    # adopt_listening_port: the worker processes' shared listening sockets (server/worker.py).
    "_fromListeningDescriptor",
    # epoll_poll_and_dispatch, select_and_dispatch: the reactor loop without a log context per event
    # (server/reactor.py, bench/reactor.py).
    "_poller",
    "_selectables",
    "_doReadOrWrite",
    "_reads",
    "_writes",
    # observer_file: reopening twistd's log file on SIGUSR1, JSON lines (server/logs.py).
    "_outFile",
    # headers_raw: RequestExchange's header reads (fephp.web.PHPResource in anyone's twisted.web Site).
    "_rawHeaders",
}


def test_the_door_reaches_these_private_names_and_no_other() -> None:
    """The private names fephp/_twisted.py reaches are exactly DOOR_PRIVATES: a new one is added there with its reason."""
    source = Path(_twisted.__file__).read_text(encoding="utf-8")
    assert twisted_private_names(source) == DOOR_PRIVATES
