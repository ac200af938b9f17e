"""Write-through: send bytes at once when a Twisted transport has nothing queued."""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Connection

__all__ = ["write_through"]


def write_through(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, but sent by this call when the socket can take it.

    Twisted's ``write()`` queues the bytes and registers the socket for
    writing; the reactor sends them on its next turn and unregisters it: two
    ``epoll_ctl`` calls and a loop iteration for every response.  With nothing
    queued, sending now is the same thing sooner.  Whatever the socket does
    not take, and any error, goes through ``write()`` as usual, which keeps
    Twisted's ordering, backpressure and error handling.  Any other transport
    (TLS, in-memory, a wrapper) just gets ``write()``: a TLS wrapper would
    even lend its plain socket through attribute lookup.
    """
    if (
        isinstance(transport, Connection)
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataLen
        and not transport.disconnecting
        and transport.connected
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
