"""Events that the codec yields, one frozen dataclass per kind of thing that happened, from either end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .._compat import SLOTS
from ._http import HeaderPairs

__all__ = [
    "Event",
    "WorkerReady",
    "InformationalResponse",
    "ResponseHead",
    "ResponseBody",
    "ResponseEnd",
    "JobError",
    "WorkerStopping",
    "Ping",
    "PidRequest",
    "Request",
    "StopRequest",
    "StreamStop",
    "Pong",
]


class Event:
    """Base class of all codec events."""

    __slots__ = ()


# What fephp (the client) receives from a worker.


@dataclass(frozen=True, **SLOTS)
class WorkerReady(Event):
    """The worker answered the pid handshake: it runs and reads frames."""

    pid: int


@dataclass(frozen=True, **SLOTS)
class InformationalResponse(Event):
    """A 1xx head (103 Early Hints) before the final one; its frame carried no body."""

    status: int
    headers: HeaderPairs


@dataclass(frozen=True, **SLOTS)
class ResponseHead(Event):
    """The final status and headers, from the context of the response's first frame."""

    status: int
    headers: HeaderPairs


@dataclass(frozen=True, **SLOTS)
class ResponseBody(Event):
    """A piece of the response body (never empty)."""

    data: bytes


@dataclass(frozen=True, **SLOTS)
class ResponseEnd(Event):
    """The response is whole; ``stopped`` when it ended because fephp stopped its stream."""

    stopped: bool = False


@dataclass(frozen=True, **SLOTS)
class JobError(Event):
    """The worker's job failed (an ERROR frame, roadrunner-php/worker ``Worker::error``).

    The request is over.  RoadRunner answers it with its
    ``internal_error_code``, 500 by default, and keeps the worker when no
    response had started; a failure in the middle of a stream
    (``response_started``) retires the worker.
    """

    message: str
    response_started: bool

    #: What the front answers when no response had started (RoadRunner's default ``internal_error_code``).
    error_status_hint: ClassVar[int] = 500


@dataclass(frozen=True, **SLOTS)
class WorkerStopping(Event):
    """The worker answered a request with ``{"stop":true}`` and no body: it will exit.

    The request was not run (roadrunner-server/pool ``static_pool`` sends it
    to another worker: ``goto begin``).
    """


@dataclass(frozen=True, **SLOTS)
class Ping(Event):
    """A stream frame asked for a PONG (:meth:`ClientConnection.pong`)."""


# What a worker receives from fephp.


@dataclass(frozen=True, **SLOTS)
class PidRequest(Event):
    """The control frame that asks the worker for its pid."""


@dataclass(frozen=True, **SLOTS)
class Request(Event):
    """A request: its context (JSON bytes, as sent) and its body."""

    context: bytes
    body: bytes


@dataclass(frozen=True, **SLOTS)
class StopRequest(Event):
    """The ``{"stop":true}`` control frame: the worker is to leave its loop and exit."""


@dataclass(frozen=True, **SLOTS)
class StreamStop(Event):
    """A frame with the STOP bit: the stream in progress is to end."""


@dataclass(frozen=True, **SLOTS)
class Pong(Event):
    """A frame with the PONG bit, the answer to a PING."""
