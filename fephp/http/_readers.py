"""Reading a request head in one pass, and judging one that is refused, line by line, for its exact status.

:func:`read_head` takes the bytes of a whole head (without its final blank
line) and gives a :class:`Request` or raises :class:`HeadError`.  The common
case goes through once: one split on CRLF, a few whole-head checks in C
(length, NUL, bare CR or LF), the request line, and one loop over the
header lines whose names are lower-cased once per spelling (a bounded
cache).  Anything it does not accept is handed to :func:`judge_lines`,
which walks the lines in order and raises the refusal of the first fault,
so that a head gives the same status whether it came whole or a byte at a
time (a head still arriving is judged by the same rules as its lines come).

A line's faults are ordered by where they are: a forbidden byte within the
line's allowance, then the line over its allowance (414 for the request
line, 431 for a header line: RFC 9110 15.5.15, RFC 6585 5), then its syntax.
A line's allowance is the smaller of ``max_line_length`` and what is left of
``max_header_size`` (line lengths without their CRLF, as Twisted counts).
"""

from __future__ import annotations

import re
from typing import NoReturn, Optional, Sequence

from ._errors import HeadError
from ._events import Request
from ._state import Framing

__all__ = [
    "CHUNK_LINE_MAX",
    "Limits",
    "chunk_size",
    "framing_of",
    "allowance",
    "judge_lines",
    "read_head",
    "transfer_codings",
]

#: RFC 9110 5.6.2's token: a method or a field name.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A request target as nginx takes it: printable ASCII and any byte above
#: it (raw UTF-8 a client did not percent-encode); no space, no control byte.
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
#: Control bytes, DEL included (RFC 5234's CTL): none in a request line (RFC 9112 3).
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
#: What no header line may hold within its allowance (RFC 9110 5.5, RFC 9112 2.2).
_NOT_IN_A_LINE = re.compile(rb"[\x00\r\n]")
#: HTTP-version (RFC 9112 2.3), for telling an unsupported version (505) from garbage (400).
_VERSION = re.compile(rb"HTTP/([0-9])\.[0-9]")
#: The longest chunk-size line (size and extensions, without CRLF) taken: what Twisted takes.
CHUNK_LINE_MAX = 1024
#: Bytes a chunk extension may hold (RFC 9112 7.1.1: tokens, quoted strings, BWS; obs-text).
_NOT_IN_CHUNK_EXT = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = b"0123456789abcdefABCDEF"
_OWS = b" \t"
_FRAMING_NAMES = frozenset((b"content-length", b"transfer-encoding", b"connection", b"expect"))
#: Methods that need no token check (the regex costs a call).
_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"))

_NO_BODY = Framing.NONE
#: Field names seen, as spelt -> lower-cased; bounded, names are the client's to choose.
_lowered: dict[bytes, bytes] = {}
_LOWERED_KEPT = 1000


class Limits:
    """The bounds of a request head (``limits.max_header_size``; the line length and count Twisted's channel had)."""

    __slots__ = ("max_header_size", "max_line_length", "max_headers", "quick")

    def __init__(self, max_header_size: int, max_line_length: int, max_headers: int) -> None:
        self.max_header_size = max_header_size
        self.max_line_length = max_line_length
        self.max_headers = max_headers
        #: A head no longer than this has no line over its allowance.
        self.quick = min(max_header_size, max_line_length)


