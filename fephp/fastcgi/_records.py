"""FastCGI 1.0 wire format: constants, the record header, name-value pairs, stream splitting.

Everything here is pure: bytes in, bytes out.  Section numbers refer to the
FastCGI Specification, 29 April 1996 (Open Market).
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import Iterable, Mapping

from ._errors import ProtocolError

__all__ = [
    "VERSION_1",
    "HEADER_LEN",
    "MAX_CONTENT_LEN",
    "NULL_REQUEST_ID",
    "RecordType",
    "Role",
    "BeginFlags",
    "ProtocolStatus",
    "Header",
    "padding_for",
    "encode_record",
    "encode_stream",
    "encode_name_values",
    "decode_name_values",
    "encode_begin_request",
    "encode_request_head",
    "encode_end_request",
]

VERSION_1 = 1
HEADER_LEN = 8
#: contentLength is a 16-bit field (section 3.3).
MAX_CONTENT_LEN = 0xFFFF
#: Management records carry request id 0 (section 3.3).
NULL_REQUEST_ID = 0
#: A name or value length that does not fit in 7 bits is sent in 4 bytes with the
#: high bit set, so the largest encodable length is 2**31 - 1 (section 3.4).
MAX_NAME_VALUE_LEN = 0x7FFFFFFF


class RecordType(IntEnum):
    """Record types, section 8."""

    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7
    DATA = 8
    GET_VALUES = 9
    GET_VALUES_RESULT = 10
    UNKNOWN_TYPE = 11


class Role(IntEnum):
    """Roles for FCGI_BeginRequestBody, section 5.1."""

    RESPONDER = 1
    AUTHORIZER = 2
    FILTER = 3


class BeginFlags(IntFlag):
    """Flags for FCGI_BeginRequestBody, section 5.1."""

    NONE = 0
    KEEP_CONN = 1


class ProtocolStatus(IntEnum):
    """protocolStatus of FCGI_EndRequestBody, section 5.5."""

    REQUEST_COMPLETE = 0
    CANT_MPX_CONN = 1
    OVERLOADED = 2
    UNKNOWN_ROLE = 3


_HEADER = struct.Struct("!BBHHBx")
_BEGIN_BODY = struct.Struct("!HB5x")
_END_BODY = struct.Struct("!IB3x")
_UNKNOWN_TYPE_BODY = struct.Struct("!B7x")
_LEN4 = struct.Struct("!I")
#: A record header, a BEGIN_REQUEST body and another record header, back to back.
_BEGIN_AND_PARAMS = struct.Struct("!BBHHBx" "HB5x" "BBHHBx")


class Header:
    """The 8 header bytes of a record (section 3.3), reserved byte dropped."""

    __slots__ = ("version", "type", "request_id", "content_length", "padding_length")

    def __init__(
        self, version: int, type: int, request_id: int, content_length: int, padding_length: int
    ) -> None:
        self.version = version
        self.type = type
        self.request_id = request_id
        self.content_length = content_length
        self.padding_length = padding_length

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> "Header":
        return cls(*_HEADER.unpack_from(data, offset))

    def pack(self) -> bytes:
        return _HEADER.pack(
            self.version, self.type, self.request_id, self.content_length, self.padding_length
        )

    def __repr__(self) -> str:
        return (
            f"Header(version={self.version}, type={self.type}, request_id={self.request_id}, "
            f"content_length={self.content_length}, padding_length={self.padding_length})"
        )


def padding_for(length: int) -> int:
    """Padding that brings *length* to a multiple of 8, as section 3.3 recommends."""
    return -length & 7


_PADS = [b"\0" * n for n in range(8)]
_BEGIN_REQUEST = int(RecordType.BEGIN_REQUEST)
_PARAMS = int(RecordType.PARAMS)


def encode_record(type: int, request_id: int, content: bytes = b"") -> bytes:
    """One record; *content* must be at most MAX_CONTENT_LEN bytes."""
    length = len(content)
    if length > MAX_CONTENT_LEN:
        raise ValueError(f"record content of {length} bytes exceeds {MAX_CONTENT_LEN}")
    pad = -length & 7
    return _HEADER.pack(VERSION_1, type, request_id, length, pad) + content + _PADS[pad]


def encode_stream(type: int, request_id: int, data: bytes, *, close: bool = False) -> bytes:
    """*data* as stream records of at most MAX_CONTENT_LEN bytes each.

    A stream ends with an empty record of its type (section 3.3); pass
    ``close=True`` to append it.  Empty *data* without *close* gives no bytes,
    since an empty record would end the stream early.
    """
    parts = []
    view = memoryview(data)
    for start in range(0, len(view), MAX_CONTENT_LEN):
        parts.append(encode_record(type, request_id, bytes(view[start : start + MAX_CONTENT_LEN])))
    if close:
        parts.append(encode_record(type, request_id))
    return b"".join(parts)


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n > MAX_NAME_VALUE_LEN:
        raise ValueError(f"name or value of {n} bytes exceeds {MAX_NAME_VALUE_LEN}")
    return _LEN4.pack(n | 0x80000000)


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def encode_name_values(pairs: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> bytes:
    """Name-value pairs (section 3.4): each length in 1 byte below 128, else 4 bytes."""
    # A list (the CGI environment) skips the isinstance: against typing's
    # Mapping it is a __subclasscheck__ call of its own.
    items = pairs if type(pairs) is list else pairs.items() if isinstance(pairs, Mapping) else pairs
    parts: list[bytes] = []
    extend = parts.extend
    one = _ONE_BYTE
    # Runs for every request: short lengths come from a table, no call, no allocation.
    for name, value in items:
        n = len(name)
        v = len(value)
        if n < 0x80 and v < 0x80:
            extend((one[n], one[v], name, value))
        else:
            extend((_encode_length(n), _encode_length(v), name, value))
    return b"".join(parts)


def _decode_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise ProtocolError("name-value pair cut short")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    if pos + 4 > len(data):
        raise ProtocolError("name-value pair cut short")
    return _LEN4.unpack_from(data, pos)[0] & 0x7FFFFFFF, pos + 4


def decode_name_values(data: bytes) -> list[tuple[bytes, bytes]]:
    """Parse a complete name-value pair block; a truncated block is a ProtocolError."""
    pairs = []
    pos = 0
    end = len(data)
    while pos < end:
        name_len, pos = _decode_length(data, pos)
        value_len, pos = _decode_length(data, pos)
        if pos + name_len + value_len > end:
            raise ProtocolError("name-value pair longer than its record")
        name = data[pos : pos + name_len]
        pos += name_len
        pairs.append((name, data[pos : pos + value_len]))
        pos += value_len
    return pairs


def encode_begin_request(request_id: int, role: int = Role.RESPONDER, flags: int = 0) -> bytes:
    return encode_record(RecordType.BEGIN_REQUEST, request_id, _BEGIN_BODY.pack(role, flags))


def encode_request_head(
    request_id: int, role: int, flags: int, params: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]
) -> bytes:
    """BEGIN_REQUEST and the whole PARAMS stream of *params*, closed: what every request starts with.

    The same bytes as ``encode_begin_request`` + ``encode_stream(PARAMS,
    ..., close=True)``; an environment that fits one record (all but
    huge ones) is framed in one join, without the stream's slicing.
    """
    content = encode_name_values(params)
    length = len(content)
    # No pairs: the stream is its closing record alone (an empty record is the end).
    if length > MAX_CONTENT_LEN or not length:
        return encode_begin_request(request_id, role, flags) + encode_stream(
            RecordType.PARAMS, request_id, content, close=True
        )
    pad = -length & 7
    return b"".join((
        # BEGIN_REQUEST's header and body and the PARAMS record's header, in one pack.
        _BEGIN_AND_PARAMS.pack(
            VERSION_1, _BEGIN_REQUEST, request_id, _BEGIN_BODY.size, 0,
            role, flags,
            VERSION_1, _PARAMS, request_id, length, pad,
        ),
        content,
        _PADS[pad],
        _HEADER.pack(VERSION_1, _PARAMS, request_id, 0, 0),  # the empty record that ends the stream
    ))


def decode_begin_request(content: bytes) -> tuple[int, int]:
    if len(content) != _BEGIN_BODY.size:
        raise ProtocolError(f"BEGIN_REQUEST body of {len(content)} bytes, expected 8")
    role, flags = _BEGIN_BODY.unpack(content)
    return role, flags


def encode_end_request(request_id: int, app_status: int, protocol_status: int) -> bytes:
    return encode_record(
        RecordType.END_REQUEST, request_id, _END_BODY.pack(app_status & 0xFFFFFFFF, protocol_status)
    )


def decode_end_request(content: bytes) -> tuple[int, int]:
    if len(content) != _END_BODY.size:
        raise ProtocolError(f"END_REQUEST body of {len(content)} bytes, expected 8")
    app_status, protocol_status = _END_BODY.unpack(content)
    return app_status, protocol_status


def encode_unknown_type(type: int) -> bytes:
    return encode_record(RecordType.UNKNOWN_TYPE, NULL_REQUEST_ID, _UNKNOWN_TYPE_BODY.pack(type))


def decode_unknown_type(content: bytes) -> int:
    if len(content) != _UNKNOWN_TYPE_BODY.size:
        raise ProtocolError(f"UNKNOWN_TYPE body of {len(content)} bytes, expected 8")
    return int(_UNKNOWN_TYPE_BODY.unpack(content)[0])
