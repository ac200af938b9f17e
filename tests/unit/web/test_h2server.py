"""The HTTP/2 rules fephp adds to h2 (fephp.web.h2server), sans-io: the frame guard, and h2's connection with RFC 9113's stream errors."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.stream
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from fephp.web.h2server import (
    CONTROL_BURST,
    CONTROL_RATE,
    INSTANT_RESET_COST,
    UNANSWERED_KEPT,
    FrameGuard,
    FrameRefused,
    ServerConnection,
    StreamRejected,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _guard(**options: Any) -> FrameGuard:
    guard = FrameGuard(max_frame_size=16384, max_header_block=4096, now=0.0, **options)
    guard.feed(PREFACE, 0.0)
    return guard


def _header(length: int, kind: int, flags: int = 0, stream: int = 1) -> bytes:
    return length.to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big")


def test_a_frame_over_max_frame_size_is_refused_at_its_header() -> None:
    """A DATA frame announcing 16 MiB is a FRAME_SIZE_ERROR as soon as its 9 header bytes are in, before any payload."""
    guard = _guard()
    with pytest.raises(FrameRefused) as caught:
        guard.feed(_header(16 * 1024 * 1024 - 1, 0x0), 0.0)
    assert caught.value.code == ErrorCodes.FRAME_SIZE_ERROR


def test_a_header_split_over_reads_is_judged_whole() -> None:
    """A frame header arriving a byte at a time is judged once whole, and the payload after it is skipped."""
    guard = _guard()
    frame = DataFrame(1, b"x" * 100).serialize()
    for i in range(len(frame)):
        guard.feed(frame[i:i + 1], 0.0)
    with pytest.raises(FrameRefused):
        for byte in _header(20000, 0x0):
            guard.feed(bytes((byte,)), 0.0)


def test_a_continuation_chain_past_the_bound_is_refused_as_it_crosses() -> None:
    """HEADERS then CONTINUATION frames are refused with ENHANCE_YOUR_CALM on the frame that takes the block past max_header_block."""
    guard = _guard()
    guard.feed(HeadersFrame(1, b"a" * 1000).serialize(), 0.0)
    guard.feed(ContinuationFrame(1, b"a" * 3000).serialize(), 0.0)
    with pytest.raises(FrameRefused) as caught:
        guard.feed(ContinuationFrame(1, b"a" * 97).serialize(), 0.0)
    assert caught.value.code == ErrorCodes.ENHANCE_YOUR_CALM


def test_a_block_ended_resets_the_count() -> None:
    """A header block ended by END_HEADERS does not count towards the next one."""
    guard = _guard()
    for stream in (1, 3, 5):
        guard.feed(HeadersFrame(stream, b"a" * 3000).serialize(), 0.0)
        guard.feed(ContinuationFrame(stream, b"a" * 1000, flags=["END_HEADERS"]).serialize(), 0.0)


@pytest.mark.parametrize(
    ("frame", "name"),
    [
        (_header(6, 0x4, 0x1, 0) + b"\0" * 6, "a SETTINGS ACK with a payload"),
        (_header(5, 0x4, 0, 0) + b"\0" * 5, "SETTINGS not in 6-byte entries"),
        (_header(7, 0x6, 0, 0) + b"\0" * 7, "a PING of 7 bytes"),
        (_header(5, 0x8, 0, 0) + b"\0" * 5, "a WINDOW_UPDATE of 5 bytes"),
        (_header(3, 0x3, 0, 1) + b"\0" * 3, "a RST_STREAM of 3 bytes"),
    ],
)
def test_frames_of_fixed_size_with_another_are_frame_size_errors(frame: bytes, name: str) -> None:
    """RFC 9113 6.4, 6.5, 6.7, 6.9: a control frame of the wrong length is a FRAME_SIZE_ERROR."""
    guard = _guard()
    with pytest.raises(FrameRefused) as caught:
        guard.feed(frame, 0.0)
    assert caught.value.code == ErrorCodes.FRAME_SIZE_ERROR, name


@pytest.mark.parametrize(
    "frame",
    [
        SettingsFrame(0, {}).serialize(),
        PingFrame(0, b"12345678").serialize(),
        WindowUpdateFrame(0, 1).serialize(),
        DataFrame(1, b"").serialize(),
        _header(0, 0x9, 0, 1),  # an empty CONTINUATION
        _header(0, 0x42, 0, 0),  # an extension frame h2 ignores
    ],
)
def test_a_flood_of_frames_that_carry_nothing_is_refused(frame: bytes) -> None:
    """CONTROL_BURST frames that cost work and give nothing pass; the next is ENHANCE_YOUR_CALM, in the same read."""
    guard = _guard()
    guard.feed(frame * CONTROL_BURST, 0.0)
    with pytest.raises(FrameRefused) as caught:
        guard.feed(frame, 0.0)
    assert caught.value.code == ErrorCodes.ENHANCE_YOUR_CALM


def test_the_control_budget_refills_with_time_and_with_data_sent() -> None:
    """A spent budget refills at CONTROL_RATE per second, and by two frames for each DATA frame sent."""
    ping = PingFrame(0, b"12345678").serialize()
    guard = _guard()
    guard.feed(ping * CONTROL_BURST, 0.0)
    assert guard.tokens == 0
    guard.feed(ping * 10, 10 / CONTROL_RATE)
    assert guard.tokens == 0
    guard.credit(3)
    guard.feed(ping * 6, 10 / CONTROL_RATE)
    with pytest.raises(FrameRefused):
        guard.feed(ping, 10 / CONTROL_RATE)


def test_requests_and_their_bodies_cost_nothing() -> None:
    """HEADERS, DATA with a payload and a last empty DATA with END_STREAM never spend the budget."""
    guard = _guard()
    for stream in range(1, 4 * CONTROL_BURST, 2):
        guard.feed(HeadersFrame(stream, b"a" * 20).serialize(), 0.0)
        guard.feed(DataFrame(stream, b"body").serialize(), 0.0)
        guard.feed(DataFrame(stream, b"", flags=["END_STREAM"]).serialize(), 0.0)
    assert guard.tokens == CONTROL_BURST


# -- ServerConnection ----------------------------------------------------------------


class Link:
    """A ServerConnection (advertising 2 concurrent streams) and an h2 client, exchanging bytes by hand."""

    def __init__(self) -> None:
        self.server = ServerConnection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.server.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2}
        )
        self.server.initiate_connection()
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
                                      normalize_outbound_headers=False)
        )
        self.client.initiate_connection()
        self.exchange()

    def exchange(self, raw: bytes = b"") -> tuple[list[Any], list[Any]]:
        """Deliver both ways until quiet; returns (server events, client events)."""
        server_events: list[Any] = []
        client_events: list[Any] = []
        pending = raw
        for _ in range(10):
            out = self.client.data_to_send() + pending
            pending = b""
            if out:
                server_events += self.server.receive_data(out)
            back = self.server.data_to_send()
            if back:
                client_events += self.client.receive_data(back)
            if not out and not back:
                break
        return server_events, client_events

    def get(self, stream: int, extra: tuple[tuple[str, str], ...] = (), end: bool = True) -> None:
        headers = [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "a.test"), *extra]
        self.client.send_headers(stream, headers, end_stream=end)


def _kinds(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def test_a_stream_over_the_limit_is_refused_and_the_others_go_on() -> None:
    """The third concurrent stream of two allowed is reset REFUSED_STREAM; the first two are still open, HPACK in step."""
    link = Link()
    link.get(1, end=False)
    link.get(3, end=False)
    link.exchange()
    # The h2 client keeps to the limit: stream 5 is written by hand, with its encoder.
    block = link.client.encoder.encode(
        [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "a.test"), ("x-new", "indexed")]
    )
    server_events = link.server.receive_data(HeadersFrame(5, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    assert [(e.stream_id, e.error_code) for e in _kinds(server_events, StreamRejected)] == [(5, ErrorCodes.REFUSED_STREAM)]
    assert link.server.data_to_send() == RstStreamFrame(5, error_code=ErrorCodes.REFUSED_STREAM).serialize()
    assert sorted(link.server.streams) == [1, 3, 5] and link.server.open_inbound_streams == 2
    for stream in (1, 3):
        link.client.end_stream(stream)
        link.exchange()
        link.server.send_headers(stream, [(b":status", b"204")], end_stream=True)
    link.exchange()
    link.client.highest_outbound_stream_id = 5
    link.get(7, (("x-new", "indexed"),))  # the encoder refers to the table entry stream 5 added
    server_events, _ = link.exchange()
    (request,) = _kinds(server_events, h2.events.RequestReceived)
    assert (request.stream_id, dict(request.headers)[b"x-new"]) == (7, b"indexed")


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ((("X-Upper", "1"),), "an upper-case name"),
        ((("connection", "close"),), "a connection-specific header"),
        ((("te", "gzip"),), "TE other than trailers"),
    ],
)
def test_a_malformed_request_resets_its_stream_only(extra: tuple[tuple[str, str], ...], name: str) -> None:
    """RFC 9113 8.1.1: a malformed request is a stream error PROTOCOL_ERROR; the next request on the connection is received."""
    link = Link()
    link.get(1, extra)
    server_events, client_events = link.exchange()
    assert [(e.stream_id, e.error_code) for e in _kinds(client_events, h2.events.StreamReset)] == [(1, ErrorCodes.PROTOCOL_ERROR)], name
    assert not _kinds(server_events, h2.events.RequestReceived)
    link.get(3)
    server_events, _ = link.exchange()
    assert [e.stream_id for e in _kinds(server_events, h2.events.RequestReceived)] == [3]


def test_an_undecodable_header_block_is_a_compression_error() -> None:
    """A header block whose index points past HPACK's tables ends the connection with COMPRESSION_ERROR (RFC 9113 4.3)."""
    link = Link()
    block = b"\xff\xff\x7f"  # an indexed field of index 16510 + 127
    with pytest.raises(h2.exceptions.ProtocolError):
        link.server.receive_data(HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    events = link.client.receive_data(link.server.data_to_send())
    assert [e.error_code for e in _kinds(events, h2.events.ConnectionTerminated)] == [ErrorCodes.COMPRESSION_ERROR]


def test_a_client_goaway_no_error_lets_open_streams_be_answered() -> None:
    """After the client's GOAWAY(NO_ERROR) its open stream is still answered, and a new stream is refused."""
    link = Link()
    link.get(1)
    link.exchange()
    server_events, _ = link.exchange(GoAwayFrame(0, last_stream_id=0).serialize())
    assert [e.error_code for e in _kinds(server_events, h2.events.ConnectionTerminated)] == [ErrorCodes.NO_ERROR]
    link.server.send_headers(1, [(b":status", b"200")])
    link.server.send_data(1, b"late", end_stream=True)
    client_events = link.client.receive_data(link.server.data_to_send())
    assert b"".join(e.data for e in _kinds(client_events, h2.events.DataReceived)) == b"late"
    assert link.server.refusing


def test_a_client_goaway_with_an_error_ends_h2s_side() -> None:
    """A GOAWAY with an error code is h2's as before: the connection is closed for sending."""
    link = Link()
    link.get(1)
    link.exchange()
    link.exchange(GoAwayFrame(0, last_stream_id=0, error_code=ErrorCodes.INTERNAL_ERROR).serialize())
    with pytest.raises(h2.exceptions.ProtocolError):
        link.server.send_headers(1, [(b":status", b"200")])


def test_streams_reset_in_the_read_that_opened_them_spend_ten_each() -> None:
    """RST_STREAM for a stream whose HEADERS are in the same read (Rapid Reset) costs INSTANT_RESET_COST; past the budget the read is refused whole."""
    guard = _guard()
    pairs = CONTROL_BURST // INSTANT_RESET_COST
    read = b"".join(
        HeadersFrame(stream, b"a" * 20, flags=["END_HEADERS", "END_STREAM"]).serialize() + RstStreamFrame(stream, 8).serialize()
        for stream in range(1, 2 * pairs + 1, 2)
    )
    guard.feed(read, 0.0)
    assert guard.tokens == 0
    guard = _guard()
    with pytest.raises(FrameRefused) as caught:
        guard.feed(read + HeadersFrame(2 * pairs + 1, b"a").serialize() + RstStreamFrame(2 * pairs + 1, 8).serialize(), 0.0)
    assert (caught.value.code, caught.value.reason) == (ErrorCodes.ENHANCE_YOUR_CALM, "streams reset before their answer")


def test_a_reset_of_an_unanswered_stream_in_a_later_read_costs_ten() -> None:
    """A Rapid Reset whose RST_STREAM comes in the read after its HEADERS (its writes split by the network) costs INSTANT_RESET_COST all the same, and only once per stream."""
    guard = _guard()
    guard.feed(HeadersFrame(1, b"a" * 20, flags=["END_HEADERS", "END_STREAM"]).serialize(), 0.0)
    guard.feed(RstStreamFrame(1, 8).serialize(), 0.0)
    guard.feed(RstStreamFrame(1, 8).serialize(), 0.0)
    assert guard.tokens == CONTROL_BURST - INSTANT_RESET_COST - 1


def test_a_reset_of_an_answered_stream_costs_one() -> None:
    """A RST_STREAM for a stream whose answer has started costs one control frame, as any reset."""
    guard = _guard()
    guard.feed(HeadersFrame(1, b"a" * 20, flags=["END_HEADERS", "END_STREAM"]).serialize(), 0.0)
    guard.answered(1)
    guard.feed(RstStreamFrame(1, 8).serialize(), 0.0)
    assert guard.tokens == CONTROL_BURST - 1


def test_the_unanswered_streams_remembered_are_bounded() -> None:
    """Past UNANSWERED_KEPT streams opened and never answered (refused ones, say), the oldest is forgotten: its reset costs one."""
    guard = _guard()
    streams = range(1, 2 * (UNANSWERED_KEPT + 1), 2)
    guard.feed(b"".join(HeadersFrame(s, b"a", flags=["END_HEADERS", "END_STREAM"]).serialize() for s in streams), 0.0)
    guard.feed(RstStreamFrame(1, 8).serialize(), 0.0)
    guard.feed(RstStreamFrame(3, 8).serialize(), 0.0)
    assert guard.tokens == CONTROL_BURST - 1 - INSTANT_RESET_COST


def test_a_response_sent_as_bytes_is_what_h2_would_have_sent() -> None:
    """send_response_headers and send_body put out HEADERS and DATA with END_STREAM, spend both windows and close the stream."""
    link = Link()
    link.get(1)
    link.exchange()
    before = link.server.local_flow_control_window(1)
    link.server.send_response_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")], False)
    link.server.send_body(1, b"hello", True)
    assert link.server.outbound_flow_control_window == 65535 - 5 and before == 65535
    _, client_events = link.exchange()
    (response,) = _kinds(client_events, h2.events.ResponseReceived)
    assert response.headers == [(":status", "200"), ("content-type", "text/plain")]
    assert [e.data for e in _kinds(client_events, h2.events.DataReceived)] == [b"hello"]
    assert [e.stream_id for e in _kinds(client_events, h2.events.StreamEnded)] == [1]
    assert link.server.open_inbound_streams == 0
    with pytest.raises(h2.exceptions.StreamClosedError):
        link.server.send_body(1, b"more", True)


def test_a_header_block_over_the_frame_size_goes_on_in_continuations() -> None:
    """A 40000-byte header value leaves as HEADERS (END_STREAM) and CONTINUATION frames the client joins into one response."""
    link = Link()
    link.get(1)
    link.exchange()
    link.server.send_response_headers(1, [(b":status", b"204"), (b"x-big", b"v" * 40000)], True)
    wire = link.server.data_to_send()
    kinds = []
    at = 0
    while at < len(wire):
        length = int.from_bytes(wire[at:at + 3], "big")
        kinds.append((wire[at + 3], wire[at + 4]))
        at += 9 + length
    assert kinds == [(1, 0x1), (9, 0), (9, 0x4)]  # HEADERS with END_STREAM, CONTINUATION, the last with END_HEADERS
    client_events = link.client.receive_data(wire)
    (response,) = _kinds(client_events, h2.events.ResponseReceived)
    assert dict(response.headers)["x-big"] == "v" * 40000 and _kinds(client_events, h2.events.StreamEnded)


def test_a_header_list_validated_once_is_not_validated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same request header list on a second stream skips h2's validation and is received the same."""
    calls: list[int] = []
    real = h2.stream.validate_headers

    def counted(headers: Any, flags: Any) -> Any:
        calls.append(1)
        return real(headers, flags)

    monkeypatch.setattr(h2.stream, "validate_headers", counted)
    link = Link()
    link.get(1)
    first, _ = link.exchange()
    link.get(3)
    second, _ = link.exchange()
    heads = [e.headers for e in _kinds(first + second, h2.events.RequestReceived)]
    assert heads == [[(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"a.test")]] * 2
    assert calls == [1]


def test_frames_written_as_bytes_keep_their_place_among_h2s() -> None:
    """A PING queued by h2, then a response written here, then h2's RST_STREAM leave in that order."""
    link = Link()
    link.get(1)
    link.get(3, end=False)
    link.exchange()
    link.server.ping(b"12345678")
    link.server.send_response_headers(1, [(b":status", b"204")], True)
    link.server.reset_stream(3)
    wire = link.server.data_to_send()
    kinds = []
    at = 0
    while at < len(wire):
        kinds.append(wire[at + 3])
        at += 9 + int.from_bytes(wire[at:at + 3], "big")
    assert kinds == [6, 1, 3]  # PING, HEADERS, RST_STREAM
    assert link.server.data_to_send() == b""
