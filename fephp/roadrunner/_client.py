"""fephp's end of the pipes to one RoadRunner-protocol PHP worker, as a state machine: bytes in, events out.

What RoadRunner's Go side does for one worker (roadrunner-server/pool
``internal/protocol.go`` and ``worker/worker.go``, roadrunner-server/http
``handler/``), without the I/O: the glue writes what the methods return to
the worker's stdin and feeds what it reads from the worker's stdout to
:meth:`ClientConnection.receive_data`.
"""

from __future__ import annotations

import json
from enum import Enum

from ._errors import ProtocolError
from ._events import (
    Event,
    InformationalResponse,
    JobError,
    Ping,
    ResponseBody,
    ResponseEnd,
    ResponseHead,
    WorkerReady,
    WorkerStopping,
)
from ._frames import DEFAULT_MAX_PAYLOAD, Frame, FrameFlags, StreamFlags, encode_frame
from ._http import parse_response_context
from ._reader import FrameReader, NeedData

__all__ = [
    "ClientState",
    "ClientConnection",
    "PID_REQUEST",
    "STOP_REQUEST",
    "encode_control",
]

#: The pid handshake's question.  roadrunner-server/pool sends its own pid
#: (``{"pid":1234}``); the worker only checks that ``pid`` is not empty
#: (roadrunner-php/worker ``PayloadFactory::makeControl``), and a sans-io
#: codec has no pid of its own, so it asks with ``true``.
PID_REQUEST = b'{"pid":true}'
#: The control message that ends a worker's loop (``internal.StopCommand``).
STOP_REQUEST = b'{"stop":true}'
#: A worker that answers a request with this context and no body asks to be
#: retired (roadrunner-server/pool ``static_pool`` ``StopRequest``).
_WORKER_STOP = STOP_REQUEST

_CONTROL = FrameFlags.CONTROL
_ERROR = FrameFlags.ERROR
_PROTO = FrameFlags.CODEC_PROTO
_STREAM = StreamFlags.STREAM
_PING = StreamFlags.PING


def encode_control(message: bytes) -> bytes:
    """A control frame: CONTROL | CODEC_JSON, no options, *message* as the payload (``SendControl``)."""
    return encode_frame(message, flags=FrameFlags.CONTROL | FrameFlags.CODEC_JSON)


class ClientState(Enum):
    """Where one worker is; the one field the state machine keeps its state in."""

    #: Spawned, nothing sent yet.
    NEW = "new"
    #: The pid question sent, its answer awaited.
    HANDSHAKE = "handshake"
    #: Ready for a request.
    IDLE = "idle"
    #: A request sent, its final head not read yet.
    AWAITING_HEAD = "awaiting head"
    #: The head came on a STREAM frame: more frames of the response follow.
    STREAMING = "streaming"
    #: The STOP bit sent; frames are dropped until one without STREAM.
    STOPPING_STREAM = "stopping stream"
    #: Not to be given another request: it asked to stop, its stream failed, or it was told to stop.
    RETIRED = "retired"
    #: The worker broke the protocol.
    BROKEN = "broken"


_IN_REQUEST = (ClientState.AWAITING_HEAD, ClientState.STREAMING, ClientState.STOPPING_STREAM)