def read_head(head: bytes, limits: Limits, max_body_size: Optional[int]) -> Request:
    """The request of *head* (its bytes up to the CRLF CRLF that ends it, excluded), or HeadError."""
    lines = head.split(b"\r\n")
    count = len(lines) - 1
    # A byte as an int: CPython's bytes.__contains__ tries its argument as an int first, and
    # a bytes argument costs it a formatted TypeError (about 2,000 instructions) each time.
    if (
        len(head) > limits.quick
        or count > limits.max_headers
        or 0 in head
        or head.count(b"\n") != count
        or head.count(b"\r") != count
    ):
        judge_lines(lines, limits, complete=True)  # raises, or finds a long head valid
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        _refuse(lines, limits)
    method, target, version = parts
    if (
        (version != b"HTTP/1.1" and version != b"HTTP/1.0")
        or (method not in _METHODS and not _TOKEN.fullmatch(method))
        or not _TARGET.fullmatch(target)
    ):
        _refuse(lines, limits)
    headers = []
    lowered = _lowered
    special = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        lower = lowered.get(name)
        if lower is None:
            if not colon or not _TOKEN.fullmatch(name):
                _refuse(lines, limits)
            lower = name.lower()
            if len(lowered) < _LOWERED_KEPT:
                lowered[name] = lower
        elif not colon:
            _refuse(lines, limits)
        if lower in _FRAMING_NAMES:
            special = True
        headers.append((lower, value.strip(_OWS)))
    if not special:
        # The common case: no body, keep-alive as the version says.
        return Request(method, target, version, headers, _NO_BODY, None, version == b"HTTP/1.1", False)
    return _judged(method, target, version, headers, max_body_size)


def _refuse(lines: Sequence[bytes], limits: Limits) -> NoReturn:
    """The refusal of a head the one-pass reader did not accept: judge_lines' verdict."""
    judge_lines(lines, limits, complete=True)
    raise HeadError("a malformed request head")  # judge_lines found a fault read_head did not: never


def _judged(
    method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]], max_body_size: Optional[int]
) -> Request:
    """A head with framing, Connection or Expect fields: the body's framing judged, the client's wishes read."""
    te: list[bytes] = []
    cl: list[bytes] = []
    connection: list[bytes] = []
    expect: list[bytes] = []
    for name, value in headers:
        if name == b"content-length":
            cl.append(value)
        elif name == b"transfer-encoding":
            te.append(value)
        elif name == b"connection":
            connection.append(value)
        elif name == b"expect":
            expect.append(value)
    framing, length = framing_of(version, te, cl)
    if length is not None and max_body_size is not None and length > max_body_size:
        raise HeadError("a Content-Length over limits.max_body_size", 413)
    tokens = [token.strip(_OWS).lower() for value in connection for token in value.split(b",")]
    if version == b"HTTP/1.1":
        keep_alive = b"close" not in tokens
        # What Twisted's channel honoured: the first Expect field.
        expect_continue = bool(expect) and expect[0].lower() == b"100-continue"
    else:
        keep_alive = b"keep-alive" in tokens
        expect_continue = False
    return Request(method, target, version, headers, framing, length, keep_alive, expect_continue)


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


def framing_of(version: bytes, te: Sequence[bytes], cl: Sequence[bytes]) -> tuple[Framing, Optional[int]]:
    """How a request head frames its body, from its Transfer-Encoding and Content-Length values; HeadError if not in one way only.

    RFC 9112 section 6: a front server and the server behind it that read
    one request two ways are the root of request smuggling, so anything
    ambiguous is refused before a body byte is read.  These are the only
    copy of the rules: fephp.web.framing asks them for Twisted's channel.
    """
    for value in (*te, *cl):
        if _NOT_IN_A_LINE.search(value):
            raise HeadError("NUL, CR or LF in a framing header (RFC 9110 5.5)")
    if te:
        if version == b"HTTP/1.0":
            # RFC 9112 6.1: faulty even with a Content-Length; a 1.0
            # recipient would read the body by the Content-Length.
            raise HeadError("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1)")
        if cl:
            # RFC 9112 6.1: a server may reject it, and must close after answering.
            raise HeadError("both Transfer-Encoding and Content-Length (RFC 9112 6.1)")
        codings = transfer_codings(te)
        if not codings or codings[-1] != b"chunked":
            # RFC 9112 6.3 item 4: the length cannot be told; MUST 400 and close.
            raise HeadError("Transfer-Encoding whose final coding is not chunked (RFC 9112 6.3)")
        if codings.count(b"chunked") > 1:
            raise HeadError("chunked applied more than once (RFC 9112 6.1)")
        if len(codings) > 1:
            # RFC 9112 6.1: a coding the server does not understand: 501.
            raise HeadError("a transfer coding other than chunked (RFC 9112 6.1)", 501)
        return Framing.CHUNKED, None
    if not cl:
        return Framing.NONE, None  # RFC 9112 6.3 item 7
    if len(cl) > 1:
        # RFC 9110 8.6 allows merging identical values; like nginx and Twisted, refuse any repeat.
        raise HeadError("more than one Content-Length (RFC 9112 6.3)")
    value = cl[0].strip(_OWS)  # OWS is not part of a field value (RFC 9110 5.5); a caller may pass it
    if not value.isdigit():  # 1*DIGIT (RFC 9110 8.6); isdigit() knows ASCII digits only for bytes
        raise HeadError("a Content-Length that is not a decimal number (RFC 9112 6.3)")
    length = int(value)
    return (Framing.LENGTH if length else Framing.NONE), length


