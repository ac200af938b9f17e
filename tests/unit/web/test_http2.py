"""fephp's HTTP/2 connection against an h2 client over an in-memory transport: frames, limits, flow control."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.errors
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import Frame
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from fephp.web.exchange import ExchangeState
from fephp.web.h2exchange import H2Exchange
from fephp.web.http2 import ABORTED_BURST, CLOSE_GRACE, RESET_BURST, STREAM_BUFFER, STREAM_SPILL, H2Connection
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
    """"/" answers "hello" and the version; "/stream" keeps the Exchange open for the test to write to."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.open: list[Any] = []

    def render(self, exchange: Any) -> Any:
        assert isinstance(exchange, H2Exchange)  # the stream's own exchange, no Twisted Request
        if exchange.path == b"/stream":
            self.open.append(exchange)
            return NOT_DONE_YET
        body = b"hello " + exchange.version
        exchange.start_response(200, [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))])
        exchange.write(body)
        exchange.finish()
        return NOT_DONE_YET


class Pair:
    """fephp's H2Connection on a StringTransport, and an h2 client speaking to it."""

    def __init__(self, **site_options: Any) -> None:
        self.clock = Clock()
        self.app = App()
        self.site = FrontSite(self.app, reactor=self.clock, **{"timeout": None, **site_options})
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


def _window_spent() -> tuple[Pair, int, Any, Producer]:
    """A "/stream" request with a push producer, which has written the client's whole initial window (65535 bytes)."""
    pair = Pair()
    stream = pair.get("/stream")
    pair.exchange()
    (request,) = pair.app.open
    producer = Producer()
    request.register_producer(producer, True)
    request.write(b"x" * 65535)
    pair.exchange()
    return pair, stream, request, producer


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
    """A header list whose decoded size is over max_header_size is answered 431 on its stream; the app never sees it."""
    pair = Pair(max_header_size=1024)
    # 1100 Huffman-coded "a"s take 688 bytes in the block: under the bound
    # on the block itself (test_h2_defences), over the decoded one.
    stream = pair.get("/stream", (("x-big", "a" * 1100),))
    events = pair.exchange()
    (response,) = _of(events, h2.events.ResponseReceived, stream)
    assert dict(response.headers)[":status"] == "431"
    assert pair.app.open == []


def test_a_shut_window_pauses_the_producer_and_an_update_resumes_it() -> None:
    """Past STREAM_BUFFER + STREAM_SPILL unsent bytes the response's producer is paused; the client's WINDOW_UPDATE resumes it."""
    pair, stream, request, producer = _window_spent()
    request.write(b"y" * (STREAM_BUFFER + STREAM_SPILL + 1))
    pair.exchange()
    assert producer.calls == ["pause"]
    pair.client.increment_flow_control_window(2 * STREAM_SPILL)
    pair.client.increment_flow_control_window(2 * STREAM_SPILL, stream_id=stream)
    events = pair.exchange()
    assert producer.calls == ["pause", "resume"]
    assert sum(len(e.data) for e in _of(events, h2.events.DataReceived, stream)) == STREAM_BUFFER + STREAM_SPILL + 1


def test_a_reset_stream_tells_the_request() -> None:
    """RST_STREAM from the client runs the exchange's when_lost call (what cancels PHP) and makes it LOST."""
    pair = Pair()
    stream = pair.get("/stream")
    pair.exchange()
    (request,) = pair.app.open
    failures: list[int] = []
    request.when_lost(lambda: failures.append(1))
    pair.client.reset_stream(stream)
    pair.exchange()
    assert (failures, request.state) == ([1], ExchangeState.LOST)


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


def test_a_stream_reset_in_the_same_turn_never_reaches_the_app() -> None:
    """HEADERS with END_STREAM and its RST_STREAM in the same reactor turn (Rapid Reset): the app is never called."""
    pair = Pair()
    first = pair.get("/stream")
    pair.client.reset_stream(first)
    pair.server.dataReceived(pair.client.data_to_send())
    second = pair.get("/stream")
    pair.server.dataReceived(pair.client.data_to_send())  # a second read before the turn ends
    pair.client.reset_stream(second)
    pair.server.dataReceived(pair.client.data_to_send())
    pair.exchange()
    assert pair.app.open == []
    pair.get("/stream")
    pair.exchange()
    assert len(pair.app.open) == 1


