"""A sans-io HTTP/1.1 server codec: bytes in, events out, no sockets and no reactor (as h11, cut for a front server's speed).

:class:`ServerConnection` reads requests (:class:`Request`, :class:`Data`,
:class:`EndOfMessage`, :class:`ConnectionClosed`, or NEED_DATA / PAUSED)
with RFC 9112's framing and smuggling refusals, each refusal an error that
carries the status to answer (:class:`HeadError`, :class:`BodyError`), and
writes responses (Content-Length or chunked, HEAD and 1xx/204/304 rules,
keep-alive for HTTP/1.1 and 1.0, 100-continue).
"""

from ._connection import DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_HEADERS, DEFAULT_MAX_LINE_LENGTH, ServerConnection
from ._errors import BodyError, HTTPCodecError, HeadError, LocalProtocolError, RemoteProtocolError
from ._events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage, Event, Request, Sentinel
from ._readers import CHUNK_LINE_MAX, framing_of, transfer_codings
from ._state import Framing, State

__all__ = [
    "BodyError",
    "CHUNK_LINE_MAX",
    "ConnectionClosed",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "Data",
    "EndOfMessage",
    "Event",
    "Framing",
    "HTTPCodecError",
    "HeadError",
    "LocalProtocolError",
    "NEED_DATA",
    "PAUSED",
    "RemoteProtocolError",
    "Request",
    "Sentinel",
    "ServerConnection",
    "State",
    "framing_of",
    "transfer_codings",
]
