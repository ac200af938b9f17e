"""fephp's end of a worker's pipes paired with the worker's end over a fake link (fephp.roadrunner._client, _worker).

Bytes written by one end are fed to the other, whole or split at every
offset, and the events must come out the same; every state of
ClientState is reached, and what a worker may not send breaks the
connection with a ProtocolError.
"""

from __future__ import annotations

from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fephp.roadrunner import (
    ClientConnection,
    ClientState,
    Event,
    FrameFlags,
    InformationalResponse,
    JobError,
    PidRequest,
    Ping,
    Pong,
    ProtocolError,
    Request,
    ResponseBody,
    ResponseEnd,
    ResponseHead,
    StopRequest,
    StreamFlags,
    StreamStop,
    WorkerConnection,
    WorkerReady,
    WorkerStopping,
    encode_frame,
    encode_request_context,
    response_context,
)

CONTEXT = encode_request_context(
    method="POST", uri="http://h/api", headers=[(b"content-type", b"text/plain")], remote_addr="127.0.0.1"
)
HEAD = response_context(200, {"Content-Type": ["text/plain"], "Set-Cookie": ["a=1", "b=2"]})
HEAD_EVENT = ResponseHead(200, ((b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")))


class ConnectionPair:
    """fephp's end and a worker's end with the bytes of each carried to the other."""

    def __init__(self) -> None:
        self.client = ClientConnection()
        self.worker = WorkerConnection()

    def to_worker(self, data: bytes) -> list[Event]:
        return self.worker.receive_data(data)

    def to_client(self, data: bytes) -> list[Event]:
        return self.client.receive_data(data)


def ready_pair() -> ConnectionPair:
    """A pair past the pid handshake."""
    pair = ConnectionPair()
    pair.to_worker(pair.client.start())
    pair.to_client(pair.worker.pid(4242))
    return pair


def busy_pair() -> ConnectionPair:
    """A pair whose worker has a request."""
    pair = ready_pair()
    pair.to_worker(pair.client.send_request(CONTEXT, b"hi"))
    return pair


def streaming_pair() -> ConnectionPair:
    """A pair whose worker has sent the head and first piece of a streamed response."""
    pair = busy_pair()
    pair.to_client(pair.worker.respond(b"one", HEAD, more=True))
    return pair


# -- the trip ------------------------------------------------------------------------


def test_handshake_request_and_response_survive_the_trip() -> None:
    """The pid question, the pid, a request with its body and a whole response arrive as sent."""
    pair = ConnectionPair()
    assert pair.client.state is ClientState.NEW
    assert pair.to_worker(pair.client.start()) == [PidRequest()]
    assert pair.client.state is ClientState.HANDSHAKE
    assert pair.to_client(pair.worker.pid(4242)) == [WorkerReady(4242)]
    assert pair.client.idle is True
    assert pair.to_worker(pair.client.send_request(CONTEXT, b"hello body")) == [Request(CONTEXT, b"hello body")]
    assert pair.client.state is ClientState.AWAITING_HEAD
    assert pair.client.idle is False
    assert pair.to_client(pair.worker.respond(b"hello", HEAD)) == [HEAD_EVENT, ResponseBody(b"hello"), ResponseEnd()]
    assert pair.client.idle is True


def test_request_frame_golden_bytes() -> None:
    """A request is one CODEC_JSON frame with the context's length as its one option, context then body."""
    client = ready_pair().client
    context = b'{"method":"GET"}'
    # HL 4, CODEC_JSON, 17 payload bytes, CRC-32 of 14 08 11 00 00 00 (PHP's crc32() agrees), option 16.
    header = bytes.fromhex("14 08 11000000 159a50f1 00 00 10000000")
    assert client.send_request(context, b"x") == header + context + b"x"


def test_second_request_on_the_same_worker() -> None:
    """After ResponseEnd the worker takes the next request; a body-less response has no ResponseBody."""
    pair = busy_pair()
    pair.to_client(pair.worker.respond(b"a", HEAD))
    assert pair.to_worker(pair.client.send_request(CONTEXT)) == [Request(CONTEXT, b"")]
    assert pair.to_client(pair.worker.respond(b"", response_context(204))) == [ResponseHead(204, ()), ResponseEnd()]


STREAM_FRAMES: list[tuple[Callable[[WorkerConnection], bytes], list[Event]]] = [
    (lambda w: w.respond(b"one", HEAD, more=True), [HEAD_EVENT, ResponseBody(b"one")]),
    (lambda w: w.respond(b"two", more=True, ping=True), [ResponseBody(b"two"), Ping()]),
    (lambda w: w.respond(b"three"), [ResponseBody(b"three"), ResponseEnd()]),
]
STREAM_EVENTS = [event for _, events in STREAM_FRAMES for event in events]


def stream_bytes() -> bytes:
    worker = WorkerConnection()
    return b"".join(make(worker) for make, _ in STREAM_FRAMES)


def test_every_split_point_of_a_streamed_answer() -> None:
    """A three-frame streamed response, cut in two anywhere, gives the same events in the same order."""
    data = stream_bytes()
    for cut in range(len(data) + 1):
        client = busy_pair().client
        assert client.receive_data(data[:cut]) + client.receive_data(data[cut:]) == STREAM_EVENTS, cut
        assert client.idle is True


def test_every_split_point_of_the_handshake_answer() -> None:
    """The pid answer, cut in two anywhere, gives one WorkerReady at its last byte."""
    data = WorkerConnection().pid(77)
    for cut in range(len(data) + 1):
        client = started()
        first = client.receive_data(data[:cut])
        assert first + client.receive_data(data[cut:]) == [WorkerReady(77)]
        assert first == ([WorkerReady(77)] if cut == len(data) else [])


def test_byte_by_byte_stream_events() -> None:
    """The streamed response fed one byte at a time gives the same events, each at its frame's last byte."""
    client = busy_pair().client
    got: list[Event] = []
    for byte in stream_bytes():
        got += client.receive_data(bytes([byte]))
    assert got == STREAM_EVENTS
    assert client.idle is True


# -- streams -------------------------------------------------------------------------


def test_stream_frames_that_repeat_the_head_give_it_once() -> None:
    """roadrunner-php/http 3.5 repeats the head on every stream frame: one ResponseHead, every body piece."""
    pair = busy_pair()
    events = pair.to_client(
        pair.worker.respond(b"a", HEAD, more=True)
        + pair.worker.respond(b"b", HEAD, more=True)
        + pair.worker.respond(b"", HEAD)
    )
    assert events == [HEAD_EVENT, ResponseBody(b"a"), ResponseBody(b"b"), ResponseEnd()]


def test_ping_is_answered_with_a_pong_frame() -> None:
    """A PING on a stream frame gives a Ping event; pong() is the empty PONG-bit frame the worker reads as Pong."""
    pair = streaming_pair()
    assert pair.to_client(pair.worker.respond(b"x", more=True, ping=True)) == [ResponseBody(b"x"), Ping()]
    pong = pair.client.pong()
    assert pong == encode_frame(stream=StreamFlags.PONG)
    assert pair.to_worker(pong) == [Pong()]


def test_stopping_a_stream() -> None:
    """stop_stream() sends the STOP bit; frames in flight are dropped and the worker's empty last frame ends it."""
    pair = streaming_pair()
    assert pair.client.state is ClientState.STREAMING
    stop = pair.client.stop_stream()
    assert stop == encode_frame(stream=StreamFlags.STOP)
    assert pair.to_worker(stop) == [StreamStop()]
    assert pair.client.state is ClientState.STOPPING_STREAM
    assert pair.to_client(pair.worker.respond(b"in flight", HEAD, more=True, ping=True)) == []
    assert pair.to_client(pair.worker.respond()) == [ResponseEnd(stopped=True)]
    assert pair.client.idle is True


def test_informational_head_before_the_final_one() -> None:
    """A 103 on a STREAM frame with no body is an InformationalResponse; the final head follows."""
    pair = busy_pair()
    hints = response_context(103, {"Link": ["</a.css>; rel=preload"]})
    assert pair.to_client(pair.worker.respond(b"", hints, more=True)) == [
        InformationalResponse(103, ((b"Link", b"</a.css>; rel=preload"),))
    ]
    assert pair.client.state is ClientState.AWAITING_HEAD
    assert pair.to_client(pair.worker.respond(b"ok", HEAD)) == [HEAD_EVENT, ResponseBody(b"ok"), ResponseEnd()]


# -- errors the worker reports, stops ------------------------------------------------


def test_job_error_before_the_head_keeps_the_worker() -> None:
    """An ERROR frame in answer to a request is a JobError; the worker is idle again, as RoadRunner keeps it."""
    pair = busy_pair()
    assert pair.to_client(pair.worker.error("Uncaught Exception: boom")) == [
        JobError("Uncaught Exception: boom", response_started=False)
    ]
    assert JobError.error_status_hint == 500
    assert pair.client.idle is True


def test_job_error_in_a_stream_retires_the_worker() -> None:
    """An ERROR frame after the head is a JobError with the response started, and the worker is retired."""
    pair = streaming_pair()
    assert pair.to_client(pair.worker.error("boom")) == [JobError("boom", response_started=True)]
    assert pair.client.state is ClientState.RETIRED
    with pytest.raises(ValueError):
        pair.client.send_request(CONTEXT)


def test_worker_that_asks_to_stop_instead_of_answering() -> None:
    """{"stop":true} and no body in answer to a request is WorkerStopping: the request never ran, the worker retires."""
    pair = busy_pair()
    assert pair.to_client(pair.worker.stop()) == [WorkerStopping()]
    assert pair.client.state is ClientState.RETIRED
    assert pair.client.stop() == encode_frame(b'{"stop":true}', flags=FrameFlags.CONTROL | FrameFlags.CODEC_JSON)


def test_stop_control_frame_reaches_the_worker() -> None:
    """stop() on an idle worker sends the stop control frame the worker reads as StopRequest."""
    pair = ready_pair()
    assert pair.to_worker(pair.client.stop()) == [StopRequest()]
    assert pair.client.state is ClientState.RETIRED


# -- misuse and malformed input ------------------------------------------------------


def test_methods_refused_outside_their_states() -> None:
    """A request before the handshake, two at once, stop during a request, stop_stream without a stream: ValueError."""
    client = ClientConnection()
    with pytest.raises(ValueError):
        client.send_request(CONTEXT)
    client.start()
    with pytest.raises(ValueError):
        client.start()
    busy = busy_pair().client
    with pytest.raises(ValueError):
        busy.send_request(CONTEXT)
    with pytest.raises(ValueError):
        busy.stop()
    with pytest.raises(ValueError):
        busy.stop_stream()


def test_request_over_the_frame_bound_is_refused() -> None:
    """A request whose context and body exceed max_payload is a ValueError, nothing sent."""
    client = ClientConnection(max_payload=100)
    client.start()
    client.receive_data(WorkerConnection().pid(1))
    with pytest.raises(ValueError):
        client.send_request(b"{}", b"x" * 99)
    assert client.state is ClientState.IDLE


def _control(payload: bytes, flags: int = FrameFlags.CONTROL) -> bytes:
    return encode_frame(payload, flags=flags)


def _response(payload: bytes, options: tuple[int, ...], flags: int = FrameFlags.CODEC_JSON, stream: int = 0) -> bytes:
    return encode_frame(payload, flags=flags, options=options, stream=stream)


MALFORMED_HANDSHAKES = {
    "no CONTROL flag": _control(b'{"pid":5}', FrameFlags.CODEC_JSON),
    "not JSON": _control(b"pid=5"),
    "a JSON list": _control(b"[5]"),
    "pid zero": _control(b'{"pid":0}'),
    "pid negative": _control(b'{"pid":-3}'),
    "pid true": _control(b'{"pid":true}'),
    "pid a string": _control(b'{"pid":"5"}'),
    "no pid": _control(b'{"stop":true}'),
    "an ERROR frame": _control(b"Fatal error: boot failed", FrameFlags.ERROR),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_HANDSHAKES))
def test_malformed_handshake_answers_break_the_connection(name: str) -> None:
    """Each wrong answer to the pid question raises ProtocolError and leaves the connection BROKEN."""
    client = ClientConnection()
    client.start()
    with pytest.raises(ProtocolError):
        client.receive_data(MALFORMED_HANDSHAKES[name])
    assert client.state is ClientState.BROKEN
    with pytest.raises(ProtocolError):
        client.receive_data(WorkerConnection().pid(5))


MALFORMED_RESPONSES: dict[str, bytes] = {
    "a control frame": _control(b'{"pid":5}'),
    "a protobuf context": _response(b"\x08\xc8\x01", (3,), FrameFlags.CODEC_PROTO),
    "no options": _response(HEAD, ()),
    "two options": _response(HEAD, (len(HEAD), 0)),
    "context beyond the payload": _response(HEAD, (len(HEAD) + 1,)),
    "no context": _response(b"body", (0,)),
    "context not JSON": _response(b"<h1>", (4,)),
    "context a JSON list": _response(b"[200]", (5,)),
    "status out of range": _response(b'{"status":700}', (14,)),
    "header value not a list": _response(b'{"status":200,"headers":{"X":"y"}}', (34,)),
    "informational with a body": _response(response_context(103) + b"x", (len(response_context(103)),), stream=1),
    "informational that ends the response": _response(response_context(103), (len(response_context(103)),)),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_RESPONSES))
def test_malformed_responses_break_the_connection(name: str) -> None:
    """Each malformed answer to a request raises ProtocolError (502) and leaves the connection BROKEN."""
    client = busy_pair().client
    with pytest.raises(ProtocolError) as caught:
        client.receive_data(MALFORMED_RESPONSES[name])
    assert caught.value.error_status_hint == 502
    assert client.state is ClientState.BROKEN
    assert client.idle is False


@pytest.mark.parametrize(
    "make",
    [ready_pair, lambda: ConnectionPair()],
    ids=["idle", "new"],
)
def test_frames_nobody_asked_for_break_the_connection(make: Callable[[], ConnectionPair]) -> None:
    """A frame from a worker that has no request (idle, or not yet asked its pid) is a ProtocolError."""
    pair = make()
    with pytest.raises(ProtocolError):
        pair.to_client(pair.worker.respond(b"surprise", HEAD))
    assert pair.client.state is ClientState.BROKEN


def test_stream_frame_without_options_is_malformed_too() -> None:
    """In a stream, a later frame is checked as the first: no options is a ProtocolError."""
    pair = streaming_pair()
    with pytest.raises(ProtocolError):
        pair.to_client(_response(b"x", ()))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClientConnection(), None),
        (lambda: ready_pair().client, None),
        (lambda: started(), "before answering the pid handshake"),
        (lambda: busy_pair().client, "in the middle of a request (awaiting head)"),
        (lambda: streaming_pair().client, "in the middle of a request (streaming)"),
        (lambda: half_frame(), "in the middle of a frame"),
    ],
    ids=["new", "idle", "handshake", "awaiting head", "streaming", "half a frame"],
)
def test_connection_lost(make: Callable[[], ClientConnection], message: str | None) -> None:
    """The worker's stdout closing is an error in the handshake, in a request, or inside a frame; nothing otherwise."""
    error = make().connection_lost()
    if message is None:
        assert error is None
    else:
        assert isinstance(error, ProtocolError) and message in str(error)


