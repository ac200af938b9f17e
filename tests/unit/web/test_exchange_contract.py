"""The Exchange's contract: the same small scenarios against every implementation of fephp.web.exchange.Exchange.

Each implementation is a :class:`Carrier`: it serves one request head over
an in-memory connection, hands the app's side (a scenario) the Exchange, and
lets the test read what the client got, lose the connection, and pause and
resume the transport.  :data:`CARRIERS` holds the tests' reference engine
(ReferenceExchange over Twisted's HTTPChannel path, tests/support/reference_http1.py), fephp's own HTTP/1.1
protocol (H1Exchange), RequestExchange over Twisted's plain Request, and
an HTTP/2 stream's own exchange (H2Exchange, driven by an h2 client whose
events are written back as HTTP/1.1 text for the scenarios to read); a new
implementation adds its Carrier there and every scenario runs against it.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Callable, Optional

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from fephp.web.adapt import exchange_of
from fephp.web.exchange import Address, Exchange, ExchangeState
from fephp.web.http2 import H2Connection
from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, SERVER, client_transport
from tests.support.reference_http1 import reference_http1

Scenario = Callable[[Any], None]


class _App(Resource):
    """Hands each request's Exchange to the scenario under test and keeps it."""

    isLeaf = True

    def __init__(self, scenario: Scenario) -> None:
        super().__init__()
        self.scenario = scenario
        self.exchange: Any = None

    def render(self, request: Any) -> Any:
        self.exchange = exchange_of(request)
        self.scenario(self.exchange)
        return NOT_DONE_YET


class Carrier:
    """One implementation of the Exchange, over an in-memory connection (a StringTransport)."""

    name = ""
    #: Whether it can send a 1xx response before the final one.
    informational = True
    #: Whether it carries HTTP/1.0 requests and a reason phrase; the version and scheme its exchanges state (None: the request's).
    http10 = True
    reason_phrase = True
    version: Optional[bytes] = None
    scheme = b"http"

    def site(self, app: Resource) -> Any:
        raise NotImplementedError

    def serve(self, scenario: Scenario, head: bytes) -> "Served":
        app = _App(scenario)
        site = self.site(app)
        channel = site.buildProtocol(CLIENT)
        transport = client_transport()
        channel.makeConnection(transport)
        channel.dataReceived(head)
        return Served(app, channel, transport)


class ReferenceCarrier(Carrier):
    """The tests' reference engine: ReferenceExchange over ReferenceRequest on Twisted's HTTPChannel path."""

    name = "reference-http1"

    def site(self, app: Resource) -> Any:
        site = FrontSite(app, timeout=None, reactor=Clock(), http1=reference_http1)
        site.http_date = lambda: b"Thu, 01 Jan 1970 00:00:00 GMT"  # type: ignore[method-assign]
        return site


class H1Carrier(ReferenceCarrier):
    """fephp's own HTTP/1.1 protocol (fephp.web.h1), whose H1Exchange is the Exchange itself."""

    name = "fephp-http1"

    def site(self, app: Resource) -> Any:
        site = FrontSite(app, timeout=None, reactor=Clock())
        site.http_date = lambda: b"Thu, 01 Jan 1970 00:00:00 GMT"  # type: ignore[method-assign]
        return site


class PlainCarrier(Carrier):
    """RequestExchange over Twisted's own Request in a plain twisted.web Site."""

    name = "twisted-request"
    informational = False  # Twisted's channel has no way to send a 1xx response

    def site(self, app: Resource) -> Any:
        return Site(app, reactor=Clock())


class H2Carrier(Carrier):
    """fephp's HTTP/2 connection, whose streams are served as H2Exchanges, spoken to by an h2 client."""

    name = "fephp-http2"
    http10 = False  # no HTTP/1.0 over HTTP/2
    reason_phrase = False  # RFC 9113 8.3.2: only the status code
    version = b"HTTP/2.0"
    scheme = b"https"  # HTTP/2 only over TLS (ALPN)

    def serve(self, scenario: Scenario, head: bytes) -> "Served":
        app = _App(scenario)
        clock = Clock()
        site = FrontSite(app, timeout=None, reactor=clock)
        site.http_date = lambda: b"Thu, 01 Jan 1970 00:00:00 GMT"  # type: ignore[method-assign]
        connection = H2Connection(site, clock=clock, max_header_size=site.max_header_size, max_line_length=16384)
        transport = StringTransport(hostAddress=SERVER, peerAddress=CLIENT)
        connection.makeConnection(transport)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        lines = head.split(b"\r\n\r\n")[0].split(b"\r\n")
        method, target, _version = lines[0].split(b" ")
        fields = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        authority = [value for name, value in fields if name.lower() == b"host"]
        request = [(b":method", method), (b":path", target), (b":scheme", b"https"), (b":authority", authority[0])]
        request += [(name.lower(), value) for name, value in fields if name.lower() != b"host"]
        served = H2Served(app, connection, transport, clock, client)
        served.stream = client.get_next_available_stream_id()
        client.send_headers(served.stream, request, end_stream=True)
        served.flow()
        return served


