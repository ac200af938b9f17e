"""The goridge frame, version 1: constants, the header, encoding and checking; pure, bytes in, bytes out.

RoadRunner talks to its PHP workers in goridge frames over the worker's
stdin and stdout.  The layout, byte by byte, with where each choice comes
from (``frame.md``, ``frame.go`` and ``frame_flags.go`` are
roadrunner-server/goridge ``pkg/frame/``, the Go side; ``Frame.php`` is
roadrunner-php/goridge ``src/Frame.php``, the PHP side)::

    byte 0      high nibble: version, 1          frame.md "0-th byte contains version and
                low nibble: HL, the header's     header length (HL)"; frame.go WriteVersion
                length in 32-bit words, 3 + the  shifts the version left by 4; Frame.php
                number of options (3..13)        packs ``VERSION << 4 | (count(options) + 3)``
    byte 1      flags (FrameFlags)               frame_flags.go; several may be ORed
                                                 (CONTROL | CODEC_JSON for a control frame)
    bytes 2-5   payload length, uint32,          frame.go WritePayloadLen; Frame.php pack
                little endian                    'L' (machine order: little on every PHP
                                                 host RoadRunner supports)
    bytes 6-9   CRC-32 (IEEE) of bytes 0-5 only, frame.md "CRC32 calculated only for 0-5
                little endian; the options are   (including) bytes"; frame.go WriteCRC uses
                not covered                      crc32.ChecksumIEEE(header[:6]); Frame.php
                                                 ``crc32()`` of the 6 packed bytes
    byte 10     stream bits (StreamFlags):       frame.md "(10, 11) bytes contain stream
                STREAM, STOP, PING, PONG         information"; frame_flags.go
    byte 11     unused, sent as 0                Frame.php ``byte11``, never set
    bytes 12..  options: HL - 3 uint32 words,    frame.go WriteOptions/ReadOptions: at most
                little endian, at most 10        10 (OptionsMaxSize = 40 bytes)
    then        the payload, ``length`` bytes    frame.go Bytes(): header, then payload

So the frame of payload ``b"hello"`` with the one option ``[5]`` is
``14 00 05000000 1c115b1e 00 00 05000000 68656c6c6f``: 0x1e5b111c is the
CRC-32 of ``14 00 05 00 00 00`` (PHP's ``crc32()`` gives the same); a
control frame, with no options, starts with ``13``.

The Go side checks the CRC of every frame it reads (``internal/receive.go``
ReceiveFrame); PHP's reader does not.  We check it, as Go does.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntFlag

from .._compat import SLOTS
from ._errors import ProtocolError

__all__ = [
    "VERSION_1",
    "WORD",
    "HEADER_LEN",
    "MAX_OPTIONS",
    "MAX_PAYLOAD_FIELD",
    "DEFAULT_MAX_PAYLOAD",
    "FrameFlags",
    "StreamFlags",
    "Frame",
    "FrameHeader",
    "encode_frame",
    "parse_header",
    "parse_options",
    "header_crc",
]

#: The only version: frame_flags.go ``Version1 byte = 0x01``.
VERSION_1 = 1
#: HL counts 32-bit words (frame.go ``WORD = 4``).
WORD = 4
#: The fixed header, HL = 3 (frame.go defaultHL).
HEADER_LEN = 3 * WORD
#: frame.go OptionsMaxSize = 40 bytes: ten words, so HL is at most 13.
MAX_OPTIONS = 10
#: The payload length is a uint32 (frame.md "up to 4Gb in payload").
MAX_PAYLOAD_FIELD = 0xFFFFFFFF
#: What a reader accepts by default: the wire allows 4 GiB, but a frame is
#: held whole in memory before it is used (a PHP worker builds it whole too),
#: so a worker that announces more than this is refused rather than trusted.
DEFAULT_MAX_PAYLOAD = 64 << 20


class FrameFlags(IntFlag):
    """Byte 1 of the header (frame_flags.go, Frame.php)."""

    NONE = 0
    #: A control message (the pid handshake, stop), its payload JSON.
    CONTROL = 0x01
    CODEC_RAW = 0x04
    CODEC_JSON = 0x08
    CODEC_MSGPACK = 0x10
    CODEC_GOB = 0x20
    #: The worker's job failed; the payload is its message (roadrunner-php/worker Worker::error).
    ERROR = 0x40
    CODEC_PROTO = 0x80


class StreamFlags(IntFlag):
    """Byte 10 of the header (frame_flags.go: STREAM, STOP, PING, PONG; Frame.php BYTE10_*)."""

    NONE = 0
    #: More frames of this response follow (the worker's ``eos`` is false).
    STREAM = 0x01
    #: Sent to the worker: stop the stream in progress.
    STOP = 0x02
    #: The worker asks for a PONG, every fifth frame of a stream (Worker::haveToPing).
    PING = 0x04
    #: Sent to the worker: the answer to a PING.
    PONG = 0x08


_FIXED = struct.Struct("<BBIIBB")
_CRC_INPUT = struct.Struct("<BBI")
_OPTIONS = [struct.Struct(f"<{n}I") for n in range(MAX_OPTIONS + 1)]


@dataclass(frozen=True, **SLOTS)
class Frame:
    """One frame: its flags, its options (uint32 words), its stream bits and its payload."""

    payload: bytes = b""
    flags: int = FrameFlags.NONE
    options: tuple[int, ...] = ()
    stream: int = StreamFlags.NONE


@dataclass(frozen=True, **SLOTS)
class FrameHeader:
    """The fixed 12 bytes, checked: where the payload starts and how long it is."""

    header_len: int  # 12 + 4 per option
    flags: int
    payload_len: int
    stream: int

    @property
    def option_count(self) -> int:
        return (self.header_len - HEADER_LEN) // WORD


def header_crc(first6: bytes) -> int:
    """CRC-32 (IEEE 802.3, zlib's and PHP's ``crc32()``) of the header's bytes 0-5 (frame.go WriteCRC)."""
    return zlib.crc32(first6) & 0xFFFFFFFF