class ClientConnection:
    """fephp's end of one worker's pipes: one request at a time.

    :meth:`start` asks for the pid (:class:`WorkerReady` answers),
    :meth:`send_request` sends a request, and :meth:`receive_data` turns the
    worker's bytes into :class:`ResponseHead`, :class:`ResponseBody` and
    :class:`ResponseEnd` events (or :class:`JobError`,
    :class:`WorkerStopping`).  Every method that produces output returns the
    bytes to write; nothing here does I/O.  Anything the worker may not
    send raises :class:`ProtocolError` and leaves the connection BROKEN.

    The states (:class:`ClientState`) and what moves between them::

        NEW --start()--> HANDSHAKE --WorkerReady--> IDLE --send_request()--> AWAITING_HEAD
        AWAITING_HEAD --InformationalResponse--> AWAITING_HEAD
        AWAITING_HEAD --ResponseHead, ResponseEnd--> IDLE
        AWAITING_HEAD --ResponseHead on a STREAM frame--> STREAMING --ResponseEnd--> IDLE
        STREAMING --stop_stream()--> STOPPING_STREAM --ResponseEnd(stopped=True)--> IDLE
        AWAITING_HEAD --JobError--> IDLE;  STREAMING, STOPPING_STREAM --JobError--> RETIRED
        AWAITING_HEAD --WorkerStopping--> RETIRED;  NEW, HANDSHAKE, IDLE --stop()--> RETIRED
        any --ProtocolError--> BROKEN
    """

    __slots__ = ("_reader", "_state")

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._reader = FrameReader(max_payload)
        self._state = ClientState.NEW

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def idle(self) -> bool:
        """Ready for a request, nothing half-read: safe to hand the worker the next one."""
        return self._state is ClientState.IDLE and self._reader.pending == 0

    def _expect(self, *states: ClientState) -> None:
        if self._state not in states:
            raise ValueError(f"not allowed in state {self._state.value}")

    def start(self) -> bytes:
        """The pid handshake's question, the first thing a worker is sent (``internal.Pid``)."""
        self._expect(ClientState.NEW)
        self._state = ClientState.HANDSHAKE
        return encode_control(PID_REQUEST)

    def send_request(self, context: bytes, body: bytes = b"") -> bytes:
        """One request: *context* (see :func:`encode_request_context`) then *body*, in one frame.

        The frame's one option is the context's length, which is where the
        worker cuts the payload (``worker.go`` sendFrame).
        """
        self._expect(ClientState.IDLE)
        if len(context) + len(body) > self._reader.max_payload:
            raise ValueError(f"request of {len(context) + len(body)} bytes exceeds the frame bound")
        self._state = ClientState.AWAITING_HEAD
        return encode_frame(context + body, flags=FrameFlags.CODEC_JSON, options=(len(context),))

    def stop_stream(self) -> bytes:
        """A frame with the STOP bit: the worker is to end the stream in progress (``StreamCancel``)."""
        self._expect(ClientState.STREAMING)
        self._state = ClientState.STOPPING_STREAM
        return encode_frame(stream=StreamFlags.STOP)

    def pong(self) -> bytes:
        """The answer to a :class:`Ping` (``sendPONG``)."""
        return encode_frame(stream=StreamFlags.PONG)

    def stop(self) -> bytes:
        """The stop control frame; the worker leaves its loop and exits (``Process.Stop``).

        Not during a request: a worker busy with one is killed instead.
        """
        self._expect(ClientState.NEW, ClientState.HANDSHAKE, ClientState.IDLE, ClientState.RETIRED)
        self._state = ClientState.RETIRED
        return encode_control(STOP_REQUEST)

    def receive_data(self, data: bytes) -> list[Event]:
        """Parse *data* and return the events it completes, in order."""
        events: list[Event] = []
        try:
            self._reader.receive_data(data)
            while True:
                frame = self._reader.next_frame()
                if isinstance(frame, NeedData):
                    return events
                self._frame(frame, events)
        except ProtocolError:
            self._state = ClientState.BROKEN
            self._reader.closed = True
            raise

    def _frame(self, frame: Frame, events: list[Event]) -> None:
        state = self._state
        if state is ClientState.HANDSHAKE:
            events.append(WorkerReady(_pid_of(frame)))
            self._state = ClientState.IDLE
            return
        if state not in _IN_REQUEST:
            raise ProtocolError(f"frame from a worker in state {state.value}, which was asked nothing")
        if frame.flags & _ERROR:
            # roadrunner-php/worker Worker::error: the message as the payload, no options.
            started = state is not ClientState.AWAITING_HEAD
            events.append(JobError(frame.payload.decode("utf-8", "replace"), started))
            self._state = ClientState.RETIRED if started else ClientState.IDLE
            return
        context, body = _split(frame)
        more = frame.stream & _STREAM
        if state is ClientState.STOPPING_STREAM:
            # The rest of the stream is dropped; the frame without STREAM is the
            # worker's acknowledgement (HttpWorker answers the STOP with Payload('')).
            if not more:
                events.append(ResponseEnd(stopped=True))
                self._state = ClientState.IDLE
            return
        if state is ClientState.AWAITING_HEAD:
            if not body and context == _WORKER_STOP:
                events.append(WorkerStopping())
                self._state = ClientState.RETIRED
                return
            if not context:
                raise ProtocolError("first response frame without a context (status and headers)")
            status, headers = parse_response_context(context)
            if status < 200:
                if body:
                    raise ProtocolError(f"informational response {status} with a body")
                if not more:
                    raise ProtocolError(f"informational response {status} ended the response")
                events.append(InformationalResponse(status, headers))
                return
            events.append(ResponseHead(status, headers))
        # In a stream, later frames repeat the head (roadrunner-php/http 3.5+)
        # or carry none (older releases): it was read once, it is not read again.
        if body:
            events.append(ResponseBody(body))
        if more:
            self._state = ClientState.STREAMING
            if frame.stream & _PING:
                events.append(Ping())
        else:
            events.append(ResponseEnd())
            self._state = ClientState.IDLE

    def connection_lost(self) -> ProtocolError | None:
        """The worker's stdout closed: the error to report, if anything was cut short."""
        state = self._state
        if state is ClientState.HANDSHAKE:
            return ProtocolError("worker exited before answering the pid handshake")
        if state in _IN_REQUEST:
            return ProtocolError(f"worker exited in the middle of a request ({state.value})")
        if self._reader.pending:
            return ProtocolError("worker exited in the middle of a frame")
        return None


def _split(frame: Frame) -> tuple[bytes, bytes]:
    """(context, body) of a response frame, checked as worker.go receiveFrame checks them."""
    if frame.flags & _CONTROL:
        raise ProtocolError("control frame in answer to a request")
    if frame.flags & _PROTO:
        raise ProtocolError("protobuf response context; fephp sends and reads JSON")
    if len(frame.options) != 1:
        raise ProtocolError(f"response frame with {len(frame.options)} options, expected 1 (the context length)")
    cut = frame.options[0]
    payload = frame.payload
    if cut > len(payload):
        raise ProtocolError(f"context length {cut} beyond a payload of {len(payload)} bytes")
    if cut == 0:
        return b"", payload
    return payload[:cut], payload[cut:]


def _pid_of(frame: Frame) -> int:
    """The pid in the worker's answer to the handshake (``internal.Pid``: CONTROL flag, pid > 0)."""
    if frame.flags & _ERROR:
        raise ProtocolError(f"worker failed at the pid handshake: {frame.payload[:200]!r}")
    if not frame.flags & _CONTROL:
        raise ProtocolError("answer to the pid handshake without the CONTROL flag")
    try:
        message = json.loads(frame.payload)
    except (ValueError, RecursionError):
        raise ProtocolError(f"answer to the pid handshake is not JSON: {frame.payload[:200]!r}") from None
    pid = message.get("pid") if isinstance(message, dict) else None
    if type(pid) is not int or pid <= 0:  # noqa: E721 - true is an int in Python, not a pid
        raise ProtocolError(f"answer to the pid handshake has no positive pid: {frame.payload[:200]!r}")
    return pid
