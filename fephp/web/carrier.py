"""What fephp's two Exchange carriers (fephp.web.h1 and fephp.web.h2exchange) share, from the server's side.

An HTTP/1.x connection and an HTTP/2 stream buffer a request body alike,
read the client's address alike, prepare a whole request alike (X-Request-Id,
a trusted proxy's client and scheme, the absolute form) and render the
site's resource with it alike; :class:`CarriedExchange` holds the Exchange
calls whose meaning does not depend on the wire.  Only the framing of the
response differs, and stays in each carrier.  This module imports neither
carrier, so both may import it (fephp.web.h1 imports fephp.web.http2).
"""

from __future__ import annotations

import tempfile
import time
from typing import IO, Any, Callable, Optional

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from ..cgi.realip import UNIX
from .compress import Compression, Encoder
from .errors import send_error
from .exchange import (
    Address,
    Body,
    ExchangeState,
    HeaderList,
    edit_headers,
    header_value,
)
from .heads import origin_form, valid_request_id

__all__ = ["BODY_IN_MEMORY", "CarriedExchange", "RequestBody", "address", "render", "take_real_ip", "take_request_id"]

#: A request body up to this many bytes is kept in memory; a larger one goes
#: to a temporary file as it arrives (Twisted's Request used 100,000 too).
BODY_IN_MEMORY = 100_000

_monotonic = time.monotonic

# Enum members bound once: on CPython 3.11 each member lookup is a descriptor call.
_RECEIVED = ExchangeState.RECEIVED
_RESPONDING = ExchangeState.RESPONDING
_FINISHED = ExchangeState.FINISHED
_LOST = ExchangeState.LOST


class RequestBody:
    """A request body as it arrives: in memory up to BODY_IN_MEMORY bytes, then in a temporary file."""

    __slots__ = ("_pieces", "size", "_file")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self.size = 0
        self._file: Optional[IO[bytes]] = None

    def add(self, data: bytes) -> None:
        self.size += len(data)
        spill = self._file
        if spill is not None:
            spill.write(data)
            return
        self._pieces.append(data)
        if self.size > BODY_IN_MEMORY:
            spill = self._file = tempfile.TemporaryFile()
            spill.write(b"".join(self._pieces))
            self._pieces = []

    def whole(self) -> Body:
        """The body: bytes, or the temporary file rewound to its start."""
        spill = self._file
        if spill is not None:
            spill.seek(0)
            return spill
        pieces = self._pieces
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class CarriedExchange:
    """The Exchange calls (fephp.web.exchange) that both carriers answer alike; a subclass frames the response.

    A subclass gives ``unregister_producer`` (used by ``lost``) and the
    response side (``write``, ``finish``, ``abort``...).  States:
    :class:`ExchangeState`.
    """

    # Marks and defaults as class attributes: an exchange is made per request.
    state = _RECEIVED
    status = 0
    reason: Optional[bytes] = None
    bytes_sent = 0
    first_byte_at: Optional[float] = None
    kind = "other"
    backend_name: Optional[str] = None
    php_started_at: Optional[float] = None
    php_ended_at: Optional[float] = None
    request_id = b""
    scheme = b"http"
    #: The ``headers`` rules' edits of the response head (the app sets them; applied at the first write).
    header_edits: "tuple[Any, ...]" = ()
    #: The response's fields (lowercase names), the site's first (set by the carrier before the app runs).
    response_headers: HeaderList
    #: Response fields that were there before start_response (a second call keeps only them).
    _preset = 0
    #: The body's streaming encoder, once the first write chose to compress.
    _encoder: Optional[Encoder] = None
    _on_lost: Optional[Callable[[], object]] = None
    _producer: Any = None

    headers: HeaderList
    compression: Optional[Compression]
    target: bytes
    version: bytes
    client: Address

    # -- the request ---------------------------------------------------------------------

    def header(self, name: bytes) -> Optional[bytes]:
        """The value of request header *name* (lowercase), several joined with ``", "``; None when absent."""
        return header_value(self.headers, name)

    # -- the response --------------------------------------------------------------------

    def start_response(self, status: int, headers: HeaderList, reason: Optional[bytes] = None) -> None:
        """Fix the status and headers (after those already in response_headers); the head waits for the body.

        Called again while nothing went out, it starts anew from what
        response_headers held before the first call (an error page
        replacing an answer the app began).  HTTP/2 has no reason phrase:
        there *reason* is kept for the log only.
        """
        fields = self.response_headers
        if self.state is _RECEIVED:
            self.state = _RESPONDING
            self._preset = len(fields)
        elif self.state is _RESPONDING and self.first_byte_at is None:
            del fields[self._preset :]
        else:
            return
        self.status = status
        self.reason = reason
        fields.extend(headers)

    def _first_bytes(self, data: bytes) -> bytes:
        """At the first body bytes (b"" at a finish with none): the ``headers`` rules edit the head, compression decides; returns the bytes to send."""
        self.first_byte_at = _monotonic()
        if self.header_edits:
            edit_headers(self.response_headers, self.header_edits)
        compression = self.compression
        if compression is not None:
            data, self._encoder = compression.begin(self, data)
        return data

    def unregister_producer(self) -> None:
        """Forget the producer registered last."""
        raise NotImplementedError

    def when_lost(self, call: Callable[[], object]) -> None:
        """Have *call*() run once if the client goes away (or the HTTP/2 stream is reset) before ``finish``."""
        self._on_lost = call

    def lost(self) -> None:
        """The client is gone (the connection lost, or the HTTP/2 stream reset by either side): nothing more is sent."""
        if self.state is _FINISHED or self.state is _LOST:
            return
        self.state = _LOST
        producer = self._producer
        if producer is not None:
            self.unregister_producer()
            producer.stopProducing()
        call = self._on_lost
        if call is not None:
            self._on_lost = None
            call()

    # -- what Twisted Web's IRequest calls them (the access log, resources written for Twisted) --

    @property
    def code(self) -> int:
        return self.status

    @property
    def sentLength(self) -> int:  # noqa: N802 - Twisted's name
        return self.bytes_sent

    @property
    def uri(self) -> bytes:
        return self.target

    @property
    def clientproto(self) -> bytes:
        return self.version

    @property
    def requestHeaders(self) -> Headers:  # noqa: N802 - Twisted's name
        headers = Headers()
        for name, value in self.headers:
            headers.addRawHeader(name, value)
        return headers

    def getClientAddress(self) -> Address:  # noqa: N802 - Twisted's name
        return self.client


