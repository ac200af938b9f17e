"""A worker's end of the pipes (a minimal RoadRunner HTTP worker), from PHP's side: bytes in, events out.

fephp never runs it in production: it stands in for a PHP worker in tests
and is the reference the client end is checked against.  What it reads and
writes follows roadrunner-php/worker (``PayloadFactory::fromFrame``,
``Worker::send``, ``Worker::error``, ``Worker::stop``) and roadrunner-php/http
(``HttpWorker::createRespondPayload``).
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping, Sequence, Union

from ._errors import ProtocolError
from ._events import Event, PidRequest, Pong, Request, StopRequest, StreamStop
from ._frames import DEFAULT_MAX_PAYLOAD, FrameFlags, StreamFlags, encode_frame
from ._reader import FrameReader, NeedData

__all__ = ["WorkerConnection", "response_context"]


def response_context(
    status: int, headers: Union[Mapping[str, Sequence[str]], Iterable[tuple[str, str]]] = ()
) -> bytes:
    """``{"status":N,"headers":{...}}``: a response's context as HttpWorker encodes it."""
    if isinstance(headers, Mapping):
        grouped = {name: list(values) for name, values in headers.items()}
    else:
        grouped = {}
        for name, value in headers:
            grouped.setdefault(name, []).append(value)
    return json.dumps({"status": status, "headers": grouped}, separators=(",", ":")).encode()


class WorkerConnection:
    """The worker's end: PidRequest, Request, StopRequest, StreamStop and Pong in, frames out."""

    __slots__ = ("_reader",)

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._reader = FrameReader(max_payload)

    def receive_data(self, data: bytes) -> list[Event]:
        self._reader.receive_data(data)
        events: list[Event] = []
        while True:
            frame = self._reader.next_frame()
            if isinstance(frame, NeedData):
                return events
            # The order of PayloadFactory::fromFrame: CONTROL, then STOP, then PONG, then a payload.
            if frame.flags & FrameFlags.CONTROL:
                try:
                    command = json.loads(frame.payload)
                except ValueError:
                    raise ProtocolError("control frame that is not JSON") from None
                if not isinstance(command, dict):
                    raise ProtocolError("control frame that is not a JSON object")
                if command.get("stop"):
                    events.append(StopRequest())
                elif command.get("pid"):
                    events.append(PidRequest())
                else:
                    raise ProtocolError(f"undefined control message {frame.payload!r}")
            elif frame.stream & StreamFlags.STOP:
                events.append(StreamStop())
            elif frame.stream & StreamFlags.PONG:
                events.append(Pong())
            else:
                if len(frame.options) != 1 or frame.options[0] > len(frame.payload):
                    raise ProtocolError("request frame without its context length")
                cut = frame.options[0]
                events.append(Request(frame.payload[:cut], frame.payload[cut:]))

    def pid(self, pid: int) -> bytes:
        """The answer to the handshake: CONTROL, no options, ``{"pid":N}`` (``Worker::sendProcessId``)."""
        return encode_frame(json.dumps({"pid": pid}).encode(), flags=FrameFlags.CONTROL)

    def respond(
        self,
        body: bytes = b"",
        context: bytes = b"",
        *,
        more: bool = False,
        ping: bool = False,
        flags: int = FrameFlags.CODEC_JSON,
    ) -> bytes:
        """One response frame: *context* then *body*, STREAM set when *more* frames follow (``Worker::send``)."""
        stream = (StreamFlags.STREAM if more else 0) | (StreamFlags.PING if ping else 0)
        return encode_frame(context + body, flags=flags, options=(len(context),), stream=stream)

    def error(self, message: str) -> bytes:
        """An ERROR frame: the job failed (``Worker::error``)."""
        return encode_frame(message.encode(), flags=FrameFlags.ERROR)

    def stop(self) -> bytes:
        """The worker asks to be retired instead of answering (``Worker::stop``)."""
        return self.respond(b"", b'{"stop":true}', flags=FrameFlags.NONE)
