"""CGI response head parser: status, headers, limits and malformed output, at every split point."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fephp.cgi.response import CGIHead, CGIResponseError, HeadParser

HTML = (b"Content-type", b"text/html; charset=UTF-8")
DEFAULT_TYPE = (b"Content-Type", b"text/html")

# (id, STDOUT as PHP wrote it, head, body bytes that followed it)
CASES: list[tuple[str, bytes, CGIHead, bytes]] = [
    ("php-plain", b"Content-type: text/html; charset=UTF-8\r\n\r\n<p>hi</p>", CGIHead(200, b"OK", [HTML]), b"<p>hi</p>"),
    ("empty-body", b"X-A: b\r\nContent-type: text/html; charset=UTF-8\r\n\r\n", CGIHead(200, b"OK", [(b"X-A", b"b"), HTML]), b""),
    ("status", b"Status: 404 Not Found\r\nContent-type: text/plain\r\n\r\nnope",
     CGIHead(404, b"Not Found", [(b"Content-type", b"text/plain")]), b"nope"),
    ("status-custom-reason", b"Status: 418 Short And Stout\r\n\r\n", CGIHead(418, b"Short And Stout", [DEFAULT_TYPE]), b""),
    ("status-without-reason", b"Status: 503\r\n\r\n", CGIHead(503, b"Service Unavailable", [DEFAULT_TYPE]), b""),
    ("status-unknown-code", b"Status: 299\r\n\r\n", CGIHead(299, b"", [DEFAULT_TYPE]), b""),
    ("status-lower-case", b"status: 201 Created\r\n\r\n", CGIHead(201, b"Created", [DEFAULT_TYPE]), b""),
    ("status-extra-space", b"Status:   403   Forbidden  \r\n\r\n", CGIHead(403, b"Forbidden", [DEFAULT_TYPE]), b""),
    ("status-after-headers", b"X-A: 1\r\nStatus: 500 Internal Server Error\r\nX-B: 2\r\n\r\n",
     CGIHead(500, b"Internal Server Error", [(b"X-A", b"1"), (b"X-B", b"2"), DEFAULT_TYPE]), b""),
    ("php-redirect", b"Status: 302 Found\r\nLocation: /x\r\nContent-type: text/html; charset=UTF-8\r\n\r\n",
     CGIHead(302, b"Found", [(b"Location", b"/x"), HTML]), b""),
    ("location-absolute", b"Location: https://example.org/\r\n\r\n",
     CGIHead(302, b"Found", [(b"Location", b"https://example.org/"), DEFAULT_TYPE]), b""),
    ("location-local", b"Location: /login\r\n\r\n", CGIHead(302, b"Found", [(b"Location", b"/login"), DEFAULT_TYPE]), b""),
    ("location-with-status", b"Status: 301 Moved Permanently\r\nLocation: /new\r\n\r\n",
     CGIHead(301, b"Moved Permanently", [(b"Location", b"/new"), DEFAULT_TYPE]), b""),
    ("location-201", b"Status: 201\r\nLocation: /items/7\r\nContent-Type: application/json\r\n\r\n{}",
     CGIHead(201, b"Created", [(b"Location", b"/items/7"), (b"Content-Type", b"application/json")]), b"{}"),
    ("set-cookie-kept-apart", b"Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2, c\r\nContent-Type: text/plain\r\n\r\n",
     CGIHead(200, b"OK", [(b"Set-Cookie", b"a=1; Path=/"), (b"Set-Cookie", b"b=2, c"), (b"Content-Type", b"text/plain")]), b""),
    ("name-case-kept", b"x-MiXeD: v\r\nCONTENT-TYPE: text/css\r\n\r\n",
     CGIHead(200, b"OK", [(b"x-MiXeD", b"v"), (b"CONTENT-TYPE", b"text/css")]), b""),
    ("no-content-type", b"X-A: b\r\n\r\nbody", CGIHead(200, b"OK", [(b"X-A", b"b"), DEFAULT_TYPE]), b"body"),
    ("no-content-type-204", b"Status: 204 No Content\r\n\r\n", CGIHead(204, b"No Content", []), b""),
    ("no-content-type-304", b"Status: 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
     CGIHead(304, b"Not Modified", [(b"ETag", b"\"x\"")]), b""),
    ("empty-content-type-kept", b"Content-Type:\r\n\r\n1", CGIHead(200, b"OK", [(b"Content-Type", b"")]), b"1"),
    ("lf-only", b"Status: 404\nContent-Type: text/plain\n\nbody", CGIHead(404, b"Not Found", [(b"Content-Type", b"text/plain")]), b"body"),
    ("mixed-endings", b"A: 1\nB: 2\r\n\nbody", CGIHead(200, b"OK", [(b"A", b"1"), (b"B", b"2"), DEFAULT_TYPE]), b"body"),
    ("lf-then-crlf-blank", b"A: 1\n\r\nbody", CGIHead(200, b"OK", [(b"A", b"1"), DEFAULT_TYPE]), b"body"),
    ("empty-head", b"\r\nbody", CGIHead(200, b"OK", [DEFAULT_TYPE]), b"body"),
    ("empty-head-lf", b"\nbody", CGIHead(200, b"OK", [DEFAULT_TYPE]), b"body"),
    ("value-whitespace-trimmed", b"X-A:\t  v  w \t\r\n\r\n", CGIHead(200, b"OK", [(b"X-A", b"v  w"), DEFAULT_TYPE]), b""),
    ("colon-in-value", b"X-Time: 12:30:00\r\n\r\n", CGIHead(200, b"OK", [(b"X-Time", b"12:30:00"), DEFAULT_TYPE]), b""),
    ("obs-text-value", "X-Name: ünï\r\n\r\n".encode(), CGIHead(200, b"OK", [(b"X-Name", "ünï".encode()), DEFAULT_TYPE]), b""),
    ("body-looks-like-head", b"Content-Type: text/plain\r\n\r\nStatus: 500\r\n\r\nX: y\n\n",
     CGIHead(200, b"OK", [(b"Content-Type", b"text/plain")]), b"Status: 500\r\n\r\nX: y\n\n"),
    ("binary-body", b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\x00",
     CGIHead(200, b"OK", [(b"Content-Type", b"image/png")]), b"\x89PNG\r\n\x1a\n\x00"),
]


def feed_pieces(pieces: list[bytes], max_head_size: int = 64 * 1024) -> tuple[CGIHead, bytes]:
    """Feed *pieces* in order; the head and the body bytes that came with or after it."""
    parser = HeadParser(max_head_size)
    body = b""
    result = None
    for piece in pieces:
        if result is None:
            result = parser.feed(piece)
        else:
            body += piece
    if result is None:
        parser.finish()
    head, first = result
    return head, first + body


@pytest.mark.parametrize(("data", "head", "body"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_chunk(data: bytes, head: CGIHead, body: bytes) -> None:
    """A whole response in one chunk gives exactly this head and these body bytes."""
    assert HeadParser().feed(data) == (head, body)


@pytest.mark.parametrize(("data", "head", "body"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_split_point(data: bytes, head: CGIHead, body: bytes) -> None:
    """Fed byte by byte, or in two pieces cut at any offset, the result is the same as in one chunk."""
    assert feed_pieces([data[i : i + 1] for i in range(len(data))]) == (head, body)
    for cut in range(len(data) + 1):
        assert feed_pieces([data[:cut], data[cut:]]) == (head, body), cut


MALFORMED: list[tuple[str, bytes]] = [
    ("no-colon", b"Content-Type text/html\r\n\r\n"),
    ("space-before-colon", b"Content-Type : text/html\r\n\r\n"),
    ("tab-before-colon", b"Content-Type\t: text/html\r\n\r\n"),
    ("obs-fold", b"X-A: 1\r\n  continued\r\n\r\n"),
    ("obs-fold-tab", b"X-A: 1\r\n\tcontinued\r\n\r\n"),
    ("leading-space", b" X-A: 1\r\n\r\n"),
    ("empty-name", b": v\r\n\r\n"),
    ("nul-in-value", b"X-A: a\x00b\r\n\r\n"),
    ("nul-in-name", b"X-\x00A: b\r\n\r\n"),
    ("bare-cr", b"X-A: a\rSet-Cookie: evil=1\r\n\r\n"),
    ("cr-cr-lf", b"X-A: a\r\r\n\r\n"),
    ("control-in-value", b"X-A: a\x1bb\r\n\r\n"),
    ("del-in-value", b"X-A: a\x7fb\r\n\r\n"),
    ("bad-name-char", b"X(A): b\r\n\r\n"),
    ("non-ascii-name", "Ünï: b\r\n\r\n".encode()),
    ("status-word", b"Status: OK\r\n\r\n"),
    ("status-two-digits", b"Status: 20\r\n\r\n"),
    ("status-four-digits", b"Status: 2000\r\n\r\n"),
    ("status-glued-reason", b"Status: 200OK\r\n\r\n"),
    ("status-empty", b"Status:\r\n\r\n"),
    ("status-1xx", b"Status: 100 Continue\r\n\r\n"),
    ("status-101", b"Status: 101 Switching Protocols\r\n\r\n"),
    ("status-600", b"Status: 600\r\n\r\n"),
    ("status-negative", b"Status: -200\r\n\r\n"),
    ("status-twice", b"Status: 200\r\nStatus: 404\r\n\r\n"),
    ("http-status-line", b"HTTP/1.1 200 OK\r\n\r\n"),
]


@pytest.mark.parametrize("data", [c[1] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed(data: bytes) -> None:
    """A malformed head is a CGIResponseError (502), whole or fed byte by byte."""
    with pytest.raises(CGIResponseError) as whole:
        HeadParser().feed(data)
    assert whole.value.http_status == 502
    with pytest.raises(CGIResponseError):
        feed_pieces([data[i : i + 1] for i in range(len(data))])


SIZE_CASES: list[tuple[str, int, bool]] = [
    ("fits-exactly", 0, True),
    ("one-byte-over", 1, False),
    ("far-over", 1000, False),
]


@pytest.mark.parametrize(("extra", "fits"), [c[1:] for c in SIZE_CASES], ids=[c[0] for c in SIZE_CASES])
def test_head_size_bound(extra: int, fits: bool) -> None:
    """A head of max_head_size bytes (blank line included) is parsed; one byte more is refused however it is fed."""
    limit = 100
    head = b"X-Pad: " + b"p" * (limit - len(b"X-Pad: \r\n\r\n") + extra) + b"\r\n\r\n"
    data = head + b"body" * 50
    expected = (CGIHead(200, b"OK", [(b"X-Pad", head[7:-4]), (b"Content-Type", b"text/html")]), b"body" * 50)
    splits = [[data], [data[i : i + 1] for i in range(len(data))], [data[:limit - 1], data[limit - 1 :]]]
    for pieces in splits:
        if fits:
            assert feed_pieces(pieces, limit) == expected
        else:
            with pytest.raises(CGIResponseError):
                feed_pieces(pieces, limit)


def test_endless_head_is_bounded() -> None:
    """A script that never ends its head is refused once max_head_size bytes are buffered, not later."""
    parser = HeadParser(1024)
    for _ in range(1023 // 7):
        assert parser.feed(b"X: 12\r\n") is None
    with pytest.raises(CGIResponseError):
        parser.feed(b"X: 12\r\n")


FINISH_CASES: list[tuple[str, list[bytes], str]] = [
    ("nothing", [], "no output from the script"),
    ("empty-chunks", [b"", b""], "no output from the script"),
    ("cut-in-a-line", [b"Content-Type: te"], "output ended inside the response head"),
    ("cut-after-a-line", [b"Content-Type: text/html\r\n"], "output ended inside the response head"),
    ("cut-in-the-blank-line", [b"Content-Type: text/html\r\n\r"], "output ended inside the response head"),
]


@pytest.mark.parametrize(("pieces", "message"), [c[1:] for c in FINISH_CASES], ids=[c[0] for c in FINISH_CASES])
def test_finish_before_blank_line(pieces: list[bytes], message: str) -> None:
    """A stream that ends before the blank line is a 502: PHP always ends its head, even without a body."""
    parser = HeadParser()
    for piece in pieces:
        assert parser.feed(piece) is None
    with pytest.raises(CGIResponseError, match=message) as error:
        parser.finish()
    assert error.value.http_status == 502


def test_feed_after_head_is_a_bug() -> None:
    """Once the head is out, body bytes go straight to the client; feeding or finishing the parser raises."""
    parser = HeadParser()
    assert parser.feed(b"\r\n") == (CGIHead(200, b"OK", [(b"Content-Type", b"text/html")]), b"")
    with pytest.raises(RuntimeError):
        parser.feed(b"more")
    with pytest.raises(RuntimeError):
        parser.finish()


names = st.from_regex(rb"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}\Z").filter(
    lambda n: n.lower() not in (b"status", b"location", b"content-type")
)
values = st.from_regex(rb"\A[\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff]{0,30}[\x21-\x7e\x80-\xff])?\Z")


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(st.tuples(names, values), max_size=8),
    newline=st.sampled_from([b"\r\n", b"\n"]),
    body=st.binary(max_size=64),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_round_trip(headers: list[tuple[bytes, bytes]], newline: bytes, body: bytes, cuts: list[int]) -> None:
    """Any valid head, cut anywhere, gives back its headers in order and the body untouched."""
    data = b"".join(n + b": " + v + newline for n, v in headers) + newline + body
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    head, rest = feed_pieces(pieces)
    assert head == CGIHead(200, b"OK", [*headers, (b"Content-Type", b"text/html")])
    assert rest == body


# The regex the head's control check used before it became a translate(): the same bytes must be refused.
_OLD_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def test_control_check_matches_the_old_regex_on_every_byte() -> None:
    """Each of the 256 byte values in a header value is refused as a control character exactly when the old regex refused it."""
    for value in range(256):
        data = b"X-A: a" + bytes((value,)) + b"b\r\n\r\n"
        try:
            HeadParser().feed(data)
            message = None
        except CGIResponseError as e:
            message = str(e)
        refused = message == "control character in the response head"
        assert (value, refused) == (value, _OLD_CONTROL.search(bytes((value,))) is not None)
