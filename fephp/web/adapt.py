"""Twisted Web's Request as an Exchange, from the resource's side: fephp's FrontRequest and anyone's plain Request.

:class:`RequestExchange` is how the app (:class:`fephp.web.app.PHPResource`)
is served by a request object that is not an exchange itself: fephp's
:class:`~fephp.web.site.FrontRequest` on Twisted's HTTP/1.x channel (the
``FEPHP_HTTP1=twisted`` reference engine; fephp's own HTTP/1.x protocol and
its HTTP/2 streams carry exchanges of their own), and Twisted's own
``twisted.web.server.Request`` in anyone's ``Site``.  What fephp's request and channels do better than Twisted's is
reached through them (the held head sent with the first bytes,
``write_pieces`` gathered, ``when_lost`` without a Deferred, 103 through
the channel's ``write_informational``, the socket for ``os.sendfile``); a
plain Request gets the plain equivalent, or nothing where it has none
(no 1xx, no sendfile, no compression).  Which kind of request it is gets
decided once per request class (:func:`_is_front`).

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

from twisted.web import http

from .._twisted import (
    header_name,
    headers_raw,
    idle_socket,
    request_disconnected,
    site_request_write,
)
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
#: Headers' spelling -> lowercase, and lowercase -> Headers' spelling, learnt once per name (bounded: names are the peers').
_lower_names: dict[bytes, bytes] = {}
_spellings: dict[bytes, bytes] = {}
_UNIX = Address("unix:", 0)
#: An Address made by the C constructor of tuple, not the Python one NamedTuple writes (asked twice per request).
_new_tuple = tuple.__new__
# Bound once: twisted.web.http is a deprecation proxy whose every attribute lookup is a Python call.
_http_write = http.Request.write
#: Request classes seen -> whether they are fephp's (FrontRequest and its kind).
_front_classes: dict[type, bool] = {}


def _is_front(request: Any) -> bool:
    """Whether *request* is fephp's FrontRequest (it has ``when_lost`` and ``write_pieces``), decided once per class."""
    kind = type(request)
    found = _front_classes.get(kind)
    if found is None:
        found = _front_classes[kind] = hasattr(kind, "when_lost") and hasattr(kind, "write_pieces")
    return found


def _lower(name: bytes) -> bytes:
    found = name.lower()
    if len(_lower_names) < 1000:
        _lower_names[name] = found
    return found


def _spelling(name: bytes) -> bytes:
    """*name* (lowercase) as Headers keys it."""
    found = header_name(name)
    if len(_spellings) < 1000:
        _spellings[name] = found
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
    #: Moved on by the response calls; LOST told by FrontRequest.connectionLost (:meth:`lost`) or Twisted's notifyFinish.
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
        front = _front_classes.get(type(request))
        if front is None:
            front = _is_front(request)
        self._front = front
        #: The request line's parts, as the Request holds them (FrontRequest made an absolute-form target origin-form).
        self.method: bytes = request.method
        self.target: bytes = request.uri
        self.version: bytes = request.clientproto
        self.response_headers: HeaderList = []
        if front:
            site = getattr(request, "site", None)  # set by process(); None for a head refused before it
            if site is not None:
                self.compression = site.compression
            self.request_id: bytes = request.request_id
            self._started_at: float = request.started_at
            request.exchange = self
        else:
            self._started_at = _monotonic()
            request.notifyFinish().addErrback(self._lost_plain)
            given = request.requestHeaders.getRawHeaders(b"x-request-id")
            if given is not None and len(given) == 1 and _REQUEST_ID.fullmatch(given[0]):
                self.request_id = given[0]
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
        values = headers_raw(self.request.requestHeaders).get(_spellings.get(name) or _spelling(name))
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
        """The client went away (FrontRequest.connectionLost says so): LOST unless the response was finished."""
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
            if self._front:
                site_request_write(request, data)
            else:
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
        if self._front:
            raw = headers_raw(request.responseHeaders)
            spelling = _spellings.get
            for name, value in self.response_headers:
                key = spelling(name) or _spelling(name)
                values = raw.get(key)
                if values is None:
                    raw[key] = [value]
                else:
                    values.append(value)  # Set-Cookie, each apart
        else:
            add = request.responseHeaders.addRawHeader
            for name, value in self.response_headers:
                add(name, value)
        if self._front:
            site_request_write(request, data)
        else:
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
        if self._front and self.first_byte_at is not None and self._encoder is None:
            self.request.write_pieces(pieces)  # one gathered send on fephp's HTTP/1.1 channel
            return
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
                _http_write(request, tail) if self._front else request.write(tail)
        self.state = _FINISHED
        request.finish()

    def abort(self) -> None:
        if self.state is _FINISHED or self.state is _LOST:
            return
        self.state = _LOST
        request = self.request
        if self._front:
            request.channel.abort_response()  # HTTP/1.1: the connection cut; HTTP/2: the stream reset
            return
        transport = getattr(request.channel, "transport", None)
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            request.loseConnection()

    def informational(self, status: int, headers: HeaderList) -> None:
        # RFC 9110 15.2: never a 1xx to an HTTP/1.0 client; Twisted's own channels cannot send one.
        if not self._front or self.request.clientproto == b"HTTP/1.0" or self.first_byte_at is not None:
            return
        self.request.channel.write_informational(status, headers)

    def register_producer(self, producer: Any, streaming: bool) -> None:
        self.request.registerProducer(producer, streaming)

    def unregister_producer(self) -> None:
        # A Request whose client went has no channel left to unregister from
        # (an HTTP/2 stream reset, or its connection lost).
        if not request_disconnected(self.request):
            self.request.unregisterProducer()

    def when_lost(self, call: Callable[[], object]) -> None:
        if self._front:
            self.request.when_lost(call)
        else:
            self.request.notifyFinish().addErrback(lambda _: call())

    def sendfile_socket(self) -> Optional[Any]:
        if not self._front:
            return None
        channel = self.request.channel
        flush = getattr(channel, "flush_head", None)  # fephp's HTTP/1.1 channel; an HTTP/2 stream has none
        if flush is None:
            return None
        if self.first_byte_at is None:
            self.write(b"")  # the head (and compression's decision), held by the channel...
        if self._encoder is not None:
            return None  # the bytes sent are not the file's own
        flush()  # ...and sent before the file's bytes go past it
        return idle_socket(channel.transport)

    def sent_directly(self, count: int) -> None:
        self.request.sentLength += count
