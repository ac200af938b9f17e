"""A sans-io FastCGI 1.0 codec: bytes in, events out, no sockets and no reactor.

The client end (:class:`ClientConnection`) is what fephp runs; the responder end
(:class:`ResponderConnection`) stands in for PHP in tests.
"""

from ._client import ClientConnection
from ._errors import ProtocolError
from ._events import (
    AbortRequest,
    BeginRequest,
    Data,
    EndRequest,
    Event,
    GetValues,
    GetValuesResult,
    Params,
    Stderr,
    Stdin,
    Stdout,
    UnknownType,
)
from ._reader import MAX_PARAMS_LEN, VIEW_FROM, Chunk
from ._records import (
    HEADER_LEN,
    MAX_CONTENT_LEN,
    BeginFlags,
    Header,
    ProtocolStatus,
    RecordType,
    Role,
    decode_name_values,
    encode_name_values,
    encode_record,
    encode_stream,
    padding_for,
)
from ._responder import ResponderConnection

__all__ = [
    "AbortRequest",
    "BeginFlags",
    "BeginRequest",
    "Chunk",
    "ClientConnection",
    "Data",
    "EndRequest",
    "Event",
    "GetValues",
    "GetValuesResult",
    "HEADER_LEN",
    "Header",
    "MAX_CONTENT_LEN",
    "MAX_PARAMS_LEN",
    "Params",
    "ProtocolError",
    "ProtocolStatus",
    "RecordType",
    "Role",
    "ResponderConnection",
    "Stderr",
    "Stdin",
    "Stdout",
    "UnknownType",
    "VIEW_FROM",
    "decode_name_values",
    "encode_name_values",
    "encode_record",
    "encode_stream",
    "padding_for",
]
