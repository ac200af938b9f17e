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
from ..http import HeadError, framing_of, transfer_codings

__all__ = ["Refusal", "framing_refusal", "transfer_codings"]


@dataclass(frozen=True, **SLOTS)
class Refusal:
    """Why a request head cannot be read on: the status to answer and the rule, for the log."""

    status: int
    reason: str


def framing_refusal(
    version: bytes, transfer_encoding: Sequence[bytes], content_length: Sequence[bytes]
) -> Optional[Refusal]:
    """None when the head frames its body in one way only, else why not.

    *transfer_encoding* and *content_length* are the raw values of every
    such header line, in order (none: no body, RFC 9112 6.3 item 7).  The
    rules are the HTTP/1.1 codec's (:func:`fephp.http.framing_of`), one copy
    for both parsers.
    """
    try:
        framing_of(version, transfer_encoding, content_length)
    except HeadError as e:
        return Refusal(e.status, e.reason)
    return None
