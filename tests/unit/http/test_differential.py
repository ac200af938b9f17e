"""fephp's codec against the channel it replaced: the same byte streams, whole and split at every byte, through both.

The reference is Twisted's HTTPChannel as fephp bent it, its HTTP/1.x
engine before fephp.web.h1 (kept in tests/support/reference_http1.py as the
reference only), over an in-memory transport, with a resource
that records each request and answers ``ok``; the codec is driven by
:func:`tests.support.http_codec.serve`, which answers the same way.  What
the application sees (method, target, version, headers, body of each
request) and what the client gets (each response's status line, framing
and Connection fields and body, the 100 Continue, the refusal page, the
close) must be equal, except for the differences listed in DIFFERENCES,
each with the RFC clause it follows.

fephp's own HTTP/1.x protocol (fephp.web.h1), the codec's glue to Twisted,
is held to more: a FrontSite serving with its own protocol must send byte
for byte what the channel sends (Date and X-Request-Id values aside, a
clock and a random prefix), and where the codec differs on purpose it
answers as the codec does.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import pytest

from tests.support.http_codec import ChannelRun, Served, pieces_at, serve, splits_of

MAX_HEADER_SIZE = 200
MAX_BODY_SIZE = 100

#: One request as the application saw it: method, target, version, {lower-case name: values in order}, body.
Seen = tuple[bytes, bytes, bytes, dict[bytes, list[bytes]], bytes]
#: One response as the client got it: status line, {framing or Connection field: values}, body.
Got = tuple[bytes, dict[bytes, list[bytes]], bytes]


def through_the_channel(pieces: Sequence[bytes]) -> tuple[list[Seen], bytes, bool]:
    """The reference: each piece one read of fephp's current HTTP/1.1 channel, until it starts closing."""
    run = ChannelRun(max_header_size=MAX_HEADER_SIZE, max_body_size=MAX_BODY_SIZE)
    run.feed(pieces)
    return run.seen, run.out, run.closing


def through_the_codec(pieces: Sequence[bytes]) -> tuple[list[Seen], bytes, bool]:
    served: Served = serve(pieces, max_header_size=MAX_HEADER_SIZE, max_body_size=MAX_BODY_SIZE)
    seen = []
    for method, target, version, fields, body in served.requests():
        if body is None:
            continue  # never whole: the channel never renders it
        headers: dict[bytes, list[bytes]] = {}
        for name, value in fields:
            headers.setdefault(name, []).append(value)
        seen.append((method, target, version, headers, body))
    return seen, served.out, served.closing


def responses(raw: bytes, methods: Sequence[bytes]) -> list[Got]:
    """The responses in *raw*, read as a client that sent requests of *methods* in order (HEAD's has no body)."""
    got: list[Got] = []
    left = iter(methods)
    at = 0
    while at < len(raw):
        end = raw.index(b"\r\n\r\n", at)
        lines = raw[at:end].split(b"\r\n")
        at = end + 4
        fields: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields.setdefault(name.lower(), []).append(value.strip())
        status = int(lines[0].split(b" ")[1])
        kept = {k: v for k, v in fields.items() if k in (b"content-length", b"transfer-encoding", b"connection")}
        if status < 200:
            got.append((lines[0], kept, b""))
            continue
        method = next(left, b"GET")
        if method == b"HEAD" or status in (204, 304):
            body = b""
        elif b"content-length" in fields:
            size = int(fields[b"content-length"][0])
            body, at = raw[at : at + size], at + size
        elif fields.get(b"transfer-encoding") == [b"chunked"]:
            body = b""
            while True:
                eol = raw.index(b"\r\n", at)
                size = int(raw[at:eol], 16)
                body += raw[eol + 2 : eol + 2 + size]
                at = eol + 2 + size + 2
                if not size:
                    break
        else:
            body, at = raw[at:], len(raw)
        got.append((lines[0], kept, body))
    return got


def outcome(run: tuple[list[Seen], bytes, bool]) -> tuple[list[Seen], list[Got], bool]:
    seen, raw, closing = run
    return seen, responses(raw, [s[0] for s in seen]), closing


POST = b"POST /x HTTP/1.1\r\nHost: a\r\n"
GET = b"GET /g?q=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"

