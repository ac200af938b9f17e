"""Every refusal of the codec, table-driven: the exact status, whether the stream came whole, in two reads at any byte, or a byte a read.

Limits are small here (a 100-byte head, 48-byte lines, 4 header lines, a
100-byte body) so that every split point of every case runs in little time;
the default limits are checked on their own below.
"""

from __future__ import annotations

from typing import Any

import pytest

from fephp.http import BodyError, HeadError, ServerConnection, State
from fephp.web.errors import raw_error_response
from tests.support.http_codec import serve, splits_of

LIMITS: dict[str, Any] = {"max_header_size": 100, "max_line_length": 48, "max_headers": 4, "max_body_size": 100}
POST = b"POST /x HTTP/1.1\r\nHost: a\r\n"

REFUSED = [
    # (id, bytes, status)
    # Framing (RFC 9112 6; fephp/web/framing.py's rules).
    ("te-identity-then-cl", POST + b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("cl-then-te-chunked", POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400),
    ("te-identity-alone", POST + b"Transfer-Encoding: identity\r\n\r\n", 400),
    ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-chunked-gzip", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("te-twice", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("te-xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n", 400),
    ("te-empty", POST + b"Transfer-Encoding:\r\n\r\n", 400),
    ("te-on-http-1.0", b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("two-cl", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("cl-list", POST + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    ("cl-negative", POST + b"Content-Length: -3\r\n\r\n", 400),
    ("cl-plus", POST + b"Content-Length: +3\r\n\r\n", 400),
    ("cl-hex", POST + b"Content-Length: 0x3\r\n\r\nabc", 400),
    ("cl-empty", POST + b"Content-Length:\r\n\r\n", 400),
    ("cl-over-the-limit", POST + b"Content-Length: 101\r\n\r\n", 413),
    ("cl-over-the-limit-with-expect", POST + b"Content-Length: 101\r\nExpect: 100-continue\r\n\r\n", 413),
    # Head syntax (RFC 9112 2.2, 3, 5).
    ("bare-lf-line-ends", b"GET /x HTTP/1.1\nHost: a\n\n", 400),
    ("bare-lf-in-a-head", b"GET /x HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", 400),
    ("bare-lf-first", b"\nGET /x HTTP/1.1\r\n\r\n", 400),
    ("bare-cr-in-a-value", b"GET /x HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", 400),
    ("nul-in-a-value", b"GET /x HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
    ("bare-cr-as-the-blank-line", b"GET /x HTTP/1.1\r\nHost: a\r\n\r\r\n", 400),
    ("nul-in-a-head-that-never-ends", b"GET /x HTTP/1.1\r\nX: \x00\r\n", 400),
    ("folded-line", b"GET /x HTTP/1.1\r\nX: one\r\n two\r\n\r\n", 400),
    ("folded-with-tab", b"GET /x HTTP/1.1\r\nX: one\r\n\ttwo\r\n\r\n", 400),
    ("space-before-colon", b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("no-colon", b"GET /x HTTP/1.1\r\nNoColon\r\n\r\n", 400),
    ("no-colon-known-name", b"GET /x HTTP/1.1\r\nHost: a\r\nHost\r\n\r\n", 400),
    ("empty-name", b"GET /x HTTP/1.1\r\n: a\r\n\r\n", 400),
    ("bad-name", b"GET /x HTTP/1.1\r\nX(y): a\r\n\r\n", 400),
    ("method-not-a-token", b"G(T /x HTTP/1.1\r\n\r\n", 400),
    ("two-spaces", b"GET  /x HTTP/1.1\r\n\r\n", 400),
    ("no-version", b"GET /x\r\n\r\n", 400),
    ("del-in-the-target", b"GET /x\x7fy HTTP/1.1\r\n\r\n", 400),
    ("tab-in-the-target", b"GET /x\ty HTTP/1.1\r\n\r\n", 400),
    ("bad-version", b"GET /x HTTX/1.1\r\n\r\n", 400),
    ("version-1.2", b"GET /x HTTP/1.2\r\n\r\n", 400),
    ("version-2.0", b"GET /x HTTP/2.0\r\n\r\n", 505),
    ("version-0.9", b"GET /x HTTP/0.9\r\n\r\n", 505),
    ("two-empty-lines-first", b"\r\n\r\nGET /x HTTP/1.1\r\n\r\n", 400),
    # Limits (RFC 9110 15.5.15, RFC 6585 5).
    ("request-line-too-long", b"GET /" + b"a" * 50 + b" HTTP/1.1\r\n\r\n", 414),
    ("request-line-too-long-never-ended", b"GET /" + b"a" * 60, 414),
    ("header-line-too-long", b"GET / HTTP/1.1\r\nX: " + b"a" * 46 + b"\r\n\r\n", 431),
    ("head-too-large", b"GET / HTTP/1.1\r\nA: " + b"a" * 30 + b"\r\nB: " + b"b" * 30 + b"\r\nC: " + b"c" * 18 + b"\r\n\r\n", 431),
    ("head-too-large-never-ended", b"GET / HTTP/1.1\r\nA: " + b"a" * 30 + b"\r\nB: " + b"b" * 30 + b"\r\nC: " + b"c" * 18, 431),
    ("too-many-headers", b"GET / HTTP/1.1\r\nA:\r\nB:\r\nC:\r\nD:\r\nE:\r\n\r\n", 400),
    ("first-fault-wins-414-before-bare-lf", b"GET /" + b"a" * 50 + b"\n", 414),
    ("first-fault-wins-nul-before-length", b"GET / HTTP/1.1\r\nX: \x00" + b"a" * 50 + b"\r\n\r\n", 400),
    # Chunked bodies (RFC 9112 7.1).
    ("bad-chunk-size", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-with-space", POST + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-0x", POST + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-bare-lf", POST + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
    ("chunk-ext-control-byte", POST + b"Transfer-Encoding: chunked\r\n\r\n3;a\x01\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-without-its-crlf", POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400),
    ("chunk-with-lf-only", POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", 400),
    ("chunk-size-line-too-long", POST + b"Transfer-Encoding: chunked\r\n\r\n1;" + b"a" * 1100, 400),
    ("chunk-size-over-the-limit", POST + b"Transfer-Encoding: chunked\r\n\r\n65\r\n", 413),
    ("chunk-size-absurd", POST + b"Transfer-Encoding: chunked\r\n\r\n1" + b"0" * 40 + b"\r\n", 413),
    ("chunks-crossing-the-limit", POST + b"Transfer-Encoding: chunked\r\n\r\n32\r\n" + b"a" * 50 + b"\r\n33\r\n", 413),
    ("trailer-too-large", POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: " + b"a" * 120 + b"\r\n\r\n", 400),
]


@pytest.mark.parametrize(("data", "status"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_whole_and_at_every_split(data: bytes, status: int) -> None:
    """The stream is refused with its exact status and fephp's page, no request reaches the application whole, however it is split."""
    whole = serve([data], **LIMITS)
    assert (whole.refused, whole.out, whole.closing) == (status, raw_error_response(status), True)
    assert [s.whole for s in whole.seen] in ([], [False])
    for pieces in splits_of(data):
        split = serve(pieces, **LIMITS)
        assert (split.refused, split.out, split.requests()) == (whole.refused, whole.out, whole.requests()), pieces


def test_errors_carry_their_status_and_class() -> None:
    """A head refusal is a HeadError and a body refusal a BodyError, each with status and h11's error_status_hint; the connection stays refused."""
    conn = ServerConnection(max_body_size=100)
    conn.receive_data(b"GET / HTTP/1.1\r\nX: " + b"a" * 17000 + b"\r\n\r\n")
    with pytest.raises(HeadError) as caught:
        conn.next_event()
    assert (caught.value.status, caught.value.error_status_hint, conn.their_state) == (431, 431, State.ERROR)
    with pytest.raises(HeadError):
        conn.next_event()
    conn = ServerConnection(max_body_size=100)
    conn.receive_data(POST + b"Transfer-Encoding: chunked\r\n\r\n65\r\n")
    conn.next_event()
    with pytest.raises(BodyError) as body:
        conn.next_event()
    assert (body.value.status, body.value.reason) == (413, "a chunked body over limits.max_body_size")


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * 16400 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 16400 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 30) for i in range(480)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(501)) + b"\r\n", 400),
    ],
    ids=["request-line", "header-line", "head", "501-headers"],
)
def test_default_limits(data: bytes, status: int) -> None:
    """With the defaults (16 KiB head and line, 500 header lines, as Twisted's channel had) the same statuses, whole and a byte a read."""
    assert serve([data]).refused == status
    assert serve([data[i : i + 1] for i in range(len(data))]).refused == status


def test_heads_at_the_limits_are_taken() -> None:
    """A head exactly at max_header_size, a line exactly at max_line_length, and max_headers lines are not refused."""
    line = b"GET /" + b"a" * 34 + b" HTTP/1.1"  # 48 bytes
    assert len(line) == 48
    assert serve([line + b"\r\nA: 1\r\n\r\n"], **LIMITS).requests()[0][1] == b"/" + b"a" * 34
    four = b"GET / HTTP/1.1\r\nA:\r\nB:\r\nC:\r\nD:\r\n\r\n"
    assert serve([four], **LIMITS).refused is None
    exactly = b"GET / HTTP/1.1\r\nA: " + b"a" * 30 + b"\r\nB: " + b"b" * 30 + b"\r\nC: " + b"c" * 17 + b"\r\n\r\n"
    assert sum(map(len, exactly[:-4].split(b"\r\n"))) == 100
    assert serve([exactly], **LIMITS).refused is None
