"""fephp._twisted against the installed Twisted: each use of a private name still does what fephp relies on.

When a Twisted upgrade renames or changes one of them, the test named after
that function fails here, instead of a request misbehaving somewhere.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import tcp
from twisted.internet.defer import fail
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.http_headers import Headers
from twisted.web.server import Request as SiteRequest

from fephp import _twisted


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


def test_send_pieces_now_writes_joined_bytes_through_other_transports() -> None:
    """A transport that is not a plain TCP connection gets one write() of the joined bytes."""
    transport = StringTransport()
    _twisted.send_pieces_now(transport, [b"a", memoryview(b"bc")])
    assert transport.value() == b"abc"


def _channel() -> HTTPChannel:
    channel = HTTPChannel()
    channel.makeConnection(StringTransport())
    return channel


def test_channel_between_requests_before_and_inside_a_head() -> None:
    """A fresh channel waits for a request line; once part of a head has arrived it does not."""
    channel = _channel()
    assert _twisted.channel_between_requests(channel) is True
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    assert _twisted.channel_between_requests(channel) is False


def test_channel_between_requests_after_a_tolerated_empty_line() -> None:
    """The one empty line Twisted eats before a request line (IE's after a POST) leaves the state its own parser must finish."""
    channel = _channel()
    channel.dataReceived(b"\r\n")
    assert channel._HTTPChannel__first_line == 2  # type: ignore[attr-defined]
    assert _twisted.channel_between_requests(channel) is False


def test_channel_head_progress_counts_the_head() -> None:
    """Before any byte the request line is awaited with 0 bytes read; after it and a header, their lengths are counted."""
    channel = _channel()
    assert _twisted.channel_head_progress(channel) == (True, 0)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert _twisted.channel_head_progress(channel) == (False, len(b"GET / HTTP/1.1") + len(b"Host: x"))


def test_channel_receiving_follows_a_head_then_its_body() -> None:
    """None before any byte, "head" once a line began, "body" once the head of a request with a body is in, None while it is answered."""
    channel = _channel()
    assert _twisted.channel_receiving(channel) is None
    channel.dataReceived(b"PO")
    assert _twisted.channel_receiving(channel) == "head"
    channel.dataReceived(b"ST / HTTP/1.1\r\nHost: x\r\n")
    assert _twisted.channel_receiving(channel) == "head"
    channel.dataReceived(b"Content-Length: 4\r\n\r\nab")
    assert _twisted.channel_receiving(channel) == "body"
    channel.dataReceived(b"cd")
    assert _twisted.channel_receiving(channel) is None


def test_channel_partial_line_is_the_unended_line() -> None:
    """The bytes after the last CRLF, while a head is read."""
    channel = _channel()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\nX")
    assert _twisted.channel_partial_line(channel) == b"Host: x\nX"


def test_chunk_left_counts_down_the_announced_chunk() -> None:
    """After a chunk-size line, what is left of the chunk; None between chunks and without a chunked body."""
    channel = _channel()
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert _twisted.chunk_left(channel) is None
    channel.dataReceived(b"10\r\nabc")
    assert _twisted.chunk_left(channel) == 13
    channel.dataReceived(b"d" * 13 + b"\r\n")
    assert _twisted.chunk_left(channel) is None
    channel.dataReceived(b"1" + b"0" * 40 + b"\r\n")
    assert _twisted.chunk_left(channel) == 16**40


def test_refuse_malformed_heads_with_replaces_twisteds_bare_400() -> None:
    """A head Twisted itself refuses (a bad header name) calls the given refuse(channel, 400) instead of writing its own answer."""
    refused: list[tuple[Any, int]] = []

    class Channel(HTTPChannel):
        pass

    _twisted.refuse_malformed_heads_with(Channel, lambda channel, status: refused.append((channel, status)))
    channel = Channel()
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
    assert refused == [(channel, 400)]
    assert transport.value() == b""


def test_channel_dispatch_hands_the_request_over_and_marks_the_channel_busy() -> None:
    """The request gets requestReceived(method, target, version); the channel then buffers what follows and stops its idle timer."""
    channel = _channel()
    channel.timeOut = 30
    received: list[tuple[bytes, bytes, bytes]] = []

    class Recording(Request):
        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
            received.append((command, path, version))

    request = Recording(channel)
    channel.requests.append(request)
    _twisted.channel_dispatch(channel, request, b"GET", b"/x", b"HTTP/1.1")
    assert received == [(b"GET", b"/x", b"HTTP/1.1")]
    assert channel._handlingRequest is True
    assert channel._savedTimeOut == 30
    assert channel.timeOut is None
    assert channel.line_mode == 0
    assert _twisted.channel_between_requests(channel) is False


def test_request_disconnected_follows_connection_lost() -> None:
    """A Request is not disconnected until its connection is lost."""
    request = Request(_channel())
    assert _twisted.request_disconnected(request) is False
    request.connectionLost(Failure(ConnectionDone()))
    assert _twisted.request_disconnected(request) is True


class _Unbindable:
    def listen(self, factory: Any) -> Any:
        return fail(CannotListenError("127.0.0.1", 1, OSError("in use")))


def test_raise_listen_errors_makes_the_service_raise() -> None:
    """A listener service told to raise fails at start with the endpoint's error instead of logging it."""
    service = _twisted.raise_listen_errors(StreamServerEndpointService(_Unbindable(), Factory()))  # type: ignore[arg-type]
    with pytest.raises(CannotListenError):
        service.privilegedStartService()


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


def test_observer_file_is_the_file_a_text_observer_writes() -> None:
    """The file behind twisted.logger's text observer is found; another observer has none."""
    import io

    from twisted.logger import textFileLogObserver

    out = io.StringIO()
    assert _twisted.observer_file(textFileLogObserver(out)) is out
    assert _twisted.observer_file(print) is None


def test_headers_raw_is_what_the_headers_hold() -> None:
    """A name written into headers_raw under header_name's spelling is what Headers' own lookups find."""
    headers = Headers()
    raw = _twisted.headers_raw(headers)
    raw[_twisted.header_name(b"x-request-id")] = [b"abc"]
    assert _twisted.header_name(b"CONTENT-type") == b"Content-Type"
    assert headers.getRawHeaders(b"X-REQUEST-ID") == [b"abc"]
    headers.addRawHeader(b"etag", b'"1"')
    assert raw[_twisted.header_name(b"etag")] == [b'"1"']


def test_headers_from_raw_holds_the_dict_itself() -> None:
    """Headers made from a dict of canonical names answer from that dict, without a copy."""
    raw = {b"Host": [b"example.com"], b"User-Agent": [b"curl"]}
    headers = _twisted.headers_from_raw(raw)
    assert headers.getRawHeaders(b"host") == [b"example.com"]
    assert _twisted.headers_raw(headers) is raw
    assert list(headers.getAllRawHeaders()) == [(b"Host", [b"example.com"]), (b"User-Agent", [b"curl"])]


def test_site_request_write_is_server_requests_write_without_a_default_type() -> None:
    """With no default Content-Type the shortcut sends what server.Request.write would, and adds no Content-Type."""
    outputs = []
    for write in (SiteRequest.write, _twisted.site_request_write):
        request = SiteRequest(_channel(), parsePOSTFormSubmission=False)
        request.defaultContentType = None
        request.method, request.clientproto = b"GET", b"HTTP/1.1"
        request.setHeader(b"content-length", b"2")
        write(request, b"ok")
        outputs.append(request.channel.transport.value())  # type: ignore[union-attr]
        assert not request.responseHeaders.hasHeader(b"content-type")
    assert outputs[0] == outputs[1] and outputs[0].endswith(b"\r\n\r\nok")
