"""The codec fuzzed: generated heads, bodies and chunkings, pipelined, sometimes with a hostile byte inserted or one removed.

Three properties: a stream gives the same transcript however it is split;
a stream built without faults gives back what it was built from; and the
codec agrees with fephp's current channel (the reference of
test_differential.py) on what the application sees and the client gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fephp.http import Request
from fephp.web.heads import valid_host
from tests.support.http_codec import ChannelRun, pieces_at, serve

MAX_HEADER_SIZE = 400
MAX_BODY_SIZE = 300
LIMITS: dict[str, Any] = {"max_header_size": MAX_HEADER_SIZE, "max_body_size": MAX_BODY_SIZE}
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Bytes inserted to break a stream: line ends, NUL, blanks, a colon, DEL, a high byte.
HOSTILE = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b"\x7f", b"\xff", b"\r\n"]


@dataclass
class Built:
    """A generated request: its bytes, what the application should see, and where its Host line is."""

    data: bytes
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    host_at: tuple[int, int]
    keeps: bool


tokens = st.text(TCHAR, min_size=1, max_size=12).map(str.encode)
names = st.one_of(st.sampled_from([b"Accept", b"User-Agent", b"Cookie", b"X-Dup", b"x-dup", b"Referer"]), tokens).filter(
    lambda n: n.lower() not in (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"x-request-id")
)
values = st.binary(max_size=30).map(lambda v: bytes(b if 0x20 <= b < 0x7F or b >= 0x80 else 0x61 for b in v))
targets = st.builds(
    lambda path, query: b"/" + path + (b"?" + query if query else b""),
    st.binary(max_size=20).map(lambda v: bytes(b if 0x21 <= b < 0x7F and b != ord("?") or b >= 0x80 else 0x78 for b in v)),
    st.one_of(st.none(), st.text("abc=&%20", max_size=10).map(str.encode)),
)
blanks = st.sampled_from([b"", b" ", b"  ", b"\t"])


@st.composite
def requests(draw: Any) -> Built:
    method = draw(st.one_of(st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS"]), tokens))
    target = draw(targets)
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    fields = draw(st.lists(st.tuples(names, values, blanks, blanks), max_size=6))
    body = draw(st.binary(max_size=120))
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == b"HTTP/1.1" else ["none", "length"]))
    connection = draw(st.sampled_from([None, b"keep-alive", b"close", b"Keep-Alive, foo"]))
    host_first = draw(st.booleans())
    lines = [b"%s %s %s" % (method, target, version)]
    headers = []
    for name, value, before, after in fields:
        value = value.strip(b" \t")
        lines.append(name + b":" + before + value + after)
        headers.append((name.lower(), value))
    host = (b"host", b"a.example")
    if host_first:
        headers.insert(0, host)
        lines.insert(1, b"Host: a.example")
    else:
        headers.append(host)
        lines.append(b"Host: a.example")
    if connection is not None:
        lines.append(b"Connection: " + connection)
        headers.append((b"connection", connection))
    tail = b""
    if framing == "none":
        body = b""
    elif framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
        headers.append((b"content-length", b"%d" % len(body)))
        tail = body
    else:
        lines.append(b"Transfer-Encoding: chunked")
        headers.append((b"transfer-encoding", b"chunked"))
        cuts = draw(st.lists(st.integers(0, len(body)), max_size=4))
        for piece in [p for p in pieces_at(body, cuts) if p]:
            extension = draw(st.sampled_from([b"", b";a=b", b";x", b' ;q="v"'.strip()]))
            tail += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
        tail += b"0\r\n" + draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"])) + b"\r\n"
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    start = head.index(b"Host: a.example")
    if version == b"HTTP/1.1":
        keeps = connection not in (b"close",)
    else:
        keeps = connection in (b"keep-alive", b"Keep-Alive, foo")
    return Built(head + tail, method, target, version, headers, body, (start, start + len(b"Host: a.example\r\n")), keeps)


@st.composite
def streams(draw: Any, *, hostile: bool) -> tuple[bytes, list[Built], list[tuple[int, int]]]:
    """One to four generated requests back to back (up to the first that closes), maybe with one byte inserted or removed."""
    built: list[Built] = []
    for _ in range(draw(st.integers(1, 4))):
        built.append(draw(requests()))
        if not built[-1].keeps:
            break
    data = b""
    hosts = []
    for request in built:
        hosts.append((len(data) + request.host_at[0], len(data) + request.host_at[1]))
        data += request.data
    if hostile and draw(st.booleans()):
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data = data[:at] + draw(st.sampled_from(HOSTILE)) + data[at:]
        else:
            data = data[:at] + data[at + 1 :]
    return data, built, hosts


cut_lists = st.lists(st.integers(1, 2000), max_size=12)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FUZZ
@given(streams(hostile=True), cut_lists)
def test_any_split_gives_the_events_of_the_whole_stream(stream: tuple[bytes, list[Built], Any], cuts: list[int]) -> None:
    """The requests, bodies, refusal, answers and close are those of the whole stream, wherever the reads end."""
    data = stream[0]
    whole = serve([data], **LIMITS)
    split = serve(pieces_at(data, cuts), **LIMITS)
    assert (split.requests(), split.refused, split.out, split.closing) == (
        whole.requests(), whole.refused, whole.out, whole.closing
    )


@FUZZ
@given(streams(hostile=False), cut_lists)
def test_generated_requests_come_back_as_built(stream: tuple[bytes, list[Built], Any], cuts: list[int]) -> None:
    """Without a fault (and within the limits), every request comes back as it was built: head, headers in order, body."""
    data, built, _ = stream
    served = serve(pieces_at(data, cuts), **LIMITS)
    if served.refused is not None:
        # Only a limit may refuse a faultless stream.
        assert served.refused in (413, 414, 431)
        assert any(len(b.body) > MAX_BODY_SIZE or len(b.data) - len(b.body) > MAX_HEADER_SIZE for b in built)
        return
    assert served.requests() == [(b.method, b.target, b.version, b.headers, b.body) for b in built]
    assert served.closing == (not built[-1].keeps)


def host_rule(request: Request) -> Optional[int]:
    """The site's Host rule, above the codec (fephp.web.carrier, and the reference's ReferenceRequest.process): 400 or None.

    RFC 9112 3.2: an HTTP/1.1 request without Host, or any with two, or one
    that is no host[:port] (fephp.web.site.valid_host).
    """
    hosts = [value for name, value in request.headers if name == b"host"]
    if not hosts:
        return None if request.version == b"HTTP/1.0" else 400
    return 400 if len(hosts) != 1 or not valid_host(hosts[0]) else None


def connection_rules_differ(data: bytes) -> bool:
    """Whether a Connection line of *data* asks to close by one rule and not the other (test_differential.py's DIFFERENCES).

    Twisted splits the value on spaces; the codec reads a comma-separated
    list (RFC 9110 7.6.1): a mutated value such as ": close" is "close" to
    the first only.
    """
    for line in data.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon and name.lower() == b"connection":
            by_spaces = b"close" in [token.lower() for token in value.strip(b" \t").split(b" ")]
            by_commas = b"close" in [token.strip(b" \t").lower() for token in value.split(b",")]
            if by_spaces != by_commas:
                return True
    return False


def status_lines(raw: bytes) -> list[bytes]:
    return [line for line in raw.split(b"\r\n") if line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 "))]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(streams(hostile=True), cut_lists)
def test_the_codec_agrees_with_the_channel(stream: tuple[bytes, list[Built], Any], cuts: list[int]) -> None:
    """Generated streams, faults and all, in the same reads: the requests the channel renders and its status lines are the codec's."""
    data = stream[0]
    assume(not connection_rules_differ(data))
    pieces = pieces_at(data, cuts)
    run = ChannelRun(max_header_size=MAX_HEADER_SIZE, max_body_size=MAX_BODY_SIZE)
    run.feed(pieces)
    served = serve(pieces, check=host_rule, **LIMITS)
    if served.refused is not None and not run.closing:
        # A head line the codec refused when it ended, which Twisted reads
        # only once the next line is in (test_differential.py's DIFFERENCES):
        # the next line.
        run.feed([b"\r\n"])
    seen: list[tuple[bytes, bytes, bytes, dict[bytes, list[bytes]], bytes]] = []
    for method, target, version, fields, body in served.requests():
        if body is None:
            continue
        headers: dict[bytes, list[bytes]] = {}
        for name, value in fields:
            headers.setdefault(name, []).append(value)
        seen.append((method, target, version, headers, body))
    refused: Optional[int] = served.refused
    assert seen == run.seen, (data, refused)
    assert status_lines(served.out) == status_lines(run.out), data
    assert served.closing == run.closing


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(streams(hostile=True), cut_lists)
def test_fephps_protocol_agrees_with_the_codec(stream: tuple[bytes, list[Built], Any], cuts: list[int]) -> None:
    """Generated streams, faults and all, through a FrontSite on fephp's own protocol: the codec's requests, status lines and close."""
    pieces = pieces_at(stream[0], cuts)
    run = ChannelRun(max_header_size=MAX_HEADER_SIZE, max_body_size=MAX_BODY_SIZE, http1="fephp")
    run.feed(pieces)
    served = serve(pieces, check=host_rule, **LIMITS)
    seen = []
    for method, target, version, fields, body in served.requests():
        if body is None:
            continue
        headers: dict[bytes, list[bytes]] = {}
        for name, value in fields:
            headers.setdefault(name, []).append(value)
        seen.append((method, target, version, headers, body))
    assert seen == run.seen, stream[0]
    assert status_lines(served.out) == status_lines(run.out), stream[0]
    assert served.closing == run.closing