def address(where: Any) -> Address:
    """An IPv4/IPv6 address as (host, port); anything else (a UNIX socket) as ("unix:", 0)."""
    host = getattr(where, "host", None)
    if host is None:
        return Address(UNIX, 0)
    return Address(host, getattr(where, "port", 0))


def take_request_id(exchange: CarriedExchange, site: Any) -> list[bytes]:
    """Give *exchange* its X-Request-Id (the client's one if valid, else a new one added to its headers); returns its Host values."""
    hosts: list[bytes] = []
    given: list[bytes] = []
    headers = exchange.headers
    for name, value in headers:
        if name == b"host":
            hosts.append(value)
        elif name == b"x-request-id":
            given.append(value)
    if len(given) == 1 and valid_request_id(given[0]):
        request_id = given[0]
    else:
        # PHP sees the id the log and the client see (HTTP_X_REQUEST_ID).
        request_id = site.new_request_id()
        kept = [field for field in headers if field[0] != b"x-request-id"] if given else headers
        exchange.headers = [*kept, (b"x-request-id", request_id)]
    exchange.request_id = request_id
    return hosts


def take_real_ip(exchange: CarriedExchange, real_ip: Any) -> None:
    """From a trusted proxy: its client's address (REMOTE_ADDR, the access log) and scheme (HTTPS)."""
    wanted = real_ip.header_name.lower()
    values = [value for name, value in exchange.headers if name == wanted]
    proto = [value for name, value in exchange.headers if name == b"x-forwarded-proto"]
    if not values and not proto:
        return
    found = real_ip.client(exchange.client.host, values, proto)
    if found is None:
        return
    if found.host is not None:
        exchange.client = Address(found.host, found.port)
    if found.https is not None:
        exchange.scheme = b"https" if found.https else b"http"


def render(exchange: Any, site: Any, logger: Callable[[], Logger]) -> None:
    """Render *site*'s resource with *exchange* (its target made origin form); a failure is logged and answered 500 or aborted.

    *logger* gives the carrier's Logger only when a failure is logged: a
    Logger read through a class attribute is made anew at each read.
    """
    target = exchange.target
    if target[:1] != b"/" and target[:4].lower() == b"http":
        # RFC 9112 3.2.2: a server MUST accept the absolute form; the app
        # gets the origin form, as PHP does from nginx (HTTP/2 alike).
        origin = origin_form(target)
        exchange.target = origin
        exchange.path, _, exchange.query = origin.partition(b"?")
    try:
        result = site.resource.render(exchange)
    except BaseException:
        logger().failure("rendering {target!r}", Failure(), target=target)
        if exchange.state is _RECEIVED:
            send_error(exchange, 500)
        else:
            exchange.abort()
        return
    if result is not NOT_DONE_YET and type(result) is bytes and exchange.state is _RECEIVED:
        # A resource written for Twisted Web returned its whole body.
        exchange.start_response(200, [(b"content-length", b"%d" % len(result))])
        exchange.write(result)
        exchange.finish()
