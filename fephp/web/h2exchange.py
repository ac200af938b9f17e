"""One HTTP/2 stream's request and response as the app sees them, from the server's side: the Exchange over fephp's H2 connection.

:class:`H2Exchange` is made by a stream of :class:`fephp.web.http2.H2Connection`
once its request is whole (head and body, the body buffered within the
site's limits); :func:`serve` prepares it as :mod:`fephp.web.h1` prepares
an HTTP/1.x exchange (the site's Server, Date and X-Request-Id, the real
client behind a trusted proxy, the Host check) and renders the site's
resource with it.  Its response calls become the stream's HEADERS and DATA
frames; flow control, the buffer bounds and the timers stay the stream's
(:class:`fephp.web.http2._Stream`).  No Twisted Request is made.
"""

from __future__ import annotations

import tempfile
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from hpack import NeverIndexedHeaderTuple
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from .compress import Compression, Encoder
from .errors import send_error
from .exchange import Address, Body, ExchangeState, HeaderList, edit_headers, header_value
from .heads import origin_form, valid_host, valid_request_id

if TYPE_CHECKING:
    from .http2 import _Stream

__all__ = ["BODY_IN_MEMORY", "H2Exchange", "RequestBody", "serve"]

_monotonic = time.monotonic
log = Logger()

#: A request body up to this many bytes is kept in memory, a larger one goes to a temporary file (as over HTTP/1.x).
BODY_IN_MEMORY = 100_000

#: Response headers that HTTP/2 forbids (RFC 9113 8.2.2): the connection
#: frames and persists itself.
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
#: Response headers whose values change from response to response: sent as
#: literals never added to the HPACK table (RFC 7541 6.2.3), which would
#: otherwise fill with one-off entries that every later header is searched
#: against; Set-Cookie also so that it cannot be probed (RFC 7541 7.1.3).
_VOLATILE = frozenset(
    (b"date", b"content-length", b"etag", b"last-modified", b"expires", b"set-cookie", b"x-request-id",
     b"content-range", b"age", b"location")
)
#: RFC 9110 6.4.1: no content in these responses, whatever the app writes.
_NO_BODY_STATUSES = frozenset((204, 304))

_RECEIVED = ExchangeState.RECEIVED
_RESPONDING = ExchangeState.RESPONDING
_FINISHED = ExchangeState.FINISHED
_LOST = ExchangeState.LOST


class RequestBody:
    """A request body as its DATA frames arrive: in memory up to BODY_IN_MEMORY bytes, then in a temporary file."""

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


