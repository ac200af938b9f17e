"""fephp's HTTP/1.x protocol's framing rules and slow-client deadlines, over an in-memory transport and a Clock.

Every hostile head is fed whole and one byte at a time: both must end in the
same refusal (status, page, Connection: close, the connection closing) with
the resource never called.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from fephp.web.adapt import exchange_of
from fephp.web.errors import error_page
from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, client_transport, deliver

LIMIT = 100


class Counting(Resource):
    """Answers "ok" and notes each request it is asked to render, with its body."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes]] = []

    def render(self, request: Any) -> bytes:
        body = exchange_of(request).body  # the protocol's Exchange, whichever carries the request
        self.seen.append((request.method, body if isinstance(body, bytes) else body.read()))
        return b"ok"


def connect(resource: Resource, clock: Clock, **options: Any) -> tuple[Any, StringTransport]:
    options.setdefault("timeout", 60.0)
    site = FrontSite(resource, max_body_size=LIMIT, reactor=clock, **options)
    site.http_date = lambda: b"Thu, 01 Jan 1970 00:00:00 GMT"  # type: ignore[method-assign]
    channel = site.buildProtocol(CLIENT)
    transport = client_transport()
    channel.makeConnection(transport)
    return channel, transport


def feed(data: bytes, *, bytewise: bool) -> tuple[bytes, bool, list[tuple[bytes, bytes]]]:
    resource = Counting()
    channel, transport = connect(resource, Clock())
    deliver(channel, transport, data, bytewise=bytewise)
    return transport.value(), bool(transport.disconnecting), resource.seen


POST = b"POST /x HTTP/1.1\r\nHost: a\r\n"

