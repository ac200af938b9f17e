"""Events that the codec yields, one dataclass per kind of thing that happened."""

from __future__ import annotations

from dataclasses import dataclass

from .._compat import SLOTS
from ._reader import Chunk

__all__ = [
    "Event",
    "Stdout",
    "Stderr",
    "EndRequest",
    "GetValuesResult",
    "UnknownType",
    "BeginRequest",
    "Params",
    "Stdin",
    "Data",
    "AbortRequest",
    "GetValues",
]


class Event:
    """Base class of all codec events."""

    __slots__ = ()


# What a client (the web server side) receives from the application.


@dataclass(**SLOTS)
class Stdout(Event):
    """A piece of the response; a long piece is a read-only memoryview into the bytes read (see RecordReader).

    Stdout and EndRequest come with every response, so they are not frozen
    dataclasses (read-only by convention): frozen, each field is set
    through ``object.__setattr__`` in ``__init__``.
    """

    request_id: int
    data: Chunk


@dataclass(frozen=True, **SLOTS)
class Stderr(Event):
    request_id: int
    data: bytes


@dataclass(**SLOTS)
class EndRequest(Event):
    """FCGI_END_REQUEST; ``protocol_status`` is a :class:`ProtocolStatus` value (read-only by convention, see Stdout)."""

    request_id: int
    app_status: int
    protocol_status: int

    @property
    def complete(self) -> bool:
        return self.protocol_status == 0


@dataclass(frozen=True, **SLOTS)
class GetValuesResult(Event):
    values: dict[bytes, bytes]


@dataclass(frozen=True, **SLOTS)
class UnknownType(Event):
    """The application did not understand a management record we sent."""

    record_type: int


# What an application (the responder side) receives from the client.


@dataclass(frozen=True, **SLOTS)
class BeginRequest(Event):
    request_id: int
    role: int
    keep_conn: bool


@dataclass(frozen=True, **SLOTS)
class Params(Event):
    """The whole PARAMS stream of a request, decoded, once its empty record arrived."""

    request_id: int
    params: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, **SLOTS)
class Stdin(Event):
    """A piece of the request body; ``end`` is true for the closing empty record."""

    request_id: int
    data: bytes
    end: bool = False


@dataclass(frozen=True, **SLOTS)
class Data(Event):
    request_id: int
    data: bytes
    end: bool = False


@dataclass(frozen=True, **SLOTS)
class AbortRequest(Event):
    request_id: int


@dataclass(frozen=True, **SLOTS)
class GetValues(Event):
    names: tuple[bytes, ...]