class H2Exchange:
    """One HTTP/2 request and its response: the Exchange (fephp.web.exchange) over one stream.

    The response head is handed to the stream at the first body bytes (or
    ``finish``), after the ``headers`` rules and compression decided, and
    leaves with them on the connection's next pump.  ``abort`` resets the
    stream (RST_STREAM INTERNAL_ERROR): the client never takes a cut
    response for a whole one.  States: :class:`ExchangeState`.
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
    #: HTTP/2 is only negotiated over TLS (ALPN); a trusted proxy's X-Forwarded-Proto may say otherwise.
    scheme = b"https"
    #: As nginx sends SERVER_PROTOCOL for HTTP/2 and logs it.
    version = b"HTTP/2.0"
    header_edits: "tuple[Any, ...]" = ()
    response_headers: HeaderList
    _preset = 0
    _encoder: Optional[Encoder] = None
    _on_lost: Optional[Callable[[], object]] = None
    _producer: Any = None
    #: HEAD, 204 or 304: body bytes are dropped.
    _bodiless = False

    def __init__(
        self, stream: "_Stream", method: bytes, target: bytes, headers: HeaderList, body: Body,
        client: Address, server: Address, started_at: float, compression: Optional[Compression],
    ) -> None:
        self._stream = stream
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition(b"?")
        self.headers = headers
        self.body = body
        self.client = client
        self.server = server
        self.started_at = started_at
        self.compression = compression

    # -- the request ---------------------------------------------------------------------

    def header(self, name: bytes) -> Optional[bytes]:
        """The value of request header *name* (lowercase), several joined with ``", "``; None when absent."""
        return header_value(self.headers, name)

    # -- the response --------------------------------------------------------------------

    def start_response(self, status: int, headers: HeaderList, reason: Optional[bytes] = None) -> None:
        """Fix the status and headers (after those already in response_headers); the head waits for the body.

        Called again while nothing went out, it starts anew from what
        response_headers held before the first call.  HTTP/2 has no reason
        phrase: *reason* is kept for the log only.
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

    def _begin(self, data: bytes) -> bytes:
        """The first body bytes (b"" at a finish with none): compression decides, the head goes to the stream; returns the data."""
        self.first_byte_at = _monotonic()
        if self.header_edits:
            edit_headers(self.response_headers, self.header_edits)
        compression = self.compression
        if compression is not None:
            data, self._encoder = compression.begin(self, data)
        status = self.status
        self._bodiless = self.method == b"HEAD" or status in _NO_BODY_STATUSES
        lines: list[tuple[bytes, bytes]] = [(b":status", b"%d" % status)]
        for name, value in self.response_headers:
            if not name.islower():
                name = name.lower()  # RFC 9113 8.2.1: uppercase names are malformed
            if name in _CONNECTION_SPECIFIC:
                continue
            if name in _VOLATILE:
                lines.append(NeverIndexedHeaderTuple(name, value))
            else:
                lines.append((name, value))
        self._stream.set_head(lines)
        return data

    def write(self, data: bytes) -> None:
        """Send body bytes (the held head first, on the same pump)."""
        if self.state is not _RESPONDING:
            if self.state is not _RECEIVED:
                return
            self.start_response(200, [])
        if self.first_byte_at is None:
            data = self._begin(data)
        elif self._encoder is not None:
            data = self._encoder.compress(data)
        if data and not self._bodiless:
            self.bytes_sent += len(data)
            self._stream.write(data)

    def write_pieces(self, pieces: Sequence[Union[bytes, memoryview]]) -> None:
        """Send body bytes given as pieces, joined (a DATA frame is one piece anyway)."""
        self.write(pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes else b"".join(pieces))

    def finish(self) -> None:
        """The response is complete: END_STREAM follows its last bytes; the exchange is logged."""
        state = self.state
        if state is _RECEIVED:
            self.start_response(200, [])
        elif state is not _RESPONDING:
            return
        if self.first_byte_at is None:
            data = self._begin(b"")
            if data and not self._bodiless:
                self.bytes_sent += len(data)
                self._stream.write(data)
        encoder = self._encoder
        if encoder is not None:
            self._encoder = None
            tail = encoder.finish()
            if tail and not self._bodiless:
                self.bytes_sent += len(tail)
                self._stream.write(tail)
        self.state = _FINISHED
        self._stream.end()
        if self._producer is not None:
            self.unregister_producer()
        site = self._stream.site
        try:
            site.log(self)
        except Exception:
            log.failure("logging a request", Failure())

    def abort(self) -> None:
        """Reset the stream: a response already begun cannot end well, and must not look whole."""
        if self.state is _FINISHED or self.state is _LOST:
            return
        self.state = _LOST
        if self._producer is not None:
            self.unregister_producer()
        self._stream.abort_response()

    def informational(self, status: int, headers: HeaderList) -> None:
        """Send a 1xx response (103 Early Hints): a HEADERS frame before the response's own."""
        if self.state is _RECEIVED:
            self._stream.write_informational(status, headers)

    def register_producer(self, producer: Any, streaming: bool) -> None:
        """Have *producer* paused and resumed as the client's windows and the socket take the response."""
        self._producer = producer
        self._stream.register_producer(producer, streaming)

    def unregister_producer(self) -> None:
        """Forget the producer registered last."""
        self._producer = None
        self._stream.unregister_producer()

    def when_lost(self, call: Callable[[], object]) -> None:
        """Have *call*() run once if the client goes away (or the stream is reset) before ``finish``."""
        self._on_lost = call

    def lost(self) -> None:
        """The stream is gone (reset by either side, or the connection lost): nothing more is sent."""
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

    def sendfile_socket(self) -> Optional[Any]:
        """None: an HTTP/2 stream's bytes are framed, never sent straight into the socket."""
        return None

    def sent_directly(self, count: int) -> None:
        """Never called (no sendfile socket); counted all the same."""
        self.bytes_sent += count

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

    @property
    def transport(self) -> Any:
        """The connection's transport (fephp.web.hosts reads its TLS server name)."""
        return self._stream.connection_transport


def serve(exchange: H2Exchange, site: Any) -> None:
    """Prepare *exchange* as fephp.web.h1 prepares an HTTP/1.x one, and render *site*'s resource with it."""
    hosts: list[bytes] = []
    given: list[bytes] = []
    for name, value in exchange.headers:
        if name == b"host":
            hosts.append(value)
        elif name == b"x-request-id":
            given.append(value)
    if len(given) == 1 and valid_request_id(given[0]):
        request_id = given[0]
    else:
        # PHP sees the id the log and the client see (HTTP_X_REQUEST_ID).
        request_id = site.new_request_id()
        kept = [field for field in exchange.headers if field[0] != b"x-request-id"] if given else exchange.headers
        exchange.headers = [*kept, (b"x-request-id", request_id)]
    exchange.request_id = request_id
    exchange.response_headers = [
        (b"server", site.server_header[0]), (b"date", site.http_date()), (b"x-request-id", request_id)
    ]
    if site.real_ip is not None:
        _take_real_ip(exchange, site.real_ip)
    # :authority is the Host (RFC 9113 8.3.1); without it, one valid Host header must do.
    if len(hosts) != 1 or not valid_host(hosts[0]):
        send_error(exchange, 400)
        return
    target = exchange.target
    if target[:1] != b"/" and target[:4].lower() == b"http":
        # The app gets the origin form, as over HTTP/1.1 (RFC 9112 3.2.2).
        origin = origin_form(target)
        exchange.target = origin
        exchange.path, _, exchange.query = origin.partition(b"?")
    try:
        result = site.resource.render(exchange)
    except BaseException:
        log.failure("rendering {target!r}", Failure(), target=target)
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


def _take_real_ip(exchange: H2Exchange, real_ip: Any) -> None:
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
