"""fephp's HTTP/2 connection against an h2 client over an in-memory transport: frames, limits, flow control."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.errors
import h2.connection
import h2.events
import h2.settings
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from fephp.web.http2 import RESET_BURST, STREAM_BUFFER, H2Connection
from fephp.web.site import FrontSite


class Producer:
    """A push producer that records its pauses and resumes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:  # noqa: N802
        self.calls.append("pause")

    def resumeProducing(self) -> None:  # noqa: N802
        self.calls.append("resume")

    def stopProducing(self) -> None:  # noqa: N802
        self.calls.append("stop")


class App(Resource):
    """"/" answers "hello"; "/stream" keeps the request open for the test to write to."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.open: list[Any] = []

    def render(self, request: Any) -> Any:
        if request.path == b"/stream":
            self.open.append(request)
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"text/plain")
        return b"hello " + request.clientproto


class Pair:
    """fephp's H2Connection on a StringTransport, and an h2 client speaking to it."""

    def __init__(self, **site_options: Any) -> None:
        self.clock = Clock()
        self.app = App()
        self.site = FrontSite(self.app, timeout=None, reactor=self.clock, **site_options)
        self.server = H2Connection(self.site, clock=self.clock, max_header_size=self.site.max_header_size, max_line_length=16384)
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 443), peerAddress=IPv4Address("TCP", "127.0.0.1", 5000)
        )
        self.server.makeConnection(self.transport)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.client = h2.connection.H2Connection(config)
        self.client.initiate_connection()
        self.events: list[Any] = []
        self.exchange()

    def exchange(self) -> list[Any]:
        """Deliver what each side has for the other until both are quiet; returns the client's new events."""
        new: list[Any] = []
        for _ in range(50):
            self.clock.advance(0)
            to_server = self.client.data_to_send()
            if to_server:
                self.server.dataReceived(to_server)
            self.clock.advance(0)
            to_client = self.transport.value()
            self.transport.clear()
            if to_client:
                new += self.client.receive_data(to_client)
            if not to_server and not to_client and not self.client.data_to_send():
                break
        self.events += new
        return new

    def get(self, path: str, extra: tuple[tuple[str, str], ...] = ()) -> int:
        stream = self.client.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "example.test")]
        self.client.send_headers(stream, headers + list(extra), end_stream=True)
        return stream


def _of(events: list[Any], kind: type, stream: int) -> list[Any]:
    return [e for e in events if isinstance(e, kind) and e.stream_id == stream]


def test_a_get_is_answered_with_its_head_and_body_in_one_write() -> None:
    """A small response leaves as HEADERS and DATA with END_STREAM in one transport write, as HTTP/2.0."""
    pair = Pair()
    stream = pair.get("/")
    writes: list[bytes] = []
    original = pair.transport.write
    pair.transport.write = lambda data: (writes.append(data), original(data))[1]  # type: ignore[method-assign]
    events = pair.exchange()
    (response,) = _of(events, h2.events.ResponseReceived, stream)
    headers = dict(response.headers)
    assert (headers[":status"], headers["content-type"], headers["content-length"]) == ("200", "text/plain", "14")
    assert b"".join(e.data for e in _of(events, h2.events.DataReceived, stream)) == b"hello HTTP/2.0"
    assert _of(events, h2.events.StreamEnded, stream)
    assert len(writes) == 1


def test_headers_over_the_limit_get_431_without_the_app() -> None:
    """A header list over max_header_size is answered 431 on its stream; the app never sees it."""
    pair = Pair(max_header_size=1024)
    stream = pair.get("/stream", (("x-big", "a" * 2000),))
    events = pair.exchange()
    (response,) = _of(events, h2.events.ResponseReceived, stream)
    assert dict(response.headers)[":status"] == "431"
    assert pair.app.open == []


def test_a_shut_window_pauses_the_producer_and_an_update_resumes_it() -> None:
    """Past STREAM_BUFFER unsent bytes the response's producer is paused; the client's WINDOW_UPDATE resumes it."""
    pair = Pair()
    stream = pair.get("/stream")
    pair.exchange()
    (request,) = pair.app.open
    producer = Producer()
    request.registerProducer(producer, True)
    request.write(b"x" * 65535)  # fills the client's initial window
    pair.exchange()
    request.write(b"y" * (STREAM_BUFFER + 1))
    pair.exchange()
    assert producer.calls == ["pause"]
    pair.client.increment_flow_control_window(2 * STREAM_BUFFER)
    pair.client.increment_flow_control_window(2 * STREAM_BUFFER, stream_id=stream)
    events = pair.exchange()
    assert producer.calls == ["pause", "resume"]
    assert sum(len(e.data) for e in _of(events, h2.events.DataReceived, stream)) == STREAM_BUFFER + 1


def test_a_reset_stream_tells_the_request() -> None:
    """RST_STREAM from the client makes the Request's notifyFinish fail, which is what cancels PHP."""
    pair = Pair()
    stream = pair.get("/stream")
    pair.exchange()
    (request,) = pair.app.open
    failures: list[Any] = []
    request.notifyFinish().addErrback(failures.append)
    pair.client.reset_stream(stream)
    pair.exchange()
    assert len(failures) == 1


def test_too_many_resets_close_the_connection() -> None:
    """A burst of stream resets past RESET_BURST (Rapid Reset) ends the connection with ENHANCE_YOUR_CALM."""
    pair = Pair()
    for _ in range(RESET_BURST + 1):
        stream = pair.get("/stream")
        pair.client.reset_stream(stream)
    events = pair.exchange()
    terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [e.error_code for e in terminated] == [h2.errors.ErrorCodes.ENHANCE_YOUR_CALM]
    assert pair.transport.disconnecting


def test_a_stopping_server_says_goaway() -> None:
    """The site's close_connections sends GOAWAY (NO_ERROR, the last stream taken) before closing an HTTP/2 connection."""
    pair = Pair()
    stream = pair.get("/")
    pair.exchange()
    pair.server.say_goodbye()
    events = pair.exchange()
    (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert (goaway.error_code, goaway.last_stream_id) == (h2.errors.ErrorCodes.NO_ERROR, stream)