#: Every implementation the scenarios run against.
CARRIERS = [ReferenceCarrier(), H1Carrier(), PlainCarrier(), H2Carrier()]


class Served:
    """One request served: its Exchange, and what the client got."""

    def __init__(self, app: _App, channel: Any, transport: StringTransport) -> None:
        self.app = app
        self.channel = channel
        self.transport = transport

    @property
    def exchange(self) -> Any:
        return self.app.exchange

    def out(self) -> bytes:
        return self.transport.value()

    def response(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """The final response: status line, headers (lowercase names, several joined with ", "), body unchunked."""
        out = self.out()
        while out.startswith(b"HTTP/1.1 1"):
            out = out.partition(b"\r\n\r\n")[2]
        head, _, body = out.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            name = name.lower()
            headers[name] = headers[name] + b", " + value if name in headers else value
        if headers.get(b"transfer-encoding") == b"chunked":
            body = _dechunk(body)
        return lines[0], headers, body

    def lose(self) -> None:
        """The client goes away."""
        self.channel.connectionLost(Failure(ConnectionDone()))

    def cut(self) -> bool:
        """Whether the client saw the response cut (the connection closing) rather than ended."""
        return bool(self.transport.disconnecting) and not self.out().endswith(b"0\r\n\r\n")

    def transport_producer(self) -> Any:
        """The producer the transport pauses and resumes."""
        return self.transport.producer


class H2Served(Served):
    """One request served over HTTP/2: the client's events, written as HTTP/1.1 text by :meth:`out`."""

    stream = 0

    def __init__(self, app: _App, channel: Any, transport: StringTransport, clock: Clock, client: Any) -> None:
        super().__init__(app, channel, transport)
        self.clock = clock
        self.client = client
        self.events: list[Any] = []

    def flow(self) -> None:
        """Run the reactor's turns and deliver each side's bytes to the other until both are quiet (bounded)."""
        for _ in range(50):
            self.clock.advance(0)
            to_server = self.client.data_to_send()
            if to_server:
                self.channel.dataReceived(to_server)
            self.clock.advance(0)
            to_client = self.transport.value()
            self.transport.clear()
            if to_client:
                self.events += self.client.receive_data(to_client)
            if not to_server and not to_client:
                return

    def out(self) -> bytes:
        self.flow()
        text = b""
        for event in self.events:
            if getattr(event, "stream_id", None) != self.stream:
                continue
            if isinstance(event, (h2.events.InformationalResponseReceived, h2.events.ResponseReceived)):
                fields = dict(event.headers)
                status = int(fields[b":status"])
                text += b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())
                text += b"".join(b"%s: %s\r\n" % pair for pair in event.headers if pair[0][:1] != b":")
                text += b"\r\n"
            elif isinstance(event, h2.events.DataReceived):
                text += event.data
        return text

    def cut(self) -> bool:
        """Whether the stream was reset (INTERNAL_ERROR) without its END_STREAM."""
        self.flow()
        mine = [event for event in self.events if getattr(event, "stream_id", None) == self.stream]
        resets = [event.error_code for event in mine if isinstance(event, h2.events.StreamReset)]
        ended = any(isinstance(event, h2.events.StreamEnded) for event in mine)
        return resets == [h2.errors.ErrorCodes.INTERNAL_ERROR] and not ended

    def transport_producer(self) -> Any:
        return _TurningProducer(self)


class _TurningProducer:
    """The HTTP/2 connection as the transport's producer, with the reactor's turn run after a resume (which it answers on)."""

    def __init__(self, served: H2Served) -> None:
        self._served = served

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        connection: Any = self._served.transport.producer
        connection.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        connection: Any = self._served.transport.producer
        connection.resumeProducing()
        self._served.clock.advance(0)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2:]
    return out


GET = b"GET /a/b.php?x=1&y=2 HTTP/1.1\r\nHost: example.test\r\nX-Test: one\r\nX-Test: two\r\n\r\n"


