"""An Exchange's write_pieces and when_lost on fephp's HTTP/1.x protocol: a response written as pieces (bytes and memoryviews) comes out as if joined."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from fephp.web.adapt import exchange_of
from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, client_transport


class Pieces(Resource):
    """Writes its body in two write_pieces calls of a bytes piece and a memoryview each."""

    isLeaf = True

    def render(self, request: Any) -> Any:
        exchange = exchange_of(request)
        exchange.start_response(200, [(b"content-type", b"text/plain")])
        body = memoryview(b"0123456789")
        exchange.write_pieces([b"ab", body[2:5]])
        exchange.write_pieces([body[:1], b"z"])
        exchange.finish()
        return NOT_DONE_YET


def answer(head: bytes) -> bytes:
    site = FrontSite(Pieces(), timeout=None, reactor=Clock())
    site.http_date = lambda: b"Thu, 01 Jan 1970 00:00:00 GMT"  # type: ignore[method-assign]
    channel = site.buildProtocol(CLIENT)
    transport = client_transport()
    channel.makeConnection(transport)
    channel.dataReceived(head)
    return transport.value()


def test_pieces_are_chunked_as_one_chunk_per_call() -> None:
    """HTTP/1.1 without a length: each call is one chunk of the pieces' concatenation."""
    out = answer(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"5\r\nab234\r\n2\r\n0z\r\n0\r\n\r\n"


def test_pieces_of_an_http10_response_are_sent_as_they_are() -> None:
    """Without chunking the pieces are the body bytes, in order."""
    out = answer(b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    assert out.partition(b"\r\n\r\n")[2] == b"ab2340z"


def test_head_request_gets_no_body_from_pieces() -> None:
    """HEAD: Twisted's rule holds, the pieces are not sent."""
    out = answer(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b"\r\n\r\n")


class Waiting(Resource):
    """Answers later: records each request and asks to hear of its client going away."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []
        self.lost: list[Any] = []

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        exchange = exchange_of(request)
        self.requests[-1] = exchange
        exchange.when_lost(lambda: self.lost.append(exchange))
        return NOT_DONE_YET


def _waiting_channel() -> tuple[Waiting, Any]:
    resource = Waiting()
    site = FrontSite(resource, timeout=None, reactor=Clock())
    channel = site.buildProtocol(CLIENT)
    channel.makeConnection(client_transport())
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    return resource, channel


def test_when_lost_runs_once_when_the_client_goes_before_the_answer() -> None:
    """A client gone mid-request runs the request's when_lost call, once."""
    resource, channel = _waiting_channel()
    channel.connectionLost(Failure(ConnectionDone()))
    assert resource.lost == resource.requests and len(resource.lost) == 1


def test_when_lost_does_not_run_for_a_finished_request() -> None:
    """A request answered and finished before the connection closes never runs its when_lost call."""
    resource, channel = _waiting_channel()
    exchange = resource.requests[0]
    exchange.write(b"done")
    exchange.finish()
    channel.connectionLost(Failure(ConnectionDone()))
    assert resource.lost == []
