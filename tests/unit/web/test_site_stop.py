"""A graceful stop (FrontSite.close_connections) closes idle keep-alive connections at once and lets any other finish the request it holds."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.web.resource import Resource

from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, client_transport

GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"


class Hello(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"hello"


def connected() -> "tuple[FrontSite, Any, Any]":
    site = FrontSite(Hello(), timeout=None, reactor=Clock())
    channel = site.buildProtocol(CLIENT)
    transport = client_transport()
    channel.makeConnection(transport)
    return site, channel, transport


def test_a_fresh_connection_is_answered_then_closed() -> None:
    """Accepted just before the stop, its request not yet read: it is answered (Connection: close), not dropped."""
    site, channel, transport = connected()
    closed = site.close_connections()
    assert not transport.disconnecting
    channel.dataReceived(GET)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close" in head and body == b"hello"
    assert transport.disconnecting
    channel.connectionLost(None)
    assert closed.called


def test_an_idle_keep_alive_connection_closes_at_once() -> None:
    """A connection that has been answered and waits for its next request is closed by the stop."""
    site, channel, transport = connected()
    channel.dataReceived(GET)
    assert b"Connection: close" not in transport.value() and not transport.disconnecting
    site.close_connections()
    assert transport.disconnecting


def test_a_request_half_read_is_finished_then_closed() -> None:
    """A head that had begun to arrive when the stop came is read to its end, answered, and the connection closes."""
    site, channel, transport = connected()
    channel.dataReceived(GET[:10])
    site.close_connections()
    assert not transport.disconnecting
    channel.dataReceived(GET[10:])
    assert transport.value().startswith(b"HTTP/1.1 200 ") and b"Connection: close" in transport.value()
    assert transport.disconnecting
