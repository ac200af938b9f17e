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

from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

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
from fephp.web.h1 import H1Exchange
from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, client_transport
from tests.support.reference_http1 import reference_http1

__all__ = ["ChannelRun", "Rendered", "Seen", "Served", "pieces_at", "serve", "splits_of"]


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


#: One request as the application behind the channel saw it: method, target, version, {lower-case name: values in order}, body.
Rendered = tuple[bytes, bytes, bytes, dict[bytes, list[bytes]], bytes]


class _Recording(Resource):
    """Notes each request it is asked to render, and answers "ok" when told to (after the read, as PHP would)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Rendered] = []
        self.waiting: list[Any] = []

    def answer(self) -> None:
        """Finish the requests rendered so far, and those their end lets the channel read."""
        while self.waiting:
            request = self.waiting.pop(0)
            request.setHeader(b"content-length", b"2")
            request.write(b"ok")
            request.finish()

    def render(self, request: Any) -> Any:
        if isinstance(request, H1Exchange):
            return self._take(request)
        headers: dict[bytes, list[bytes]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() != b"x-request-id":  # fephp's own, added when the client sent none
                headers[name.lower()] = list(values)
        body = request.content.read() if request.content is not None else b""
        self.seen.append((request.method, request.uri, request.clientproto, headers, body))
        # Not at once: Twisted 26.10's HTTPChannel leaves a request that came
        # in the same read behind a Content-Length body unread until the next
        # read when the first is finished inside render (PHP never is).
        self.waiting.append(request)
        return NOT_DONE_YET


    def _take(self, exchange: H1Exchange) -> Any:
        """The same notes of an Exchange; its answer the same too."""
        headers: dict[bytes, list[bytes]] = {}
        for name, value in exchange.headers:
            if name != b"x-request-id":
                headers.setdefault(name, []).append(value)
        body = exchange.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = body.read()
        self.seen.append((exchange.method, exchange.target, exchange.version, headers, data))
        self.waiting.append(_ExchangeAnswer(exchange))
        return NOT_DONE_YET


class _ExchangeAnswer:
    """What _Recording.answer calls on a Twisted Request, done on an Exchange."""

    def __init__(self, exchange: H1Exchange) -> None:
        self._exchange = exchange
        self._headers: list[tuple[bytes, bytes]] = []

    def setHeader(self, name: bytes, value: bytes) -> None:  # noqa: N802 - as on a Twisted Request
        self._headers.append((name, value))

    def write(self, data: bytes) -> None:
        if self._exchange.state.value == "received":
            self._exchange.start_response(200, self._headers)
        self._exchange.write(data)

    def finish(self) -> None:
        self._exchange.finish()


class ChannelRun:
    """The codec's reference: Twisted's HTTPChannel path as fephp bent it (tests/support/reference_http1.py) fed reads by hand.

    With ``http1="fephp"``, the same run through fephp's own protocol
    (fephp.web.h1, FrontSite's own) instead, whose requests are Exchanges.
    """

    def __init__(self, *, max_header_size: int, max_body_size: int, http1: str = "twisted") -> None:
        self._resource = _Recording()
        site = FrontSite(
            self._resource,
            timeout=None,
            reactor=Clock(),
            max_header_size=max_header_size,
            max_body_size=max_body_size,
            http1=reference_http1 if http1 == "twisted" else None,
        )
        self.channel = site.buildProtocol(CLIENT)
        self.transport = client_transport()
        self.channel.makeConnection(self.transport)

    def feed(self, pieces: Sequence[bytes]) -> None:
        """Each piece one read, each rendered request answered after its read, until the channel starts closing."""
        for piece in pieces:
            if self.closing:
                break
            self.channel.dataReceived(piece)
            self._resource.answer()

    @property
    def seen(self) -> list[Rendered]:
        return self._resource.seen

    @property
    def out(self) -> bytes:
        return bytes(self.transport.value())

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)
