"""The codec's events and bytes: streams read the same at every split point, PAUSED pipelining, and the response rules."""

from __future__ import annotations

from typing import Any

import pytest

from fephp.http import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Framing,
    LocalProtocolError,
    Request,
    ServerConnection,
    State,
)
from tests.support.http_codec import serve, splits_of

GET = b"GET /a?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n"
CHUNKED = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
LENGTH = b"PUT /l HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
CONTINUE = b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

STREAMS = [
    # (id, bytes, what the application sees, what the client gets)
    ("pipelined", GET + LENGTH + GET, [(b"GET", b""), (b"PUT", b"hello world"), (b"GET", b"")], OK * 3),
    ("chunked-then-get", CHUNKED + GET, [(b"POST", b"hello world"), (b"GET", b"")], OK * 2),
    ("100-continue", CONTINUE + GET, [(b"POST", b"abc"), (b"GET", b"")], b"HTTP/1.1 100 Continue\r\n\r\n" + OK * 2),
    ("empty-line-before-each", b"\r\n" + GET + b"\r\n" + GET, [(b"GET", b""), (b"GET", b"")], OK * 2),
    (
        "http-1.0-keep-alive-then-close",
        b"GET /1 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\nGET /3 HTTP/1.0\r\n\r\n",
        [(b"GET", b""), (b"GET", b"")],
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nokHTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "close-ends-the-pipeline",
        GET.replace(b"\r\n\r\n", b"\r\nConnection: keep-alive, Close\r\n\r\n") + GET,
        [(b"GET", b"")],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    ),
    ("raw-utf8-target", "GET /ünï?q=✓ HTTP/1.1\r\nHost: a\r\n\r\n".encode(), [(b"GET", b"")], OK),
]


@pytest.mark.parametrize(("data", "bodies", "out"), [c[1:] for c in STREAMS], ids=[c[0] for c in STREAMS])
def test_streams_read_the_same_at_every_split(data: bytes, bodies: list[tuple[bytes, bytes]], out: bytes) -> None:
    """Whole, in two reads at each byte, or a byte a read: the same requests, bodies and answers."""
    whole = serve([data])
    assert [(r[0], r[4]) for r in whole.requests()] == bodies
    assert whole.out == out
    for pieces in splits_of(data):
        split = serve(pieces)
        assert (split.requests(), split.out, split.closing) == (whole.requests(), whole.out, whole.closing), pieces


def events(conn: ServerConnection) -> list[Any]:
    found = []
    while True:
        event = conn.next_event()
        found.append(event)
        if event is NEED_DATA or event is PAUSED or type(event) is ConnectionClosed:
            return found


def test_a_get_head_is_one_request_event() -> None:
    """Method, raw target, version, lower-cased names with trimmed values in order, the framing judged, keep-alive."""
    conn = ServerConnection()
    conn.receive_data(b"GET /p?q HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nx-dup:  2 \t\r\nEmpty:\r\n\r\n")
    assert events(conn) == [
        Request(
            b"GET", b"/p?q", b"HTTP/1.1",
            [(b"host", b"a"), (b"x-dup", b"1"), (b"x-dup", b"2"), (b"empty", b"")],
            Framing.NONE, None, True, False,
        ),
        EndOfMessage(),
        NEED_DATA,
    ]


