"""Twisted Web's Request as an Exchange, from the resource's side: anyone's twisted.web Request.

:class:`RequestExchange` is how the app (:class:`fephp.web.app.PHPResource`)
is served by a request object that is not an exchange itself: Twisted's own
``twisted.web.server.Request`` in anyone's ``Site`` (fephp's own HTTP/1.x
protocol and its HTTP/2 streams carry exchanges of their own).  It speaks
Twisted's public Request API (reading the request's headers from the dict
behind them, :func:`fephp._twisted.headers_raw`): no 1xx (Twisted's
channel cannot send one), no sendfile, no compression, ``write_pieces``
joined.  The tests'
reference engine (tests/support/reference_http1.py) extends it with what
its channel does better.

Response states (``state``, one :class:`ExchangeState`): RECEIVED until
``start_response``; RESPONDING until ``finish``; FINISHED; LOST once the
client went (or ``abort``), whatever came before but FINISHED.  The head is
copied into the Request at the first write, after compression decided
(:meth:`fephp.web.compress.Compression.begin`), so the decision sees and
changes the exchange's own ``response_headers``.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Callable, Optional, Sequence, Union

from .._twisted import header_name, headers_raw
from .compress import Compression, Encoder
from .exchange import Address, Body, ExchangeState, HeaderList, edit_headers

__all__ = ["RequestExchange", "exchange_of"]

_monotonic = time.monotonic
_RECEIVED = ExchangeState.RECEIVED
_RESPONDING = ExchangeState.RESPONDING
_FINISHED = ExchangeState.FINISHED
_LOST = ExchangeState.LOST
#: The X-Request-Id taken from a client on a plain Request (as fephp.web.site.valid_request_id).
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+=/@-]{1,128}")
#: Headers' spelling -> lowercase, learnt once per name (bounded: names are the peers').
_lower_names: dict[bytes, bytes] = {}
_UNIX = Address("unix:", 0)
#: An Address made by the C constructor of tuple, not the Python one NamedTuple writes (asked twice per request).
_new_tuple = tuple.__new__


def _lower(name: bytes) -> bytes:
    found = name.lower()
    if len(_lower_names) < 1000:
        _lower_names[name] = found
    return found


def exchange_of(request: Any) -> Any:
    """The Exchange that serves *request*: the request itself when it is one, else its (new) RequestExchange."""
    found = getattr(request, "exchange", None)
    if found is not None:
        return found
    if hasattr(request, "start_response"):
        return request  # a request object that is an exchange (fephp's own protocols)
    return RequestExchange(request)


class RequestExchange:
    """The :class:`fephp.web.exchange.Exchange` of one twisted.web ``Request``."""

    # Defaults as class attributes (an instance stores only what it sets; CPython 3.11 keeps them inline): an
    # exchange is made per request.
    #: Moved on by the response calls; LOST told by Twisted's notifyFinish (:meth:`lost`).
    state = _RECEIVED
    #: The status of ``start_response`` (FrontSite.log takes one Twisted's Request wrote itself, a 500, from it).
    status = 0
    _preset: Optional[HeaderList] = None
    _reason: Optional[bytes] = None
    _encoder: Optional[Encoder] = None
    _headers: Optional[HeaderList] = None
    header_edits: "tuple[Any, ...]" = ()
    first_byte_at: Optional[float] = None
    kind = "other"
    backend_name: Optional[str] = None
    php_started_at: Optional[float] = None
    php_ended_at: Optional[float] = None
    compression: Optional[Compression] = None

    def __init__(self, request: Any) -> None:
        self.request = request
        #: The request line's parts, as the Request holds them.
        self.method: bytes = request.method
        self.target: bytes = request.uri
        self.version: bytes = request.clientproto
        self.response_headers: HeaderList = []
        self._started_at: float = _monotonic()
        request.notifyFinish().addErrback(self._lost_plain)
        given = request.requestHeaders.getRawHeaders(b"x-request-id")
        if given is not None and len(given) == 1 and _REQUEST_ID.fullmatch(given[0]):
            self.request_id: bytes = given[0]
        else:
            self.request_id = secrets.token_hex(16).encode()

    # -- the request ---------------------------------------------------------------

    @property
    def path(self) -> bytes:
        return self.target.partition(b"?")[0]

    @property
    def query(self) -> bytes:
        return self.target.partition(b"?")[2]

    @property
    def headers(self) -> HeaderList:
        """The request's headers as pairs (lowercase names), in Headers' order: by name, then as received."""
        found = self._headers
        if found is None:
            lower = _lower_names.get
            found = self._headers = [
                (lower(name) or _lower(name), value)
                for name, values in headers_raw(self.request.requestHeaders).items()
                for value in values
            ]
        return found

    @property
    def scheme(self) -> bytes:
        return b"https" if self.request.isSecure() else b"http"

    @property
    def client(self) -> Address:
        address = self.request.getClientAddress()
        host = getattr(address, "host", None)  # a UNIX socket's has none
        return _UNIX if host is None else _new_tuple(Address, (host, address.port))  # type: ignore[no-any-return]

    @property
    def server(self) -> Address:
        address = self.request.getHost()
        host = getattr(address, "host", None)
        return _UNIX if host is None else _new_tuple(Address, (host, address.port))  # type: ignore[no-any-return]

    @property
    def body(self) -> Body:
        return self.request.content  # type: ignore[no-any-return]

    def header(self, name: bytes) -> Optional[bytes]:
        values = headers_raw(self.request.requestHeaders).get(header_name(name))
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return (b"; " if name == b"cookie" else b", ").join(values)

    # -- the marks ------------------------------------------------------------------

    @property
    def started_at(self) -> float:
        return self._started_at

    def lost(self) -> None:
        """The client went away: LOST unless the response was finished."""
        if self.state is not _FINISHED:
            self.state = _LOST

    def _lost_plain(self, reason: Any) -> None:
        """A plain Request's notifyFinish failed: its client went before finish."""
        self.lost()

    @property
    def bytes_sent(self) -> int:
        return self.request.sentLength  # type: ignore[no-any-return]

    # -- the response -----------------------------------------------------------------

    def start_response(self, status: int, headers: HeaderList, reason: Optional[bytes] = None) -> None:
        preset = self._preset
        if preset is None:
            preset = self._preset = self.response_headers
        if preset:
            headers[:0] = preset
        self.response_headers = headers
        self.status = status
        self._reason = reason
        if self.state is _RECEIVED:
            self.state = _RESPONDING

    def write(self, data: bytes) -> None:
        request = self.request
        if self.first_byte_at is not None:
            encoder = self._encoder
            if encoder is not None:
                data = encoder.compress(data)
                if not data:
                    return
            request.write(data)
            return
        # The first body bytes: the rules' edits, compression's decision, then the head into the Request.
        self.first_byte_at = _monotonic()
        if self.state is _RECEIVED:
            self.start_response(200, [])
        if self.header_edits:
            self._edit(request)
        compression = self.compression
        if compression is not None:
            data, self._encoder = compression.begin(self, data)
        request.setResponseCode(self.status, self._reason)
        add = request.responseHeaders.addRawHeader
        for name, value in self.response_headers:
            add(name, value)  # Set-Cookie, each apart
        request.write(data)

    def _edit(self, request: Any) -> None:
        """The rules' edits on the whole head: the Request's own fields (Server, Date, X-Request-Id) taken into the list first."""
        headers = request.responseHeaders
        own = [(_lower_names.get(name) or _lower(name), value) for name, values in headers.getAllRawHeaders() for value in values]
        for name, _ in own:
            headers.removeHeader(name)
        self.response_headers[:0] = own
        edit_headers(self.response_headers, self.header_edits)

    def write_pieces(self, pieces: Sequence[Union[bytes, memoryview]]) -> None:
        self.write(pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes else b"".join(pieces))  # type: ignore[arg-type]

    def finish(self) -> None:
        request = self.request
        if self.state is _LOST:
            self._encoder = None
            return
        if self.first_byte_at is None:
            self.write(b"")  # the head, and with it the decision
        encoder = self._encoder
        if encoder is not None:
            self._encoder = None
            tail = encoder.finish()
            if tail:
                request.write(tail)
        self.state = _FINISHED
        request.finish()

    def abort(self) -> None:
        if self.state is _FINISHED or self.state is _LOST:
            return
        self.state = _LOST
        request = self.request
        transport = getattr(request.channel, "transport", None)
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            request.loseConnection()

    def informational(self, status: int, headers: HeaderList) -> None:
        # Twisted's own channels cannot send a 1xx response.
        return

    def register_producer(self, producer: Any, streaming: bool) -> None:
        self.request.registerProducer(producer, streaming)

    def unregister_producer(self) -> None:
        # A Request whose client went has no channel left to unregister from
        # (an HTTP/2 stream reset, or its connection lost).
        # (Twisted's Request drops its channel when the connection is lost.)
        if self.request.channel is not None:
            self.request.unregisterProducer()

    def when_lost(self, call: Callable[[], object]) -> None:
        self.request.notifyFinish().addErrback(lambda _: call())

    def sendfile_socket(self) -> Optional[Any]:
        return None  # Twisted's channel queues bytes the socket would overtake

    def sent_directly(self, count: int) -> None:
        self.request.sentLength += count
