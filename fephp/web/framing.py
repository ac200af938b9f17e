"""How an HTTP/1.x request head frames its body, from the server's side: one verdict per head (RFC 9112 section 6).

Pure: the version and the raw Content-Length and Transfer-Encoding values
in, None (the head is framed unambiguously) or a :class:`Refusal` out.
:mod:`fephp.web.site` asks :func:`framing_refusal` about every head either
of its two parsers read, before any byte of the body is read, and answers a
refusal with its status and closes the connection: a front server and the
one behind it (or before it) that read one request two ways are the root of
request smuggling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .._compat import SLOTS

__all__ = ["Refusal", "framing_refusal", "transfer_codings"]

_OWS = b" \t"
#: Bytes no field value may hold (RFC 9110 5.5).
_NOT_IN_VALUES = b"\0\r\n"


@dataclass(frozen=True, **SLOTS)
class Refusal:
    """Why a request head cannot be read on: the status to answer and the rule, for the log."""

    status: int
    reason: str


def transfer_codings(values: Sequence[bytes]) -> list[bytes]:
    """The transfer codings of all Transfer-Encoding lines, in order, lower-cased, without parameters.

    RFC 9110 5.3: several lines are one comma-separated list; 5.6.1: empty
    elements are ignored.
    """
    found = []
    for value in values:
        for element in value.split(b","):
            coding = element.split(b";", 1)[0].strip(_OWS).lower()
            if coding:
                found.append(coding)
    return found


def framing_refusal(
    version: bytes, transfer_encoding: Sequence[bytes], content_length: Sequence[bytes]
) -> Optional[Refusal]:
    """None when the head frames its body in one way only, else why not.

    *transfer_encoding* and *content_length* are the raw values of every
    such header line, in order (none: no body, RFC 9112 6.3 item 7).
    """
    for value in (*transfer_encoding, *content_length):
        if any(byte in _NOT_IN_VALUES for byte in value):
            return Refusal(400, "NUL, CR or LF in a framing header (RFC 9110 5.5)")
    if transfer_encoding:
        if version == b"HTTP/1.0":
            # RFC 9112 6.1: the framing is faulty even with a Content-Length;
            # a 1.0 recipient would read the body by the Content-Length.
            return Refusal(400, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1)")
        if content_length:
            # RFC 9112 6.1: a server may reject it, and must close after
            # answering; nginx rejects it too.
            return Refusal(400, "both Transfer-Encoding and Content-Length (RFC 9112 6.1)")
        codings = transfer_codings(transfer_encoding)
        if not codings or codings[-1] != b"chunked":
            # RFC 9112 6.3 item 4: the length cannot be told; MUST 400 and close.
            return Refusal(400, "Transfer-Encoding whose final coding is not chunked (RFC 9112 6.3)")
        if codings.count(b"chunked") > 1:
            return Refusal(400, "chunked applied more than once (RFC 9112 6.1)")
        if len(codings) > 1:
            # RFC 9112 6.1: a coding the server does not understand: 501.
            return Refusal(501, "a transfer coding other than chunked (RFC 9112 6.1)")
        return None
    if len(content_length) > 1:
        # RFC 9110 8.6 allows merging identical values; like nginx and
        # Twisted, fephp refuses any repeat.
        return Refusal(400, "more than one Content-Length (RFC 9112 6.3)")
    if content_length and not _decimal(content_length[0].strip(_OWS)):
        # RFC 9112 6.3 item 5: an invalid Content-Length is unrecoverable.
        return Refusal(400, "a Content-Length that is not a decimal number (RFC 9112 6.3)")
    return None


def _decimal(value: bytes) -> bool:
    """1*DIGIT (RFC 9110 8.6): bytes.isdigit() knows ASCII digits only, and is false for b""."""
    return value.isdigit()