@pytest.fixture(params=CARRIERS, ids=lambda carrier: carrier.name)
def carrier(request: Any) -> Carrier:
    return request.param  # type: ignore[no-any-return]


def test_request_side(carrier: Carrier) -> None:
    """The request's method, target, path, query, version, headers, addresses and scheme as the Exchange states them."""
    seen: dict[str, Any] = {}

    def scenario(exchange: Any) -> None:
        seen.update(
            method=exchange.method, target=exchange.target, path=exchange.path, query=exchange.query,
            version=exchange.version, x_test=exchange.header(b"x-test"), host=exchange.header(b"host"),
            missing=exchange.header(b"nope"), scheme=exchange.scheme, client=exchange.client,
            pairs=[pair for pair in exchange.headers if pair[0] == b"x-test"], state=exchange.state,
            status=exchange.status, is_exchange=isinstance(exchange, Exchange),
        )
        exchange.start_response(200, [])
        exchange.finish()

    carrier.serve(scenario, GET)
    assert seen == {
        "method": b"GET", "target": b"/a/b.php?x=1&y=2", "path": b"/a/b.php", "query": b"x=1&y=2",
        "version": carrier.version or b"HTTP/1.1", "x_test": b"one, two", "host": b"example.test", "missing": None,
        "scheme": carrier.scheme, "client": Address("127.0.0.1", 5000),
        "pairs": [(b"x-test", b"one"), (b"x-test", b"two")], "state": ExchangeState.RECEIVED, "status": 0,
        "is_exchange": True,
    }


def test_status_headers_and_body(carrier: Carrier) -> None:
    """start_response, two writes and finish: the status, the headers in order, the body whole; the marks follow."""

    def scenario(exchange: Any) -> None:
        exchange.start_response(201, [(b"content-type", b"text/plain"), (b"x-a", b"1"), (b"x-a", b"2")])
        assert (exchange.state, exchange.status, exchange.first_byte_at) == (ExchangeState.RESPONDING, 201, None)
        exchange.write(b"hel")
        exchange.write(b"lo")
        exchange.finish()

    served = carrier.serve(scenario, GET)
    status, headers, body = served.response()
    assert (status, headers[b"content-type"], headers[b"x-a"], body) == (b"HTTP/1.1 201 Created", b"text/plain", b"1, 2", b"hello")
    exchange = served.exchange
    assert (exchange.state, exchange.status, exchange.bytes_sent) == (ExchangeState.FINISHED, 201, 5)
    assert exchange.first_byte_at is not None and exchange.first_byte_at >= exchange.started_at


def test_reason_phrase_and_restart_before_any_byte(carrier: Carrier) -> None:
    """A second start_response before any byte went out replaces the first; its reason phrase is sent."""

    def scenario(exchange: Any) -> None:
        exchange.start_response(200, [(b"x-first", b"1")])
        exchange.start_response(502, [(b"content-length", b"3")], b"Bad Gateway Here")
        exchange.write(b"bad")
        exchange.finish()

    status, headers, body = carrier.serve(scenario, GET).response()
    line = b"HTTP/1.1 502 Bad Gateway Here" if carrier.reason_phrase else b"HTTP/1.1 502 Bad Gateway"
    assert (status, body, b"x-first" in headers, headers[b"content-length"]) == (line, b"bad", False, b"3")