def started() -> ClientConnection:
    client = ClientConnection()
    client.start()
    return client


def half_frame() -> ClientConnection:
    client = ready_pair().client
    client.receive_data(b"\x13")
    return client


_payloads = st.one_of(
    st.sampled_from([b"[1]", HEAD, b'{"pid":7}', b'{"stop":true}', response_context(103), b'{"status":200}']),
    st.binary(max_size=40),
)
_frames = st.builds(
    lambda payload, flags, options, stream: encode_frame(payload, flags=flags, options=options, stream=stream),
    _payloads,
    st.sampled_from([0x01, 0, 0x08, 0x09, 0x40, 0x80, 0x04]),
    st.lists(st.integers(0, 60), max_size=2),
    st.sampled_from([0, 1, 2, 4, 5, 8]),
)
STARTS: dict[str, Callable[[], ClientConnection]] = {
    "new": ClientConnection,
    "handshake": lambda: started(),
    "idle": lambda: ready_pair().client,
    "busy": lambda: busy_pair().client,
    "streaming": lambda: streaming_pair().client,
}


@settings(max_examples=500)
@given(
    start=st.sampled_from(sorted(STARTS)),
    chunks=st.lists(st.one_of(_frames, st.binary(max_size=30)), min_size=1, max_size=4),
)
def test_anything_a_worker_writes_gives_events_or_a_protocol_error(start: str, chunks: list[bytes]) -> None:
    """Frames of any flags, options and payload, or garbage, in any state: events or ProtocolError, nothing else."""
    client = STARTS[start]()
    try:
        for chunk in chunks:
            for event in client.receive_data(chunk):
                assert isinstance(event, Event)
    except ProtocolError:
        assert client.state is ClientState.BROKEN
