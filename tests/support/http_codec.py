"""fephp's HTTP/1.1 codec (fephp.http) driven as a server would drive it, and its transcript: what the tests of the codec share.

:func:`serve` feeds a byte stream to a :class:`ServerConnection` in the
pieces given, answers every whole request at once (``200``, body ``ok``),
sends ``100 Continue`` when a request waits for it, and answers a refusal
with fephp's page before closing, as the channel does.  The transcript
(:class:`Served`) is what the application saw (requests and bodies, the
refusal's status) and what the client got; it does not depend on where the
stream was split, which is what the tests assert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from fephp.http import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    RemoteProtocolError,
    Request,
    ServerConnection,
)
from fephp.web.errors import error_page, raw_error_response

__all__ = ["Seen", "Served", "pieces_at", "serve", "splits_of"]


@dataclass
class Seen:
    """One request as the application got it: its head and its body (None until the body is whole)."""

    request: Request
    body: bytearray = field(default_factory=bytearray)
    whole: bool = False


@dataclass
class Served:
    """What came of a stream: the requests, the refusal's status (if any), the bytes sent back, and whether the server closed."""

    seen: list[Seen]
    refused: Optional[int]
    out: bytes
    closing: bool
    closed_by_client: Optional[bool] = None

    def requests(self) -> list[tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]], Optional[bytes]]]:
        """Each request as (method, target, version, headers, body or None if it never became whole)."""
        return [
            (r.method, r.target, r.version, r.headers, bytes(s.body) if s.whole else None)
            for s in self.seen
            for r in (s.request,)
        ]


def serve(
    pieces: Sequence[bytes],
    *,
    body: bytes = b"ok",
    eof: bool = False,
    check: Optional[Callable[[Request], Optional[int]]] = None,
    **limits: Any,
) -> Served:
    """Feed *pieces* to a new ServerConnection(**limits) (then the client's close, with *eof*) and answer as a server.

    *check*, if given, judges each whole request above the codec (as the
    site's Host rule does): a status it returns is answered with fephp's
    page and ``Connection: close``, the request is not counted as seen,
    and the connection closes.
    """
    conn = ServerConnection(**limits)
    seen: list[Seen] = []
    out: list[bytes] = []
    refused: Optional[int] = None
    closing = False
    closed_by_client: Optional[bool] = None
    for piece in [*pieces, b""] if eof else pieces:
        conn.receive_data(piece)
        while not closing:
            try:
                event = conn.next_event()
            except RemoteProtocolError as error:
                refused = error.status
                out.append(raw_error_response(error.status))
                closing = True
                break
            if event is NEED_DATA:
                break
            if event is PAUSED:
                raise AssertionError("PAUSED although every request was answered at its end")
            if type(event) is Request:
                seen.append(Seen(event))
                out.append(conn.send_continue())
            elif type(event) is Data:
                seen[-1].body += event.data
            elif type(event) is EndOfMessage:
                status = check(seen[-1].request) if check is not None else None
                if status is not None:
                    seen.pop()
                    refused = status
                    headers = [(b"Content-Type", b"text/html; charset=utf-8"), (b"Connection", b"close")]
                    out.append(conn.send_response(status, headers, error_page(status)))
                    closing = True
                    break
                seen[-1].whole = True
                out.append(conn.send_response(200, [], body))
                if conn.keep_alive:
                    conn.start_next_cycle()
                else:
                    closing = True
            else:
                assert type(event) is ConnectionClosed
                closed_by_client = event.complete
                break
        if closing or closed_by_client is not None:
            break
    return Served(seen, refused, b"".join(out), closing, closed_by_client)


def pieces_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """*data* cut at the offsets *cuts* (any order, repeats and out-of-range offsets ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def splits_of(data: bytes) -> list[list[bytes]]:
    """Every way to deliver *data* in two reads, and one byte a read."""
    return [pieces_at(data, [k]) for k in range(1, len(data))] + [[data[i : i + 1] for i in range(len(data))]]