def test_head_gets_no_body(carrier: Carrier) -> None:
    """HEAD: the head with its Content-Length, no body bytes."""

    def scenario(exchange: Any) -> None:
        exchange.start_response(200, [(b"content-length", b"5")])
        exchange.write(b"hello")
        exchange.finish()

    served = carrier.serve(scenario, b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert served.out().endswith(b"\r\n\r\n")
    status, headers, body = served.response()
    assert (status, headers[b"content-length"], body) == (b"HTTP/1.1 200 OK", b"5", b"")


@pytest.mark.parametrize(("code", "line"), [(204, b"HTTP/1.1 204 No Content"), (304, b"HTTP/1.1 304 Not Modified")])
def test_bodiless_statuses_send_no_body(carrier: Carrier, code: int, line: bytes) -> None:
    """204 and 304: whatever the app writes, no body and no chunked framing."""

    def scenario(exchange: Any) -> None:
        exchange.start_response(code, [(b"etag", b'"v"')])
        exchange.write(b"nope")
        exchange.finish()

    served = carrier.serve(scenario, GET)
    assert served.out().endswith(b"\r\n\r\n")
    status, headers, body = served.response()
    assert (status, headers[b"etag"], body, b"transfer-encoding" in headers) == (line, b'"v"', b"", False)


def test_write_pieces_as_if_joined(carrier: Carrier) -> None:
    """write_pieces of bytes and memoryviews is the same body as their concatenation."""
    data = memoryview(b"0123456789")

    def scenario(exchange: Any) -> None:
        exchange.start_response(200, [])
        exchange.write_pieces([b"ab", data[2:5]])
        exchange.write_pieces([data[:1]])
        exchange.write_pieces([b"z", data[9:]])
        exchange.finish()

    served = carrier.serve(scenario, GET)
    assert served.response()[2] == b"ab2340z9"
    assert served.exchange.bytes_sent == 8


def test_abort_cuts_the_response(carrier: Carrier) -> None:
    """abort after part of the body: the connection closes without the body's end; the exchange is LOST."""

    def scenario(exchange: Any) -> None:
        exchange.start_response(200, [])
        exchange.write(b"part")
        exchange.abort()

    served = carrier.serve(scenario, GET)
    assert served.cut()
    assert served.exchange.state is ExchangeState.LOST


def test_informational_before_the_response(carrier: Carrier) -> None:
    """A 103 goes out before the final response where the carrier can send one; the final response is whole either way."""

    def scenario(exchange: Any) -> None:
        exchange.informational(103, [(b"link", b"</a.css>; rel=preload")])
        exchange.start_response(200, [(b"content-length", b"2")])
        exchange.write(b"ok")
        exchange.finish()

    served = carrier.serve(scenario, GET)
    if carrier.informational:
        assert served.out().startswith(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n")
    else:
        assert served.out().startswith(b"HTTP/1.1 200 OK\r\n")
    assert served.response()[2] == b"ok"


def test_no_informational_to_an_http10_client(carrier: Carrier) -> None:
    """RFC 9110 15.2: an HTTP/1.0 client never gets a 1xx."""
    if not carrier.http10:
        pytest.skip(f"{carrier.name} carries no HTTP/1.0")

    def scenario(exchange: Any) -> None:
        exchange.informational(103, [(b"link", b"</a.css>; rel=preload")])
        exchange.start_response(200, [(b"content-length", b"2")])
        exchange.write(b"ok")
        exchange.finish()

    served = carrier.serve(scenario, b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    assert served.out().startswith(b"HTTP/1.0 200 OK\r\n")


def test_when_lost_runs_once_when_the_client_goes(carrier: Carrier) -> None:
    """A client gone before finish runs the when_lost call once, and the exchange is LOST."""
    calls: list[int] = []

    def scenario(exchange: Any) -> None:
        exchange.when_lost(lambda: calls.append(1))
        exchange.start_response(200, [])
        exchange.write(b"part")

    served = carrier.serve(scenario, GET)
    served.lose()
    served.lose()
    assert (calls, served.exchange.state) == ([1], ExchangeState.LOST)


def test_when_lost_does_not_run_after_finish(carrier: Carrier) -> None:
    """A response finished before the connection closes never runs its when_lost call."""
    calls: list[int] = []

    def scenario(exchange: Any) -> None:
        exchange.when_lost(lambda: calls.append(1))
        exchange.start_response(200, [(b"content-length", b"2")])
        exchange.write(b"ok")
        exchange.finish()

    served = carrier.serve(scenario, GET)
    served.lose()
    assert (calls, served.exchange.state) == ([], ExchangeState.FINISHED)


@implementer(IPushProducer)
class _Pushing:
    """A push producer that records what it was told."""

    def __init__(self) -> None:
        self.told: list[str] = []

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.told.append("pause")

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.told.append("resume")

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.told.append("stop")


def test_push_producer_follows_the_transport(carrier: Carrier) -> None:
    """A push producer is paused and resumed as the transport is; unregistered, it hears nothing more."""
    producer = _Pushing()

    def scenario(exchange: Any) -> None:
        exchange.start_response(200, [])
        exchange.write(b"x")
        exchange.register_producer(producer, True)

    served = carrier.serve(scenario, GET)
    transport_producer: Optional[Any] = served.transport_producer()
    assert transport_producer is not None
    transport_producer.pauseProducing()
    transport_producer.resumeProducing()
    served.exchange.unregister_producer()
    transport_producer.pauseProducing()
    assert producer.told == ["pause", "resume"]
    served.exchange.finish()
