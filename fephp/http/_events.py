"""Events the codec yields for what a client sent: one dataclass per kind, and the NEED_DATA and PAUSED sentinels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from .._compat import SLOTS
from ._state import Framing

__all__ = ["NEED_DATA", "PAUSED", "ConnectionClosed", "Data", "EndOfMessage", "Event", "Request", "Sentinel"]


class Event:
    """Base class of the codec's events."""

    __slots__ = ()


@dataclass(**SLOTS)
class Request(Event):
    """A whole request head, read and judged (read-only by convention).

    Not a frozen dataclass, for speed: frozen, each of its eight fields is
    set through ``object.__setattr__``, which made one GET head cost 2.4 us
    where this costs 0.5 (CPython 3.11, benchmarks/http_codec.py's machine).

    ``target`` is the request target's raw bytes (origin, absolute or
    asterisk form, raw UTF-8 kept); ``headers`` the fields in order as
    (name lower-cased, value without surrounding blanks).  The framing of
    the body is judged already (RFC 9112 6): ``framing`` and, for
    Content-Length, ``content_length``.  ``keep_alive`` is what the client
    asked for (HTTP/1.1 unless ``Connection: close``, HTTP/1.0 only with
    ``Connection: keep-alive``); ``expect_continue`` is an HTTP/1.1
    ``Expect: 100-continue``.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    framing: Framing
    content_length: Optional[int]
    keep_alive: bool
    expect_continue: bool


@dataclass(**SLOTS)
class Data(Event):
    """A piece of the request body, its framing removed (read-only by convention, not frozen for speed as Request)."""

    data: bytes


@dataclass(frozen=True, **SLOTS)
class EndOfMessage(Event):
    """The request body is whole (trailer fields, if any, are dropped)."""


@dataclass(frozen=True, **SLOTS)
class ConnectionClosed(Event):
    """The client closed its side; ``complete`` is false if it did so in the middle of a request."""

    complete: bool = True


class Sentinel:
    """A named marker returned by ``next_event`` instead of an event."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: More bytes are needed before the next event.
NEED_DATA = Sentinel("NEED_DATA")
#: A request is whole and bytes of the next one wait: answer, then ``start_next_cycle()``.
PAUSED = Sentinel("PAUSED")

AnyEvent = Union[Request, Data, EndOfMessage, ConnectionClosed, Sentinel]