def judge_lines(
    lines: Sequence[bytes], limits: Limits, *, complete: bool, first: int = 0, so_far: int = 0
) -> int:
    """Raise the refusal of the first fault of a head's *lines* in order; else return the head's size so far.

    *first* is the index in the head of ``lines[0]`` (0: the request line)
    and *so_far* the size of the lines before it, so that a head can be
    judged as its lines arrive.  With *complete* false the last line is
    still arriving: it is judged only on what it holds so far (a forbidden
    byte, or already over its allowance), so that a verdict given early is
    the one the whole head gets.
    """
    last = len(lines) - 1
    for offset, line in enumerate(lines):
        index = first + offset
        whole = complete or offset < last
        if not whole and line.endswith(b"\r"):
            line = line[:-1]  # maybe the first half of its CRLF
        bound = allowance(limits, so_far)
        seen = line[:bound]
        if index == 0:
            if _CONTROL.search(seen):
                # RFC 9112 3: no control byte (DEL included) in a request line; a
                # bare CR or LF (RFC 9112 2.2) may end a line for another reader.
                raise HeadError("a control byte, bare CR or bare LF in the request line (RFC 9112 2.2, 3)")
            if len(line) > bound:
                raise HeadError("request line too long (RFC 9110 15.5.15)", 414)
            if whole:
                _judge_request_line(line)
        else:
            if _NOT_IN_A_LINE.search(seen):
                raise HeadError("NUL, bare CR or bare LF in a header line (RFC 9110 5.5, RFC 9112 2.2)")
            if seen[:1] in (b" ", b"\t"):
                # RFC 9112 5.2: obs-fold may be read another way by another server on the path.
                raise HeadError("a folded header line (RFC 9112 5.2)")
            if len(line) > bound:
                raise HeadError("request header fields too large (RFC 6585 5)", 431)
            if whole:
                if index > limits.max_headers:
                    raise HeadError("more header fields than allowed")
                name, colon, _ = line.partition(b":")
                if not colon or not _TOKEN.fullmatch(name):
                    # RFC 9112 5.1: no whitespace between a field name and its colon.
                    raise HeadError("a header line that is no field name and colon (RFC 9112 5.1)")
        so_far += len(line)
    return so_far


def _judge_request_line(line: bytes) -> None:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HeadError("a request line that is not method SP target SP version (RFC 9112 3)")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HeadError("a method that is not a token (RFC 9112 3.1)")
    if not _TARGET.fullmatch(target):
        raise HeadError("an empty or invalid request target (RFC 9112 3.2)")
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        major = _VERSION.fullmatch(version)
        if major is not None and major.group(1) != b"1":
            raise HeadError("an HTTP version other than 1.x (RFC 9110 15.6.6)", 505)
        raise HeadError("an invalid HTTP version (RFC 9112 2.3)")


def allowance(limits: Limits, so_far: int) -> int:
    """How long the next line of a head may be, after *so_far* bytes of lines."""
    return max(0, min(limits.max_line_length, limits.max_header_size - so_far))


def chunk_size(line: bytes) -> int:
    """The size a chunk-size line (without its CRLF) announces; ValueError if the line is malformed or too long."""
    size, _, extension = line.partition(b";")
    if not size or size.strip(_HEX) or len(line) >= CHUNK_LINE_MAX:
        # RFC 9112 7.1: chunk-size = 1*HEXDIG, with no blank, sign or 0x.
        raise ValueError("chunk-size")
    if extension and _NOT_IN_CHUNK_EXT.search(extension):
        raise ValueError("chunk-ext")
    return int(size, 16)
