"""The tests' reference HTTP/1.x engine (Twisted's HTTPChannel path, tests/support/reference_http1.py): how a site serves with it, and each use of a Twisted private name it relies on, against the installed Twisted.

When a Twisted upgrade renames or changes one of them, the test named after
that function fails here, instead of the differential tests disagreeing.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.resource import Resource
from twisted.web.server import Request as SiteRequest

from fephp import _twisted
from fephp.web.h1 import H1Protocol
from fephp.web.site import FrontSite
from tests.support import reference_http1
from tests.support.channel import CLIENT


class App(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"ok"


def test_a_site_serves_with_fephps_protocol_unless_given_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """FrontSite builds H1Protocol by default, even with the retired FEPHP_HTTP1=twisted set, and the reference channel when given it."""
    monkeypatch.setenv("FEPHP_HTTP1", "twisted")
    assert type(FrontSite(App(), reactor=Clock()).buildProtocol(CLIENT)) is H1Protocol
    channel = FrontSite(App(), reactor=Clock(), http1=reference_http1.reference_http1).buildProtocol(CLIENT)
    assert type(channel) is reference_http1.ReferenceChannel
    assert (channel.requestFactory, channel.totalHeadersSize) == (reference_http1.ReferenceRequest, 16 * 1024)


def _channel() -> HTTPChannel:
    channel = HTTPChannel()
    channel.makeConnection(StringTransport())
    return channel


def test_channel_between_requests_before_and_inside_a_head() -> None:
    """A fresh channel waits for a request line; once part of a head has arrived it does not."""
    channel = _channel()
    assert reference_http1.channel_between_requests(channel) is True
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    assert reference_http1.channel_between_requests(channel) is False


def test_channel_between_requests_after_a_tolerated_empty_line() -> None:
    """The one empty line Twisted eats before a request line (IE's after a POST) leaves the state its own parser must finish."""
    channel = _channel()
    channel.dataReceived(b"\r\n")
    assert channel._HTTPChannel__first_line == 2  # type: ignore[attr-defined]
    assert reference_http1.channel_between_requests(channel) is False


def test_channel_head_progress_counts_the_head() -> None:
    """Before any byte the request line is awaited with 0 bytes read; after it and a header, their lengths are counted."""
    channel = _channel()
    assert reference_http1.channel_head_progress(channel) == (True, 0)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert reference_http1.channel_head_progress(channel) == (False, len(b"GET / HTTP/1.1") + len(b"Host: x"))


def test_channel_receiving_follows_a_head_then_its_body() -> None:
    """None before any byte, "head" once a line began, "body" once the head of a request with a body is in, None while it is answered."""
    channel = _channel()
    assert reference_http1.channel_receiving(channel) is None
    channel.dataReceived(b"PO")
    assert reference_http1.channel_receiving(channel) == "head"
    channel.dataReceived(b"ST / HTTP/1.1\r\nHost: x\r\n")
    assert reference_http1.channel_receiving(channel) == "head"
    channel.dataReceived(b"Content-Length: 4\r\n\r\nab")
    assert reference_http1.channel_receiving(channel) == "body"
    channel.dataReceived(b"cd")
    assert reference_http1.channel_receiving(channel) is None


def test_channel_partial_line_is_the_unended_line() -> None:
    """The bytes after the last CRLF, while a head is read."""
    channel = _channel()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\nX")
    assert reference_http1.channel_partial_line(channel) == b"Host: x\nX"


def test_chunk_left_counts_down_the_announced_chunk() -> None:
    """After a chunk-size line, what is left of the chunk; None between chunks and without a chunked body."""
    channel = _channel()
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert reference_http1.chunk_left(channel) is None
    channel.dataReceived(b"10\r\nabc")
    assert reference_http1.chunk_left(channel) == 13
    channel.dataReceived(b"d" * 13 + b"\r\n")
    assert reference_http1.chunk_left(channel) is None
    channel.dataReceived(b"1" + b"0" * 40 + b"\r\n")
    assert reference_http1.chunk_left(channel) == 16**40


def test_refuse_malformed_heads_with_replaces_twisteds_bare_400() -> None:
    """A head Twisted itself refuses (a bad header name) calls the given refuse(channel, 400) instead of writing its own answer."""
    refused: list[tuple[Any, int]] = []

    class Channel(HTTPChannel):
        pass

    reference_http1.refuse_malformed_heads_with(Channel, lambda channel, status: refused.append((channel, status)))
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
    reference_http1.channel_dispatch(channel, request, b"GET", b"/x", b"HTTP/1.1")
    assert received == [(b"GET", b"/x", b"HTTP/1.1")]
    assert channel._handlingRequest is True
    assert channel._savedTimeOut == 30
    assert channel.timeOut is None
    assert channel.line_mode == 0
    assert reference_http1.channel_between_requests(channel) is False


def test_request_disconnected_follows_connection_lost() -> None:
    """A Request is not disconnected until its connection is lost."""
    request = Request(_channel())
    assert reference_http1.request_disconnected(request) is False
    request.connectionLost(Failure(ConnectionDone()))
    assert reference_http1.request_disconnected(request) is True


def test_headers_from_raw_holds_the_dict_itself() -> None:
    """Headers made from a dict of canonical names answer from that dict, without a copy."""
    raw = {b"Host": [b"example.com"], b"User-Agent": [b"curl"]}
    headers = reference_http1.headers_from_raw(raw)
    assert headers.getRawHeaders(b"host") == [b"example.com"]
    assert _twisted.headers_raw(headers) is raw
    assert list(headers.getAllRawHeaders()) == [(b"Host", [b"example.com"]), (b"User-Agent", [b"curl"])]


def test_site_request_write_is_server_requests_write_without_a_default_type() -> None:
    """With no default Content-Type the shortcut sends what server.Request.write would, and adds no Content-Type."""
    outputs = []
    for write in (SiteRequest.write, reference_http1.site_request_write):
        request = SiteRequest(_channel(), parsePOSTFormSubmission=False)
        request.defaultContentType = None
        request.method, request.clientproto = b"GET", b"HTTP/1.1"
        request.setHeader(b"content-length", b"2")
        write(request, b"ok")
        outputs.append(request.channel.transport.value())  # type: ignore[union-attr]
        assert not request.responseHeaders.hasHeader(b"content-type")
    assert outputs[0] == outputs[1] and outputs[0].endswith(b"\r\n\r\nok")