REFUSED = [
    # (id, bytes, status)
    ("te-identity-then-cl", POST + b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("cl-then-te-identity", POST + b"Content-Length: 5\r\nTransfer-Encoding: identity\r\n\r\nhello", 400),
    ("te-identity-alone", POST + b"Transfer-Encoding: identity\r\n\r\n", 400),
    ("te-chunked-then-cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("cl-then-te-chunked", POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-chunked-gzip", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te-twice", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    ("te-on-http-1.0", b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-folded", POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    ("any-folded-line", b"GET /x HTTP/1.1\r\nHost: a\r\nX-Fold: one\r\n\ttwo\r\n\r\n", 400),
    ("two-cl", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("cl-list", POST + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    ("cl-negative", POST + b"Content-Length: -3\r\n\r\n", 400),
    ("cl-hex", POST + b"Content-Length: 0x3\r\n\r\nabc", 400),
    ("bare-lf-line-ends", b"GET /x HTTP/1.1\nHost: a\n\n", 400),
    ("bare-lf-in-a-head", b"GET /x HTTP/1.1\r\nHost: a\nX-Smuggled: 1\r\n\r\n", 400),
    ("nul-in-a-value", b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("cr-in-a-value", b"GET /x HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n", 400),
    ("del-in-the-target", b"GET /x\x7fy HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("tab-in-the-target", b"GET /x\ty HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bad-chunk-size", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-without-its-crlf", POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400),
    ("chunk-size-over-the-limit", POST + b"Transfer-Encoding: chunked\r\n\r\n65\r\n", 413),
    ("chunk-size-absurd", POST + b"Transfer-Encoding: chunked\r\n\r\n1" + b"0" * 40 + b"\r\n", 413),
    ("chunks-crossing-the-limit", POST + b"Transfer-Encoding: chunked\r\n\r\n32\r\n" + b"a" * 50 + b"\r\n33\r\n", 413),
    ("cl-over-the-limit-with-expect", POST + b"Content-Length: 101\r\nExpect: 100-continue\r\n\r\n", 413),
]


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("data", "status"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_heads(data: bytes, status: int, bytewise: bool) -> None:
    """A head framed ambiguously or beyond a limit gets its status with fephp's page and Connection: close; nothing is rendered."""
    out, closing, seen = feed(data, bytewise=bytewise)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    assert b"\r\nConnection: close\r\n" in out
    assert out.endswith(error_page(status))
    assert out.count(b"HTTP/1.1 ") == 1  # no 100 Continue, no second answer
    assert (closing, seen) == (True, [])


ACCEPTED = [
    ("content-length", POST + b"Content-Length: 5\r\n\r\nhello", b"hello"),
    ("chunked", POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("chunked-any-case", POST + b"transfer-encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("chunked-with-extension-and-trailer", POST + b"Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", b"hello"),
    ("chunked-up-to-the-limit", POST + b"Transfer-Encoding: chunked\r\n\r\n64\r\n" + b"a" * 100 + b"\r\n0\r\n\r\n", b"a" * 100),
    ("content-length-on-http-1.0", b"POST /x HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", b"hi"),
]


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("data", "body"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted_framings(data: bytes, body: bytes, bytewise: bool) -> None:
    """An unambiguous body reaches the resource whole, and the answer is 200."""
    out, _, seen = feed(data, bytewise=bytewise)
    assert out.startswith((b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n")), out[:200]
    assert seen == [(b"POST", body)]


# -- slow clients ------------------------------------------------------------------


def test_a_head_dripped_byte_by_byte_gets_408_at_the_header_deadline() -> None:
    """One byte a second keeps Twisted's idle timer alive, but the whole head has client_header seconds: then 408 and close."""
    clock = Clock()
    channel, transport = connect(Counting(), clock, client_header_timeout=10.0)
    head = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 100
    for byte in head[:10]:
        channel.dataReceived(bytes([byte]))
        clock.advance(0.99)
    assert transport.value() == b""
    clock.advance(0.2)
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and out.endswith(error_page(408))
    assert transport.disconnecting is True


def test_a_client_that_takes_no_answer_is_cut_off_after_abort_timeout() -> None:
    """After a 408 the client has abortTimeout seconds to take it; then the connection is aborted."""
    clock = Clock()
    channel, transport = connect(Counting(), clock, client_header_timeout=10.0)
    channel.dataReceived(b"GET /x HT")
    clock.advance(10)
    assert (transport.disconnecting, transport.disconnected) == (True, False)
    clock.advance(channel.abortTimeout)
    assert transport.disconnected is True


def test_a_pause_longer_than_keepalive_inside_a_head_waits_for_the_header_deadline() -> None:
    """Twisted's idle timer (keepalive) does not cut a head short: its own deadline decides."""
    clock = Clock()
    channel, transport = connect(Counting(), clock, timeout=5.0, client_header_timeout=30.0)
    channel.dataReceived(b"GET /x HTTP/1.1\r\n")
    clock.advance(20)
    assert transport.disconnecting is False
    channel.dataReceived(b"Host: a\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")


def test_an_idle_kept_connection_closes_quietly_after_keepalive() -> None:
    """Between requests the keep-alive timeout closes the connection without a status."""
    clock = Clock()
    channel, transport = connect(Counting(), clock, timeout=5.0)
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    transport.clear()
    clock.advance(4.9)
    assert transport.disconnecting is False
    clock.advance(0.1)
    assert (transport.value(), transport.disconnecting) == (b"", True)


def test_a_body_that_stops_coming_gets_408_after_client_body_seconds() -> None:
    """Each body byte restarts the body's idle time; client_body seconds without one: 408 and close, nothing rendered."""
    clock = Clock()
    resource = Counting()
    channel, transport = connect(resource, clock, client_body_timeout=10.0)
    channel.dataReceived(POST + b"Content-Length: 10\r\n\r\nabc")
    clock.advance(9)
    channel.dataReceived(b"d")
    clock.advance(9.9)
    assert transport.value() == b""
    clock.advance(0.1)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert (transport.disconnecting, resource.seen) == (True, [])


def test_a_complete_body_is_not_timed() -> None:
    """Once the body is in, the request is answered however long it takes."""

    class Slow(Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            return NOT_DONE_YET

    clock = Clock()
    channel, transport = connect(Slow(), clock, client_body_timeout=10.0, client_header_timeout=10.0)
    channel.dataReceived(POST + b"Content-Length: 3\r\n\r\nabc")
    clock.advance(100)
    assert (transport.value(), transport.disconnecting) == (b"", False)


def test_a_client_that_takes_nothing_of_the_response_is_cut_off_after_client_send() -> None:
    """While the transport holds the channel paused (its buffer full), client_send seconds pass, then the connection is aborted."""
    clock = Clock()
    channel, transport = connect(Counting(), clock, client_send_timeout=20.0)
    channel.pauseProducing()
    clock.advance(19)
    channel.resumeProducing()
    channel.pauseProducing()
    clock.advance(19.9)
    assert transport.disconnected is False
    clock.advance(0.1)
    assert transport.disconnected is True