def test_resets_of_streams_being_answered_past_their_budget_close_the_connection() -> None:
    """Resetting ABORTED_BURST + 1 dispatched streams whose answer has started (each reset costs the control budget
    one, so that budget is not the one spent) in a burst ends the connection with ENHANCE_YOUR_CALM."""
    pair = Pair()
    for _ in range(ABORTED_BURST + 1):
        stream = pair.get("/stream")
        pair.exchange()
        pair.app.open[-1].start_response(200, [(b"content-type", b"text/plain")])
        pair.app.open[-1].write(b"x")
        pair.exchange()
        pair.client.reset_stream(stream)
    events = pair.exchange()
    assert len(pair.app.open) == ABORTED_BURST + 1
    terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [e.error_code for e in terminated] == [h2.errors.ErrorCodes.ENHANCE_YOUR_CALM]


def test_after_a_refused_frame_nothing_more_is_read_and_the_transport_is_aborted() -> None:
    """A frame over SETTINGS_MAX_FRAME_SIZE: GOAWAY FRAME_SIZE_ERROR, reading paused, later bytes ignored, abort after CLOSE_GRACE."""
    pair = Pair()
    pair.server.dataReceived((16 * 1024 * 1024 - 1).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01")
    events = pair.client.receive_data(pair.transport.value())
    pair.transport.clear()
    assert [e.error_code for e in events if isinstance(e, h2.events.ConnectionTerminated)] == [h2.errors.ErrorCodes.FRAME_SIZE_ERROR]
    assert (pair.transport.producerState, pair.transport.disconnecting) == ("paused", True)
    pair.server.dataReceived(b"\x00" * 100_000)  # never reaches h2: no error, nothing written
    assert pair.transport.value() == b""
    aborted: list[bool] = []
    pair.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
    pair.clock.advance(CLOSE_GRACE)
    assert aborted == [True]


def test_a_stalled_upload_gets_408_after_client_body() -> None:
    """A stream whose body sends nothing for timeouts.client_body is answered 408 and reset, without the app."""
    pair = Pair(client_body_timeout=5.0)
    stream = pair.client.get_next_available_stream_id()
    pair.client.send_headers(stream, [(":method", "POST"), (":path", "/stream"), (":scheme", "https"), (":authority", "a")])
    pair.exchange()
    pair.clock.advance(4.9)
    assert pair.exchange() == []
    pair.clock.advance(0.1)
    events = pair.exchange()
    (response,) = _of(events, h2.events.ResponseReceived, stream)
    assert dict(response.headers)[":status"] == "408"
    assert [e.error_code for e in _of(events, h2.events.StreamReset, stream)] == [h2.errors.ErrorCodes.NO_ERROR]
    assert pair.app.open == []


def test_a_stream_without_window_is_cancelled_after_client_send() -> None:
    """A response whose client opens no window for timeouts.client_send is reset CANCEL, which runs the exchange's when_lost call."""
    pair = Pair(client_send_timeout=5.0)
    stream = pair.get("/stream")
    pair.exchange()
    (request,) = pair.app.open
    failures: list[int] = []
    request.when_lost(lambda: failures.append(1))
    request.write(b"x" * 70000)  # past the client's 65535-byte window
    pair.exchange()
    pair.clock.advance(5.0)
    events = pair.exchange()
    assert [e.error_code for e in _of(events, h2.events.StreamReset, stream)] == [h2.errors.ErrorCodes.CANCEL]
    assert len(failures) == 1
    assert pair.server._streams == {}


def test_a_window_opened_in_time_keeps_the_stream() -> None:
    """A client that opens the window before client_send gets the whole response; no reset."""
    pair = Pair(client_send_timeout=5.0)
    stream = pair.get("/stream")
    pair.exchange()
    (request,) = pair.app.open
    request.write(b"x" * 70000)
    request.finish()
    pair.exchange()
    pair.clock.advance(4.0)
    pair.client.increment_flow_control_window(10000)
    pair.client.increment_flow_control_window(10000, stream_id=stream)
    events = pair.exchange()
    pair.clock.advance(5.0)
    events += pair.exchange()
    assert _of(events, h2.events.StreamEnded, stream) and not _of(events, h2.events.StreamReset, stream)


def test_a_client_goaway_lets_its_request_finish_then_closes() -> None:
    """The client's GOAWAY(NO_ERROR) with a request in flight: the answer still arrives, then the connection closes."""
    pair = Pair()
    stream = pair.get("/stream")
    pair.exchange()
    pair.client.close_connection()
    pair.server.dataReceived(pair.client.data_to_send())
    pair.clock.advance(0)
    assert not pair.transport.disconnecting
    (request,) = pair.app.open
    request.write(b"late answer")
    request.finish()
    pair.clock.advance(0)
    # h2's client takes nothing after its own GOAWAY: the frames are read raw.
    frames = _frames(pair.transport.value())
    assert [(type(f).__name__, f.stream_id) for f in frames] == [("HeadersFrame", stream), ("DataFrame", stream)]
    assert (frames[1].data, "END_STREAM" in frames[1].flags) == (b"late answer", True)
    assert pair.transport.disconnecting


def _frames(data: bytes) -> list[Any]:
    """The HTTP/2 frames in *data*, parsed by hyperframe."""
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        data = data[9 + length:]
    return frames


def test_a_push_producer_goes_on_past_the_stream_buffer_up_to_the_spill() -> None:
    """PHP's output may be held past STREAM_BUFFER up to STREAM_SPILL (its FastCGI connection freed), counted process-wide and given back when sent."""
    pair, stream, request, producer = _window_spent()
    held = pair.server.spill.held
    request.write(b"y" * (STREAM_BUFFER + 1000))
    pair.exchange()
    assert (producer.calls, pair.server.spill.held - held) == ([], 1000)
    request.write(b"z" * STREAM_SPILL)
    pair.exchange()
    assert producer.calls == ["pause"]
    pair.client.increment_flow_control_window(4 * STREAM_SPILL)
    pair.client.increment_flow_control_window(4 * STREAM_SPILL, stream_id=stream)
    events = pair.exchange()
    assert sum(len(e.data) for e in _of(events, h2.events.DataReceived, stream)) == STREAM_BUFFER + 1000 + STREAM_SPILL
    assert (producer.calls, pair.server.spill.held) == (["pause", "resume"], held)


def test_a_full_process_spill_pauses_at_the_stream_buffer() -> None:
    """With SPILL_TOTAL taken by other streams, a push producer is paused past STREAM_BUFFER as before."""
    pair, stream, request, producer = _window_spent()
    taken = pair.server.spill.limit - pair.server.spill.held
    assert pair.server.spill.take(taken)
    try:
        request.write(b"y" * (STREAM_BUFFER + 1))
        pair.exchange()
        assert producer.calls == ["pause"]
    finally:
        pair.server.spill.give(taken)


def test_a_reset_stream_gives_its_spill_back() -> None:
    """A stream reset while it holds bytes past STREAM_BUFFER gives them back to the process's count."""
    pair = Pair()
    stream = pair.get("/stream")
    pair.exchange()
    (request,) = pair.app.open
    request.register_producer(Producer(), True)
    held = pair.server.spill.held
    request.write(b"x" * (65535 + STREAM_BUFFER + 5000))
    pair.exchange()
    assert pair.server.spill.held - held == 5000
    pair.client.reset_stream(stream)
    pair.exchange()
    assert pair.server.spill.held == held


def test_the_keepalive_timeout_ends_a_connection_idle_after_its_requests() -> None:
    """With timeouts.keepalive 5, a connection whose one request was answered gets GOAWAY(NO_ERROR) 5 s later, not before."""
    pair = Pair(timeout=5)
    pair.get("/")
    pair.exchange()
    pair.clock.advance(4.9)
    assert not _of_connection(pair.exchange(), h2.events.ConnectionTerminated)
    pair.clock.advance(0.2)
    (goaway,) = _of_connection(pair.exchange(), h2.events.ConnectionTerminated)
    assert (goaway.error_code, pair.transport.disconnecting) == (h2.errors.ErrorCodes.NO_ERROR, True)


def test_a_stream_being_answered_holds_the_connection_past_the_keepalive() -> None:
    """A response taking 60 s keeps a keepalive-5 connection; 5 s after it ends, the connection goes."""
    pair = Pair(timeout=5)
    stream = pair.get("/stream")
    pair.exchange()
    (request,) = pair.app.open
    pair.clock.advance(60)
    assert not _of_connection(pair.exchange(), h2.events.ConnectionTerminated)
    request.write(b"late")
    request.finish()
    assert [e.stream_id for e in pair.exchange() if isinstance(e, h2.events.StreamEnded)] == [stream]
    pair.clock.advance(4.9)
    assert not _of_connection(pair.exchange(), h2.events.ConnectionTerminated)
    pair.clock.advance(0.2)
    assert [e.error_code for e in _of_connection(pair.exchange(), h2.events.ConnectionTerminated)] == [
        h2.errors.ErrorCodes.NO_ERROR
    ]


def _of_connection(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]
