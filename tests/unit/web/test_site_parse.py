"""fephp's one-step request-head parser against Twisted's line-by-line one.

The same bytes go to one channel whole (the fast path takes them) and to
another one byte at a time (only Twisted's parser can), and both must end in
the same request, the same response bytes and the same connection state.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, client_transport, deliver
from tests.support.reference_http1 import ReferenceChannel, reference_http1


class Echo(Resource):
    """Answers with what the request looked like to a resource."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        seen = {
            "method": request.method.decode("latin-1"),
            "uri": request.uri.decode("latin-1"),
            "path": request.path.decode("latin-1"),
            "proto": request.clientproto.decode(),
            "args": {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()},
            "headers": sorted(
                (name.decode("latin-1"), [v.decode("latin-1") for v in values])
                for name, values in request.requestHeaders.getAllRawHeaders()
            ),
            "host": request.getHeader(b"host").decode("latin-1") if request.getHeader(b"host") else None,
            "cookies": {k.decode(): v.decode() for k, v in request.received_cookies.items()},
            "content": request.content.read().decode("latin-1") if request.content else None,
        }
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(seen, sort_keys=True).encode()


def run(data: bytes, *, bytewise: bool, calls: list[bool]) -> tuple[bytes, bool, bool]:
    # The tests' reference engine, which this file reaches into (fephp's own protocol: test_h1.py).
    site = FrontSite(Echo(), timeout=None, reactor=Clock(), http1=reference_http1)
    site.http_date = lambda: b"Thu, 01 Jan 1970 00:00:00 GMT"  # type: ignore[method-assign]
    site.new_request_id = lambda: b"rid"  # type: ignore[method-assign]
    channel = site.buildProtocol(CLIENT)
    take = channel._take_head

    def spy(head: bytes) -> bool:
        taken = take(head)
        calls.append(taken)
        return taken

    channel._take_head = spy  # type: ignore[method-assign]
    transport = client_transport()
    channel.makeConnection(transport)
    deliver(channel, transport, data, bytewise=bytewise)
    return transport.value(), transport.disconnecting, bool(channel.persistent)


#: Heads the fast path takes.
TAKEN = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /hello.php?x=1&y=%20 HTTP/1.1\r\nHost: a:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nhost: a\r\nX-Dup: 1\r\nx-dup: 2\r\nCookie: a=1; b=2\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost:    spaced  \t\r\nEmpty:\r\n\r\n",
    b"DELETE /thing HTTP/1.1\r\nHost: a\r\nAuthorization: Basic dXNlcjpwdw==\r\n\r\n",
    b"GET http://a/abs?q HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\n\r\n",
    # Raw UTF-8 in the target, as nginx takes it (Twisted's parser gets an
    # ASCII stand-in and the request the raw target back).
    "GET /ünï?q=✓ HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
]

#: Heads it must leave to Twisted.
LEFT = [
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
    b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET /x\r\nHost: a\r\n\r\n",
    b"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"G(T /x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\n" + b"X-Long: " + b"a" * 17000 + b"\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(600)) + b"\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    # Framings refused before any body byte (fephp/web/framing.py, test_site_framing.py).
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
]


@pytest.mark.parametrize("data", TAKEN + LEFT, ids=[f"taken-{i}" for i in range(len(TAKEN))] + [f"left-{i}" for i in range(len(LEFT))])
def test_same_result_as_twisteds_parser(data: bytes) -> None:
    whole_calls: list[bool] = []
    whole = run(data, bytewise=False, calls=whole_calls)
    bytewise = run(data, bytewise=True, calls=[])
    assert whole == bytewise
    assert any(whole_calls) == (data in TAKEN)
    if data in TAKEN:
        assert whole[0].startswith((b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 400 "))


def test_the_fast_path_fills_the_request_as_twisted_does() -> None:
    """Not only the same bytes out: the request a resource sees is Twisted's, field by field."""
    out, _, _ = run(TAKEN[1], bytewise=False, calls=[])
    seen = json.loads(out.partition(b"\r\n\r\n")[2])
    assert seen["method"] == "GET" and seen["uri"] == "/hello.php?x=1&y=%20" and seen["path"] == "/hello.php"
    assert seen["args"] == {"x": ["1"], "y": [" "]}
    assert dict(seen["headers"])["User-Agent"] == ["wrk"] and seen["host"] == "a:8080"


def test_pipelined_requests_after_a_fast_one_are_answered_in_order() -> None:
    """A request read whole, then two more in one read: all three answered, in order."""
    # The tests' reference engine, which this file reaches into (fephp's own protocol: test_h1.py).
    site = FrontSite(Echo(), timeout=None, reactor=Clock(), http1=reference_http1)
    channel = site.buildProtocol(CLIENT)
    assert isinstance(channel, ReferenceChannel)
    transport = client_transport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
    channel.dataReceived(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
    out = transport.value()
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b'"uri": "/1"') < out.index(b'"uri": "/2"') < out.index(b'"uri": "/3"')


@pytest.mark.parametrize("bytewise", [False, True], ids=["one-step", "twisted"])
def test_http10_keep_alive(bytewise: bool) -> None:
    """HTTP/1.0 with Connection: keep-alive gets it back and a kept connection; a refusal that closes still closes."""
    out, disconnecting, persistent = run(
        b"GET /x HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n", bytewise=bytewise, calls=[]
    )
    head = out.partition(b"\r\n\r\n")[0]
    assert b"\r\nConnection: keep-alive" in head and b"\r\nContent-Length: " in head
    assert (disconnecting, persistent) == (False, True)
    out, disconnecting, persistent = run(
        b"GET /x HTTP/1.0\r\nHost: a\r\nHost: b\r\nConnection: keep-alive\r\n\r\n", bytewise=bytewise, calls=[]
    )
    assert out.startswith(b"HTTP/1.0 400 ") and b"keep-alive" not in out.partition(b"\r\n\r\n")[0]
    assert (disconnecting, persistent) == (True, False)
