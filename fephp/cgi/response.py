"""Sans-io parser of the CGI response head that PHP writes to STDOUT (RFC 3875 section 6).

Bytes in, a :class:`CGIHead` out::

    parser = HeadParser()
    for chunk in stdout_chunks:
        result = parser.feed(chunk)
        if result is not None:
            head, body_start = result  # then pass later chunks straight through
            break
    else:
        parser.finish()  # raises: the stream ended inside the head

PHP (php-fpm and php-cgi alike) always ends its head with a blank line,
even when the body is empty ("X-A: b\\r\\nContent-type: text/html;
charset=UTF-8\\r\\n\\r\\n"), so a stream that ends before one was cut
short (a crashed or killed worker).  Like nginx ("upstream prematurely
closed FastCGI stdout") and Apache ("premature end of script headers"),
:meth:`HeadParser.finish` then fails with 502 rather than guess: headers
that never arrived may have been a Location, a Set-Cookie or a
Content-Security-Policy.

Headers such as Content-Length, Transfer-Encoding or Connection are passed
through as PHP sent them; the HTTP layer decides what to do with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import NoReturn

from .._compat import SLOTS

__all__ = ["CGIHead", "CGIResponseError", "HeadParser", "DEFAULT_MAX_HEAD_SIZE"]

DEFAULT_MAX_HEAD_SIZE = 64 * 1024


class CGIResponseError(Exception):
    """PHP's output is not a valid CGI response head (malformed, too large or cut short)."""

    http_status = 502


@dataclass(**SLOTS)
class CGIHead:
    """The response status and headers, in order, without the Status header; each Set-Cookie apart.

    Read-only by convention, not a frozen dataclass: one is made per PHP
    response, and a frozen one's ``__init__`` sets each field through ``object.__setattr__``.
    """

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]


# The blank line ending the head: at the very start, or after a line's "\n".
# Either line ending is accepted (php-fpm writes "\r\n", hand-written CGI
# often "\n").  "^" matches only at the real start even when searching from
# a later position.
_END = re.compile(rb"^\r?\n|\n\r?\n")

# RFC 9110 5.1 field-name = token.  This also refuses a space before the
# colon (RFC 9112 5.1: a classic smuggling vector), a line starting with
# whitespace (obs-fold, RFC 9112 5.2) and an empty name.
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# Control characters other than HTAB, LF and CR, anywhere in the head: NUL
# and friends are never valid in a field (RFC 9110 5.5) and would let a
# script's output smuggle bytes into the client's response head.
# Found by mapping each of them to 0 and every other byte to 1, then looking
# for a 0: half the instructions of a regex search on a head of tens of bytes.
_CONTROL_BYTES = frozenset((*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))
_CONTROL_MARKS = bytes(0 if c in _CONTROL_BYTES else 1 for c in range(256))

# RFC 3875 6.3.3: Status: 3-digit code, optional reason phrase.
_STATUS = re.compile(rb"([0-9]{3})(?:[ \t]+(.*))?")

_OWS = b" \t"
_TEXT_HTML = b"text/html"  # PHP's own default_mimetype
_NO_BODY_STATUSES = frozenset((204, 304))


# Standard reason phrases, looked up without an enum call per response.
_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


def _parse(head: bytes) -> CGIHead:
    """Parse the head's lines (the text before the blank line, final line ending possibly without its "\\n")."""
    if head.translate(_CONTROL_MARKS).find(0) >= 0:
        raise CGIResponseError("control character in the response head")
    status: int | None = None
    reason = b""
    has_location = has_type = False
    headers: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\n") if head else ():
        if line[-1:] == b"\r":
            line = line[:-1]
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise CGIResponseError(f"malformed header line {line[:80]!r}")
        if 13 in value:  # CR as an int: a bytes argument costs CPython's bytes.__contains__ a formatted TypeError
            raise CGIResponseError(f"bare CR in header {name[:80]!r}")
        value = value.strip(_OWS)
        lname = name.lower()
        if lname == b"status":
            if status is not None:
                raise CGIResponseError("more than one Status header")
            match = _STATUS.fullmatch(value)
            # 1xx would be taken by the client as an interim response and
            # leave it waiting; nothing outside 200-599 is a final status.
            if match is None or not 200 <= int(match[1]) <= 599:
                raise CGIResponseError(f"invalid Status {value[:80]!r}")
            status = int(match[1])
            reason = (match[2] or b"").strip(_OWS)
            continue
        if lname == b"location":
            has_location = True
        elif lname == b"content-type":
            has_type = True
        headers.append((name, value))
    if status is None:
        # RFC 3875 6.2.3/6.2.4: a Location without a Status is a redirect.
        # A local "/path" would be a CGI internal redirect (6.2.2); nginx
        # answers 302 to both, and so do we.
        status = 302 if has_location else 200
    if not reason:
        reason = _REASONS.get(status, b"")
    if not has_type and status not in _NO_BODY_STATUSES:
        # RFC 3875 6.3.1: a body needs a Content-Type, or browsers sniff
        # one.  PHP sends one unless default_mimetype is set empty; its
        # default, text/html, is what the application was written for.
        headers.append((b"Content-Type", _TEXT_HTML))
    return CGIHead(status, reason, headers)


class HeadParser:
    """Accumulates STDOUT until the blank line, then yields the head and the body bytes that followed it.

    At most ``max_head_size`` bytes (blank line included) are buffered;
    a longer head raises :class:`CGIResponseError`.
    """

    __slots__ = ("_max", "_buffer", "_done")

    def __init__(self, max_head_size: int = DEFAULT_MAX_HEAD_SIZE) -> None:
        if max_head_size < 1:
            raise ValueError("max_head_size must be positive")
        self._max = max_head_size
        self._buffer = bytearray()
        self._done = False

    def feed(self, data: bytes) -> tuple[CGIHead, bytes] | None:
        """Add *data*; None until the blank line arrived, then (head, body bytes that followed it)."""
        if self._done:
            raise RuntimeError("the head was already parsed: send body bytes straight through")
        buffer = self._buffer
        if not buffer:
            # Fast path, the usual case: the whole head in one chunk is found
            # with one regex scan and split, without copying the chunk.
            match = _END.search(data)
            if match is None:
                buffer += data
                self._check_size()
                return None
            return self._complete(data, match)
        scan_from = max(0, len(buffer) - 2)  # "\n\r\n" may straddle the chunks
        buffer += data
        match = _END.search(buffer, scan_from)
        if match is None:
            self._check_size()
            return None
        return self._complete(bytes(buffer), match)

    def finish(self) -> NoReturn:
        """The stream ended before the blank line: always a :class:`CGIResponseError` (see the module docstring)."""
        if self._done:
            raise RuntimeError("the head was already parsed")
        self._done = True
        if not self._buffer:
            raise CGIResponseError("no output from the script")
        raise CGIResponseError("output ended inside the response head")

    def _check_size(self) -> None:
        # Without a terminator yet, the head will be at least one byte longer.
        if len(self._buffer) >= self._max:
            self._fail(f"response head larger than {self._max} bytes")

    def _complete(self, data: bytes, match: re.Match[bytes]) -> tuple[CGIHead, bytes]:
        if match.end() > self._max:
            self._fail(f"response head larger than {self._max} bytes")
        self._done = True
        self._buffer = bytearray()
        return _parse(data[: match.start()]), data[match.end() :]

    def _fail(self, message: str) -> NoReturn:
        self._done = True
        self._buffer = bytearray()
        raise CGIResponseError(message)
