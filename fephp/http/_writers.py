"""Writing a response: the head in one join, a body's chunk framing, the fixed 1xx and last-chunk bytes."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Sequence

__all__ = ["CONTINUE", "LAST_CHUNK", "chunk", "chunk_pieces", "reason_phrase", "response_head"]

#: RFC 9110 15.2.1, sent while a client waits for it (Expect: 100-continue).
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: The last chunk and the empty trailer section (RFC 9112 7.1).
LAST_CHUNK = b"0\r\n\r\n"

_phrases: dict[int, bytes] = {}


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of *status* (RFC 9110 15), b"Unknown Status" for a code it does not name."""
    phrase = _phrases.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            phrase = b"Unknown Status"
        if len(_phrases) < 1000:
            _phrases[status] = phrase
    return phrase


def response_head(
    version: bytes,
    status: int,
    reason: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    extra: Sequence[tuple[bytes, bytes]],
) -> bytes:
    """The status line and the fields of *headers* then *extra*, each line ending in CRLF, and the blank line."""
    lines = [b"%s %d %s\r\n" % (version, status, reason)]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    for name, value in extra:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    """*data* (not empty) as one chunk (RFC 9112 7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunk_pieces(pieces: list[Any], size: int) -> list[Any]:
    """*pieces* (bytes or memoryviews, *size* bytes in all, not 0) as one chunk, unjoined: for one gathered send."""
    return [b"%x\r\n" % size, *pieces, b"\r\n"]
