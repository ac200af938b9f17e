"""The bench's HTTP/1.1 response parser, fed whole, split at every byte, and fed nonsense."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fephp.bench.client import MAX_HEADER_BYTES, MalformedResponse, ResponseParser

LENGTH_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: t\r\n\r\nhello"
CHUNKED_RESPONSE = (
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n"
    b"A\r\n0123456789\r\n"
    b"0\r\nX-Trailer: yes\r\n\r\n"
)


def feed_all(parser: ResponseParser, pieces: list[bytes]) -> list[bool]:
    return [parser.feed(piece) for piece in pieces]


def split_everywhere(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(1, len(data))]


@pytest.mark.parametrize("response", [LENGTH_RESPONSE, CHUNKED_RESPONSE], ids=["length", "chunked"])
def test_complete_only_after_the_last_byte_at_every_split(response: bytes) -> None:
    """However the bytes are cut, the response completes with its last byte and not before."""
    for pieces in [[response]] + split_everywhere(response):
        parser = ResponseParser()
        parser.expect()
        assert feed_all(parser, pieces)[-1] is True
        assert not any(feed_all(parser, [])), "nothing fed, nothing done"
        assert parser.idle
        assert parser.received == len(response)
        assert parser.keep_alive is True


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_chunked_byte_at_a_time_pieces(sizes: list[int]) -> None:
    """A chunked response cut into arbitrary pieces completes exactly at its end."""
    pieces = []
    rest = CHUNKED_RESPONSE
    for size in sizes:
        if len(rest) <= 1:
            break
        pieces.append(rest[:size])
        rest = rest[size:]
    if rest:
        pieces.append(rest)
    parser = ResponseParser()
    parser.expect()
    results = feed_all(parser, pieces)
    assert results[-1] is True and not any(results[:-1])
    assert parser.status == 201


def test_status_and_keep_alive_rules() -> None:
    """HTTP/1.1 keeps alive unless told to close; HTTP/1.0 closes unless told to keep alive."""
    cases = {
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n": (404, True),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n": (200, False),
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nCONNECTION:  Close \r\n\r\n": (200, False),
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n": (200, False),
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n": (200, True),
        b"HTTP/1.1 204 No Content\r\n\r\n": (204, True),
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n": (304, True),
    }
    for raw, (status, keep_alive) in cases.items():
        parser = ResponseParser()
        parser.expect()
        assert parser.feed(raw) is True, raw
        assert (parser.status, parser.keep_alive) == (status, keep_alive), raw


def test_head_response_has_no_body_despite_its_length() -> None:
    """An answer to HEAD ends with its header block."""
    parser = ResponseParser()
    parser.expect(no_body=True)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n") is True


def test_interim_response_is_skipped() -> None:
    """100 Continue is followed by the final response, which is the one reported."""
    parser = ResponseParser()
    parser.expect()
    assert parser.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n") is False
    assert parser.feed(b"ok") is True
    assert parser.status == 200


def test_body_delimited_by_close() -> None:
    """Without a length or chunking the body runs until a clean close, which completes it."""
    parser = ResponseParser()
    parser.expect()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome") is False
    assert parser.feed(b" more") is False
    assert parser.keep_alive is False
    assert parser.connection_closed() is True
    assert parser.idle


def test_close_before_the_length_is_reached_is_not_complete() -> None:
    """A close in the middle of a Content-Length body leaves the response incomplete."""
    parser = ResponseParser()
    parser.expect()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345") is False
    assert parser.connection_closed() is False


def test_parser_is_reusable_for_the_next_response() -> None:
    """expect() resets status, byte count and keep-alive for a new response on the same connection."""
    parser = ResponseParser()
    parser.expect()
    parser.feed(b"HTTP/1.1 500 Oops\r\nContent-Length: 1\r\n\r\nx")
    parser.expect()
    assert (parser.status, parser.received) == (0, 0)
    assert parser.feed(LENGTH_RESPONSE) is True
    assert (parser.status, parser.received) == (200, len(LENGTH_RESPONSE))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"garbage\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/2 200 OK\r\n\r\n", id="http2"),
        pytest.param(b"HTTP/1.1 20 OK\r\n\r\n", id="short-status"),
        pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", id="word-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", id="two-lengths"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", id="bad-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxy", id="bytes-after-body"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk-size"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", id="negative-chunk"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxyz", id="chunk-without-crlf"),
    ],
)
def test_malformed_responses_raise(raw: bytes) -> None:
    """Bytes that are not a well-formed HTTP/1.x response raise MalformedResponse."""
    parser = ResponseParser()
    parser.expect()
    with pytest.raises(MalformedResponse):
        parser.feed(raw)


def test_header_block_is_bounded() -> None:
    """A header block that never ends is refused once it passes MAX_HEADER_BYTES."""
    parser = ResponseParser()
    parser.expect()
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(MalformedResponse):
        for _ in range(MAX_HEADER_BYTES // 1000 + 2):
            parser.feed(b"X-Filler: " + b"a" * 990 + b"\r\n")


def test_bytes_while_idle_are_malformed() -> None:
    """A server that talks when no request is outstanding is broken."""
    parser = ResponseParser()
    with pytest.raises(MalformedResponse):
        parser.feed(b"HTTP/1.1 200 OK\r\n\r\n")
