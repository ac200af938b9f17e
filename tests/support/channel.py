"""A FrontSite's channel over an in-memory connection, from the client's side: the web layer's unit tests talk to it through a StringTransport."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

__all__ = ["CLIENT", "SERVER", "client_transport", "deliver"]

#: The two ends of every fake connection: the client's address and port, and the server's.
CLIENT = IPv4Address("TCP", "127.0.0.1", 5000)
SERVER = IPv4Address("TCP", "127.0.0.1", 80)


def client_transport() -> StringTransport:
    """A transport for a channel built for :data:`CLIENT` (``site.buildProtocol(CLIENT)``), as a connection to :data:`SERVER`."""
    return StringTransport(hostAddress=SERVER, peerAddress=CLIENT)


def deliver(channel: Any, transport: StringTransport, data: bytes, *, bytewise: bool) -> None:
    """Hand *data* to *channel* in one read, or one byte a read (as a slow client) until the channel starts closing."""
    if not bytewise:
        channel.dataReceived(data)
        return
    for i in range(len(data)):
        if transport.disconnecting:
            break  # a closing connection reads no more
        channel.dataReceived(data[i : i + 1])