def encode_frame(
    payload: bytes = b"",
    *,
    flags: int = FrameFlags.NONE,
    options: tuple[int, ...] | list[int] = (),
    stream: int = StreamFlags.NONE,
) -> bytes:
    """The bytes of one frame; ValueError for what the format cannot carry."""
    count = len(options)
    if count > MAX_OPTIONS:
        raise ValueError(f"{count} options, the header holds at most {MAX_OPTIONS}")
    length = len(payload)
    if length > MAX_PAYLOAD_FIELD:
        raise ValueError(f"payload of {length} bytes does not fit the 32-bit length")
    if not 0 <= flags <= 0xFF or not 0 <= stream <= 0xFF:
        raise ValueError("flags and stream bits are one byte each")
    first = VERSION_1 << 4 | (3 + count)
    crc = header_crc(_CRC_INPUT.pack(first, flags, length))
    try:
        words = _OPTIONS[count].pack(*options)
    except struct.error:
        raise ValueError(f"options {options!r} are not all 32-bit unsigned words") from None
    return b"".join((_FIXED.pack(first, flags, length, crc, stream, 0), words, payload))


def _show(data: bytes | bytearray) -> str:
    """The start of bytes that are not a frame, for the log: a PHP warning printed to stdout reads as text."""
    return repr(bytes(data[:64]))


def parse_header(data: bytes | bytearray, offset: int, max_payload: int) -> FrameHeader:
    """Check the 12 fixed bytes at *offset* (which must be there) and say how long the frame is.

    Raises :class:`ProtocolError` for a version other than 1, an HL outside
    3..13, a CRC that does not match, or a payload over *max_payload*.
    """
    first, flags, length, crc, stream, _unused = _FIXED.unpack_from(data, offset)
    version = first >> 4
    words = first & 0x0F
    if version != VERSION_1:
        # PHP's "Could not open input file", or an echo before the worker loop,
        # arrives here as text: show it (Go's ReceiveFrame special-cases the former).
        raise ProtocolError(
            f"frame of version {version}, expected 1: the worker wrote {_show(data[offset:])}"
        )
    if not 3 <= words <= 3 + MAX_OPTIONS:
        raise ProtocolError(f"frame header of {words} words, expected 3 to {3 + MAX_OPTIONS}")
    if header_crc(bytes(data[offset : offset + 6])) != crc:
        # internal/receive.go: "validation failed on the message sent to STDOUT".
        raise ProtocolError(f"frame header CRC mismatch: the worker wrote {_show(data[offset:])}")
    if length > max_payload:
        raise ProtocolError(f"frame payload of {length} bytes exceeds the bound of {max_payload}")
    return FrameHeader(words * WORD, flags, length, stream)


def parse_options(data: bytes | bytearray, offset: int, count: int) -> tuple[int, ...]:
    """The *count* option words at *offset*."""
    return tuple(_OPTIONS[count].unpack_from(data, offset))
