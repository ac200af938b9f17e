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

from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from twisted.logger import Logger
from twisted.python.failure import Failure

from .carrier import (
    BODY_IN_MEMORY,
    CarriedExchange,
    RequestBody,
    render,
    take_real_ip,
    take_request_id,
)
from .compress import Compression
from .errors import send_error
from .exchange import Address, Body, ExchangeState, HeaderList
from .heads import valid_host

if TYPE_CHECKING:
    from .http2 import _Stream

__all__ = ["BODY_IN_MEMORY", "H2Exchange", "RequestBody", "serve"]

log = Logger()

#: Response headers that HTTP/2 forbids (RFC 9113 8.2.2): the connection
#: frames and persists itself.
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
#: RFC 9110 6.4.1: no content in these responses, whatever the app writes.
_NO_BODY_STATUSES = frozenset((204, 304))

_RECEIVED = ExchangeState.RECEIVED
_RESPONDING = ExchangeState.RESPONDING
_FINISHED = ExchangeState.FINISHED
_LOST = ExchangeState.LOST


class H2Exchange(CarriedExchange):
    """One HTTP/2 request and its response: the Exchange (fephp.web.exchange) over one stream.

    The response head is handed to the stream at the first body bytes (or
    ``finish``), after the ``headers`` rules and compression decided, and
    leaves with them on the connection's next pump.  ``abort`` resets the
    stream (RST_STREAM INTERNAL_ERROR): the client never takes a cut
    response for a whole one.  States: :class:`ExchangeState`.
    """

    #: HTTP/2 is only negotiated over TLS (ALPN); a trusted proxy's X-Forwarded-Proto may say otherwise.
    scheme = b"https"
    #: As nginx sends SERVER_PROTOCOL for HTTP/2 and logs it.
    version = b"HTTP/2.0"
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

    # -- the response --------------------------------------------------------------------

    def _begin(self, data: bytes) -> bytes:
        """The first body bytes (b"" at a finish with none): compression decides, the head goes to the stream; returns the data."""
        data = self._first_bytes(data)
        status = self.status
        self._bodiless = self.method == b"HEAD" or status in _NO_BODY_STATUSES
        # The encoder (fephp.web.h2hpack) marks the fields never to index.
        lines: list[tuple[bytes, bytes]] = [(b":status", b"%d" % status)]
        for field in self.response_headers:
            name = field[0]
            if not name.islower():
                field = (name.lower(), field[1])  # RFC 9113 8.2.1: uppercase names are malformed
                name = field[0]
            if name not in _CONNECTION_SPECIFIC:
                lines.append(field)
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

    def sendfile_socket(self) -> Optional[Any]:
        """None: an HTTP/2 stream's bytes are framed, never sent straight into the socket."""
        return None

    def sent_directly(self, count: int) -> None:
        """Never called (no sendfile socket); counted all the same."""
        self.bytes_sent += count

    @property
    def transport(self) -> Any:
        """The connection's transport (fephp.web.hosts reads its TLS server name)."""
        return self._stream.connection_transport


def serve(exchange: H2Exchange, site: Any) -> None:
    """Prepare *exchange* as fephp.web.h1 prepares an HTTP/1.x one, and render *site*'s resource with it."""
    hosts = take_request_id(exchange, site)
    request_id = exchange.request_id
    exchange.response_headers = [
        (b"server", site.server_header[0]), (b"date", site.http_date()), (b"x-request-id", request_id)
    ]
    if site.real_ip is not None:
        take_real_ip(exchange, site.real_ip)
    # :authority is the Host (RFC 9113 8.3.1); without it, one valid Host header must do.
    if len(hosts) != 1 or not valid_host(hosts[0]):
        send_error(exchange, 400)
        return
    render(exchange, site, _log)


def _log() -> Logger:
    return log