def test_a_pipelined_request_waits_paused_until_the_next_cycle() -> None:
    """The second request of one read is PAUSED until the first is answered and start_next_cycle is called."""
    conn = ServerConnection()
    conn.receive_data(GET + b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [type(e) for e in events(conn)] == [Request, EndOfMessage, type(PAUSED)]
    assert (conn.next_event(), conn.pending) == (PAUSED, len(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"))
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()  # the response is not sent
    assert conn.send_response(200, [], b"ok") == OK
    conn.start_next_cycle()
    found = events(conn)
    assert isinstance(found[0], Request) and found[0].target == b"/b" and found[1:] == [EndOfMessage(), NEED_DATA]


def test_expect_continue_is_sent_once_and_not_after_a_response() -> None:
    """100 Continue while the client waits; nothing once sent, once body bytes came, or to HTTP/1.0."""
    conn = ServerConnection()
    conn.receive_data(CONTINUE[: CONTINUE.index(b"abc")])
    request = conn.next_event()
    assert isinstance(request, Request) and request.expect_continue and conn.client_waiting_for_continue
    assert (conn.send_continue(), conn.send_continue()) == (b"HTTP/1.1 100 Continue\r\n\r\n", b"")
    conn = ServerConnection()
    conn.receive_data(CONTINUE)
    assert [type(e) for e in events(conn)][:2] == [Request, Data]
    assert conn.send_continue() == b""
    conn = ServerConnection()
    conn.receive_data(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    request = conn.next_event()
    assert isinstance(request, Request) and (request.expect_continue, conn.send_continue()) == (False, b"")


def test_client_close_mid_request_and_between_requests() -> None:
    """EOF between requests is a complete close; EOF inside a head or a body is not."""
    assert serve([GET], eof=True).closed_by_client is True
    assert serve([GET[:10]], eof=True).closed_by_client is False
    assert serve([LENGTH[:-3]], eof=True).closed_by_client is False
    assert serve([CHUNKED[:-5]], eof=True).closed_by_client is False
    conn = ServerConnection()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(True)
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")


def request_on(conn: ServerConnection, head: bytes) -> Request:
    conn.receive_data(head)
    request = conn.next_event()
    assert isinstance(request, Request)
    assert conn.next_event() == EndOfMessage()
    return request


RESPONSES = [
    # (id, request head, status, headers, body pieces, bytes out, keep-alive after)
    ("length", GET, 200, [(b"Content-Length", b"5")], [b"he", b"llo"], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True),
    (
        "chunked", GET, 200, [(b"Content-Type", b"text/plain")], [b"he", b"", b"llo"],
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", True,
    ),
    (
        "head", b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 200, [(b"Content-Length", b"5")], [b"hello"],
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", True,
    ),
    ("head-no-length", b"HEAD / HTTP/1.1\r\n\r\n", 200, [], [b"hello"], b"HTTP/1.1 200 OK\r\n\r\n", True),
    ("204", GET, 204, [], [b"x"], b"HTTP/1.1 204 No Content\r\n\r\n", True),
    ("304", GET, 304, [(b"ETag", b'"a"')], [], b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n', True),
    (
        "server-closes", GET, 200, [(b"Connection", b"close"), (b"Content-Length", b"1")], [b"x"],
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", False,
    ),
    (
        "client-closes", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 200, [(b"Content-Length", b"1")], [b"x"],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx", False,
    ),
    ("http-1.0-unframed", b"GET / HTTP/1.0\r\n\r\n", 200, [], [b"ab", b"c"], b"HTTP/1.0 200 OK\r\n\r\nabc", False),
    (
        "http-1.0-keep-alive-unframed", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, [], [b"abc"],
        b"HTTP/1.0 200 OK\r\n\r\nabc", False,
    ),
    (
        "http-1.0-keep-alive-204", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 204, [], [],
        b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n", True,
    ),
    ("reason", GET, 599, [(b"Content-Length", b"0")], [], b"HTTP/1.1 599 Unknown Status\r\nContent-Length: 0\r\n\r\n", True),
]


@pytest.mark.parametrize(
    ("head", "status", "headers", "pieces", "out", "keep"), [c[1:] for c in RESPONSES], ids=[c[0] for c in RESPONSES]
)
def test_response_framing(
    head: bytes, status: int, headers: list[tuple[bytes, bytes]], pieces: list[bytes], out: bytes, keep: bool
) -> None:
    """Content-Length or chunked, no body for HEAD/204/304, the Connection field and keep-alive as the request and response say."""
    conn = ServerConnection()
    request_on(conn, head)
    sent = conn.send_response_head(status, headers)
    for piece in pieces:
        sent += conn.send_data(piece)
    sent += conn.send_end()
    assert (sent, conn.keep_alive, conn.our_state) == (out, keep, State.DONE)


def test_pieces_are_framed_unjoined() -> None:
    """send_data_pieces frames a gathered write: the chunk's size line and CRLF around the pieces themselves."""
    conn = ServerConnection()
    request_on(conn, GET)
    conn.send_response_head(200, [])
    view = memoryview(b"world")
    framed = conn.send_data_pieces([b"hello ", view])
    assert framed == [b"b\r\n", b"hello ", view, b"\r\n"] and framed[2] is view


def test_informational_responses() -> None:
    """103 Early Hints before the response on HTTP/1.1, nothing to an HTTP/1.0 client, never after the head."""
    conn = ServerConnection()
    request_on(conn, GET)
    assert conn.send_informational(103, [(b"Link", b"</s.css>; rel=preload")]) == (
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
    )
    conn.send_response_head(200, [(b"Content-Length", b"0")])
    with pytest.raises(LocalProtocolError):
        conn.send_informational(103)
    conn = ServerConnection()
    request_on(conn, b"GET / HTTP/1.0\r\n\r\n")
    assert conn.send_informational(103, [(b"Link", b"</s.css>")]) == b""


@pytest.mark.parametrize(
    "misuse",
    [
        lambda c: c.send_data(b"x"),
        lambda c: c.send_end(),
        lambda c: (c.send_response_head(200, [(b"Content-Length", b"1")]), c.send_data(b"xy")),
        lambda c: (c.send_response_head(200, [(b"Content-Length", b"2")]), c.send_data(b"x"), c.send_end()),
        lambda c: c.send_response_head(200, [(b"Transfer-Encoding", b"chunked")]),
        lambda c: c.send_response_head(200, [(b"X", b"a\r\nSet-Cookie: evil")]),
        lambda c: c.send_response_head(200, [(b"Content-Length", b"x")]),
        lambda c: c.send_response_head(100, []),
        lambda c: (c.send_response_head(200, []), c.send_response_head(200, [])),
    ],
    ids=["data-first", "end-first", "over-length", "under-length", "caller-te", "crlf-injection", "bad-length", "1xx-head", "two-heads"],
)
def test_local_misuse_is_refused(misuse: Any) -> None:
    """What HTTP/1.1 does not allow our side raises LocalProtocolError (status 500), never sends wrong bytes."""
    conn = ServerConnection()
    request_on(conn, GET)
    with pytest.raises(LocalProtocolError) as caught:
        misuse(conn)
    assert caught.value.status == 500


def test_a_refusal_without_a_request_closes() -> None:
    """After a head refusal the response is HTTP/1.1 with Connection: close, and the cycle cannot start again."""
    conn = ServerConnection()
    conn.receive_data(b"BAD\r\n\r\n")
    with pytest.raises(Exception):
        conn.next_event()
    assert conn.send_response(400, [], b"no") == b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    assert conn.keep_alive is False


def test_timeouts_can_tell_head_from_body() -> None:
    """receiving says "head" once part of a head came, "body" while a body is read, None between requests and while answering."""
    conn = ServerConnection()
    assert conn.receiving is None
    conn.receive_data(LENGTH[:5])
    assert (conn.next_event(), conn.receiving) == (NEED_DATA, "head")
    conn.receive_data(LENGTH[5:-3])
    assert [type(e) for e in events(conn)] == [Request, Data, type(NEED_DATA)]
    assert conn.receiving == "body"
    conn.receive_data(LENGTH[-3:])
    assert [type(e) for e in events(conn)] == [Data, EndOfMessage, type(NEED_DATA)]
    assert conn.receiving is None


@pytest.mark.parametrize(
    ("line", "target"),
    [
        (b"GET http://a.example:8080/p?q HTTP/1.1", b"http://a.example:8080/p?q"),
        (b"OPTIONS * HTTP/1.1", b"*"),
        (b"CONNECT a.example:443 HTTP/1.1", b"a.example:443"),
        ("GET /ünï?q=✓ HTTP/1.1".encode(), "/ünï?q=✓".encode()),
    ],
    ids=["absolute-form", "asterisk-form", "authority-form", "raw-utf8"],
)
def test_targets_come_as_sent(line: bytes, target: bytes) -> None:
    """The codec gives the request target's bytes as sent (RFC 9112 3.2's four forms, raw UTF-8): the layer above maps them."""
    conn = ServerConnection()
    assert request_on(conn, line + b"\r\nHost: a.example\r\n\r\n").target == target