SAME = [
    # Streams both read alike.
    ("get", GET),
    ("pipelined", GET + b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n" + POST + b"Content-Length: 3\r\n\r\nabc" + GET),
    ("repeated-fields", b"GET / HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nx-dup:  2 \t\r\nEmpty:\r\nCookie: a=1\r\n\r\n"),
    ("chunked", POST + b"Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n2\r\n, \r\n0\r\nX-T: 1\r\n\r\n" + GET),
    ("chunked-any-case", POST + b"transfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("chunked-up-to-the-limit", POST + b"Transfer-Encoding: chunked\r\n\r\n64\r\n" + b"a" * 100 + b"\r\n0\r\n\r\n"),
    ("100-continue", POST + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc" + GET),
    ("100-continue-without-body", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n"),
    ("content-length-zero", POST + b"Content-Length: 0\r\n\r\n" + GET),
    ("http-1.0", b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n" + GET),
    ("http-1.0-keep-alive", b"GET /x HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\nHEAD /y HTTP/1.0\r\nHost: a\r\n\r\n"),
    ("http-1.0-body", b"POST /x HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"),
    ("connection-close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET),
    ("empty-line-first", b"\r\n" + GET + b"\r\n" + GET),
    ("raw-utf8-target", "GET /ünï?q=✓ HTTP/1.1\r\nHost: a\r\n\r\n".encode()),
    ("odd-method", b"PROPFIND /dav HTTP/1.1\r\nHost: a\r\n\r\n"),
    # Refused alike: framing (RFC 9112 6), head syntax, limits.
    ("te-identity-then-cl", POST + b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello"),
    ("cl-then-te-chunked", POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("te-chunked-gzip", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ("te-twice", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-on-http-1.0", b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("two-cl", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("cl-hex", POST + b"Content-Length: 0x3\r\n\r\nabc"),
    ("cl-over-the-limit-with-expect", POST + b"Content-Length: 101\r\nExpect: 100-continue\r\n\r\n"),
    ("bare-lf-line-ends", b"GET /x HTTP/1.1\nHost: a\n\n"),
    ("bare-lf-in-a-head", b"GET /x HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n"),
    ("cr-in-a-value", b"GET /x HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n"),
    # Found by test_fuzz.py: a line that is a bare CR, in a head that never ends.
    ("bare-cr-as-the-blank-line", b"GET /x HTTP/1.1\r\nHost: a\r\n\r\r\n"),
    ("bad-request-line-in-a-head-that-never-ends", b"GET /x\x01 HTTP/1.1\r\nHost: a\r\n"),
    ("nul-in-a-value", b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"),
    ("folded", b"GET /x HTTP/1.1\r\nHost: a\r\nX: one\r\n two\r\n\r\n"),
    ("bad-name", b"GET /x HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"),
    ("no-colon", b"GET /x HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"),
    ("del-in-the-target", b"GET /x\x7fy HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("two-spaces", b"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("version-1.2", b"GET /x HTTP/1.2\r\nHost: a\r\n\r\n"),
    ("request-line-too-long", b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("head-too-large", b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: " + b"a" * 90 + b"\r\nY: " + b"b" * 90 + b"\r\n\r\n"),
    ("bad-chunk-size", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ("chunk-without-its-crlf", POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"),
    ("chunk-size-over-the-limit", POST + b"Transfer-Encoding: chunked\r\n\r\n65\r\n"),
    ("chunks-crossing-the-limit", POST + b"Transfer-Encoding: chunked\r\n\r\n32\r\n" + b"a" * 50 + b"\r\n33\r\n"),
    ("refused-after-a-good-one", GET + b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"),
]


@pytest.mark.parametrize("data", [c[1] for c in SAME], ids=[c[0] for c in SAME])
def test_the_codec_reads_as_the_channel_does(data: bytes) -> None:
    """Whole, in two reads at every byte and a byte a read: the same requests seen and the same answers as fephp's channel."""
    expected = outcome(through_the_channel([data]))
    assert outcome(through_the_codec([data])) == expected
    for pieces in splits_of(data):
        assert outcome(through_the_codec(pieces)) == expected, pieces
        assert outcome(through_the_channel(pieces)) == expected, pieces


#: Where the codec differs from the channel on purpose: (id, bytes, the channel's statuses, the codec's, the rule).
DIFFERENCES = [
    (
        "version-2.0",
        b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n",
        [b"HTTP/1.1 400 Bad Request"],
        [b"HTTP/1.1 505 HTTP Version Not Supported"],
        "RFC 9110 15.6.6: 505 for a major version the server does not support (as nginx); Twisted answers any bad version 400",
    ),
    (
        "connection-tokens-are-a-list",
        b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close,te\r\n\r\n" + GET,
        [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"],
        [b"HTTP/1.1 200 OK"],
        "RFC 9110 7.6.1: Connection is a comma-separated list; Twisted splits its first line on spaces and misses 'close,te'",
    ),
    (
        "quoted-pair-in-a-chunk-extension",
        POST + b'Transfer-Encoding: chunked\r\n\r\n3;a="b\\"c"\r\nabc\r\n0\r\n\r\n',
        [b"HTTP/1.1 400 Bad Request"],
        [b"HTTP/1.1 200 OK"],
        "RFC 9112 7.1.1: chunk-ext-val may be a quoted-string, whose quoted-pair has a backslash; Twisted refuses backslashes",
    ),
    (
        "a-header-line-judged-when-it-ends",
        b"GET /x HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n",
        [],
        [b"HTTP/1.1 400 Bad Request"],
        "RFC 9112 5.1/5.2: a field line is whole at its CRLF (obs-fold is refused); Twisted reads it when the next line begins",
    ),
    (
        "trailer-section-bounded-by-max-header-size",
        POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + b"a" * 300 + b"\r\n\r\n",
        [b"HTTP/1.1 200 OK"],
        [b"HTTP/1.1 400 Bad Request"],
        "RFC 9112 7.1.2: a trailer section is fields like a head's: bounded by limits.max_header_size, not Twisted's 64 KiB",
    ),
]


@pytest.mark.parametrize(
    ("data", "channel", "codec", "rule"), [c[1:] for c in DIFFERENCES], ids=[c[0] for c in DIFFERENCES]
)
def test_listed_differences(data: bytes, channel: list[bytes], codec: list[bytes], rule: str) -> None:
    """Each difference is real (the test fails the day the two agree) and follows the RFC clause it names."""
    assert "RFC 911" in rule
    old = outcome(through_the_channel([data]))
    new = outcome(through_the_codec([data]))
    assert ([got[0] for got in old[1]], [got[0] for got in new[1]]) == (channel, codec)


def random_cuts(data: bytes, seed: int) -> list[bytes]:
    """*data* in reads of 1 to 7 bytes, the same for one seed."""
    cuts, at, state = [], 0, seed
    while at < len(data):
        state = (state * 1103515245 + 12345) % 2**31
        at += 1 + state % 7
        cuts.append(at)
    return pieces_at(data, cuts)


def test_all_streams_in_small_reads() -> None:
    """Every stream above, and all of them pipelined on one connection, in reads of a few bytes: as the channel."""
    for _, data in SAME:
        for seed in range(5):
            pieces: Optional[list[bytes]] = random_cuts(data, seed)
            assert pieces is not None
            assert outcome(through_the_codec(pieces)) == outcome(through_the_channel(pieces))
    stream = b"".join(data for name, data in SAME[:16] if b"Connection: close" not in data and b"HTTP/1.0" not in data)
    for seed in range(5):
        pieces = random_cuts(stream, seed)
        assert outcome(through_the_codec(pieces)) == outcome(through_the_channel(pieces))


# -- fephp's own protocol over the codec (fephp.web.h1) against the channel ---------------------

_VARYING = re.compile(rb"(Date|X-Request-Id): [^\r]*")

#: What a run through a FrontSite gave: the requests seen, the bytes sent (Date and X-Request-Id values blanked), closing.
Run = tuple[list[object], bytes, bool]


def through(pieces: Sequence[bytes], http1: str) -> Run:
    """Each piece one read of a FrontSite's connection served by *http1*, until it starts closing."""
    run = ChannelRun(max_header_size=MAX_HEADER_SIZE, max_body_size=MAX_BODY_SIZE, http1=http1)
    run.feed(pieces)
    return list(run.seen), _VARYING.sub(rb"\1: -", run.out), run.closing


@pytest.mark.parametrize("data", [c[1] for c in SAME], ids=[c[0] for c in SAME])
def test_the_protocol_answers_as_the_channel_does(data: bytes) -> None:
    """Whole, in two reads at every byte and a byte a read: the same requests seen and byte for byte the same answers."""
    expected = through([data], "twisted")
    assert through([data], "fephp") == expected
    for pieces in splits_of(data):
        assert through(pieces, "fephp") == expected, pieces


@pytest.mark.parametrize(("data", "codec"), [(c[1], c[3]) for c in DIFFERENCES], ids=[c[0] for c in DIFFERENCES])
def test_where_the_codec_differs_the_protocol_follows_it(data: bytes, codec: list[bytes]) -> None:
    """The codec's listed differences from the channel hold for the protocol too (it reads with the codec)."""
    seen, raw, closing = through([data], "fephp")
    got = outcome((seen, raw, closing))  # type: ignore[arg-type]
    assert [response[0] for response in got[1]] == codec
    assert got[1] == outcome(through_the_codec([data]))[1]


def test_all_streams_pipelined_in_small_reads() -> None:
    """All the streams read alike, pipelined on one connection, in reads of a few bytes: byte for byte as the channel."""
    stream = b"".join(data for name, data in SAME[:16] if b"Connection: close" not in data and b"HTTP/1.0" not in data)
    for seed in range(5):
        pieces = random_cuts(stream, seed)
        assert through(pieces, "fephp") == through(pieces, "twisted")
