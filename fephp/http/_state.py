"""The states of one side of an HTTP/1.1 exchange on a connection, as the codec tracks them."""

from __future__ import annotations

import enum

__all__ = ["Framing", "State"]


class State(enum.Enum):
    """Where one side of the connection is in the current request/response cycle.

    The client side (``their_state``): IDLE until a whole head is read, BODY
    while its body is read, DONE once it is whole (a pipelined next request
    waits, PAUSED, until :meth:`ServerConnection.start_next_cycle`), CLOSED
    once the client closed its side, ERROR after a refusal.  Our side
    (``our_state``): IDLE until the response head is sent, BODY while its
    body is, DONE after its end, ERROR after a misuse.
    """

    IDLE = "idle"
    BODY = "body"
    DONE = "done"
    CLOSED = "closed"
    ERROR = "error"


class Framing(enum.Enum):
    """How a message's body is delimited (RFC 9112 6.3)."""

    NONE = "none"  # no body
    LENGTH = "content-length"
    CHUNKED = "chunked"
    CLOSE = "close"  # a response only: its body ends with the connection (an HTTP/1.0 client)
