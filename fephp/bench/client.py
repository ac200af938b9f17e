"""A lean HTTP/1.1 keep-alive client for the load loop: one request in flight per connection.

:class:`ResponseParser` is sans-io: bytes in, "response complete" out, with
Content-Length, chunked (RFC 9112 section 7.1) and close-delimited bodies.
It keeps only the header block in memory; body bytes are counted and
dropped.  :class:`HTTPClientConnection` is the Twisted glue around it, kept
short because it runs once per request.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from .._twisted import send_now

__all__ = [
    "ConnectionOwner",
    "HTTPClientConnection",
    "MAX_HEADER_BYTES",
    "MalformedResponse",
    "ResponseParser",
]

#: Largest response header block (status line and fields) accepted.
MAX_HEADER_BYTES = 64 * 1024
#: Largest chunk-size line (with extensions) accepted.
MAX_CHUNK_LINE_BYTES = 4096
#: Distinct header blocks remembered per run (see :class:`ResponseParser`); past it the memory starts afresh.
MAX_CACHED_HEADS = 256

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class MalformedResponse(Exception):
    """The server's bytes are not an HTTP/1.x response."""


class ResponseParser:
    """Parses one response at a time; call :meth:`expect` before each request is sent.

    *head_cache*, shared by the connections of a run, maps a header block
    already seen to what was read from it: a server sends the same few
    blocks again and again (nginx's differ only in their Date, once a
    second), and one dict look-up costs far less than reading the fields.
    """

    __slots__ = ("_buffer", "_state", "_remaining", "_no_body", "_heads", "status", "keep_alive", "received")

    def __init__(self, head_cache: dict[bytes, tuple[int, bool, int, bool]] | None = None) -> None:
        self._buffer = b""
        self._state = _DONE
        self._remaining = 0
        self._no_body = False
        self._heads = {} if head_cache is None else head_cache
        #: Status code of the response being parsed (0 until the status line is read).
        self.status = 0
        #: Whether the connection may carry another request after this response.
        self.keep_alive = True
        #: Bytes of this response received so far, header block included.
        self.received = 0

    @property
    def idle(self) -> bool:
        """No response is expected."""
        return self._state == _DONE

    def abandon(self) -> None:
        """Stop expecting the response (it failed or timed out)."""
        self._state = _DONE
        self._buffer = b""

    def connection_closed(self) -> bool:
        """The server closed cleanly: True if that completes a close-delimited response."""
        complete = self._state == _UNTIL_CLOSE
        self.abandon()
        return complete

    def expect(self, no_body: bool = False) -> None:
        """Get ready for the next response; *no_body* for an answer to HEAD."""
        # The buffer is already empty: a response ends with no bytes left over.
        self._state = _HEAD
        self._no_body = no_body
        self.status = 0
        self.keep_alive = True
        self.received = 0

    def feed(self, data: bytes) -> bool:
        """Take bytes from the server; True once the response is complete.

        Raises :class:`MalformedResponse` for bytes that are not a response,
        including bytes beyond the end of the expected response.
        """
        self.received += len(data)
        state = self._state
        if state == _HEAD and not self._buffer:
            # The hot path of a keep-alive benchmark: a whole header block,
            # often the whole response, in one read.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                self._read_head(data[:end])
                if self._state == _LENGTH:
                    remaining = self._remaining - (len(data) - end - 4)
                    if remaining > 0:
                        self._remaining = remaining
                        return False
                    if remaining < 0:
                        raise MalformedResponse("bytes after the end of the response body")
                    self._state = _DONE
                    return True
                self._buffer = data[end + 4 :]
                return self._advance()
        elif state == _LENGTH:
            # A body segment.
            remaining = self._remaining - len(data)
            if remaining > 0:
                self._remaining = remaining
                return False
            if remaining < 0:
                raise MalformedResponse("bytes after the end of the response body")
            self._state = _DONE
            return True
        elif state == _UNTIL_CLOSE:
            return False
        elif state == _DONE:
            raise MalformedResponse("bytes received while no response was expected")
        self._buffer += data
        return self._advance()

    def _advance(self) -> bool:
        while True:
            state = self._state
            buffer = self._buffer
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEADER_BYTES:
                        raise MalformedResponse(f"header block longer than {MAX_HEADER_BYTES} bytes")
                    return False
                self._buffer = buffer[end + 4 :]
                self._read_head(buffer[:end])
            elif state == _LENGTH:
                remaining = self._remaining - len(buffer)
                self._buffer = b""
                if remaining > 0:
                    self._remaining = remaining
                    return False
                if remaining < 0:
                    raise MalformedResponse("bytes after the end of the response body")
                self._state = _DONE
                return True
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_CHUNK_LINE_BYTES:
                        raise MalformedResponse("chunk-size line too long")
                    return False
                size_text = buffer[:end].split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise MalformedResponse(f"bad chunk size {size_text[:40]!r}") from None
                if size < 0 or size_text[:1] in (b"-", b"+") or size_text[:2].lower() == b"0x":
                    raise MalformedResponse(f"bad chunk size {size_text[:40]!r}")
                self._buffer = buffer[end + 2 :]
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._remaining = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if len(buffer) < self._remaining:
                    self._remaining -= len(buffer)
                    self._buffer = b""
                    return False
                self._buffer = buffer[self._remaining :]
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    return False
                if buffer[:2] != b"\r\n":
                    raise MalformedResponse("chunk data not followed by CRLF")
                self._buffer = buffer[2:]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                # Trailer fields are skipped; the block ends with an empty line.
                if buffer[:2] == b"\r\n":
                    self._buffer = buffer[2:]
                    self._finish()
                    return True
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEADER_BYTES:
                        raise MalformedResponse("trailer block too long")
                    return False
                self._buffer = buffer[end + 4 :]
                self._finish()
                return True
            elif state == _UNTIL_CLOSE:
                self._buffer = b""
                return False
            else:  # _DONE
                if buffer:
                    raise MalformedResponse("bytes after the end of the response")
                return True

    def _finish(self) -> None:
        if self._buffer:
            raise MalformedResponse("bytes after the end of the response")
        self._state = _DONE

    def _read_head(self, head: bytes) -> None:
        """Take in a header block (without its blank line) and set the state for the body."""
        heads = self._heads
        known = heads.get(head)
        if known is None:
            known = _parse_head(head)
            if known[0] >= 200 or known[0] == 101:  # interim responses are never cached
                if len(heads) >= MAX_CACHED_HEADS:
                    heads.clear()
                heads[head] = known
        status, keep_alive, length, chunked = known
        if 100 <= status < 200 and status != 101:
            # An interim response (100 Continue, 103 Early Hints): the final one follows.
            self._state = _HEAD
            return
        self.status = status
        self.keep_alive = keep_alive
        # RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and 304; then chunked
        # wins over Content-Length; without either, the body runs to the close.
        if self._no_body or status in (204, 304) or status < 200:
            self._state = _DONE
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length > 0:
            self._remaining = length
            self._state = _LENGTH
        elif length == 0:
            self._state = _DONE
        else:
            self.keep_alive = False
            self._state = _UNTIL_CLOSE


def _parse_head(head: bytes) -> tuple[int, bool, int, bool]:
    """Status, keep-alive, Content-Length (-1: none) and chunked, from a header block; or MalformedResponse."""
    line_end = head.find(b"\r\n")
    status_line = head if line_end < 0 else head[:line_end]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise MalformedResponse(f"bad status line {status_line[:80]!r}")
    status = int(parts[1])
    keep_alive = parts[0] != b"HTTP/1.0"
    length = -1
    chunked = False
    if line_end >= 0:
        # Only three fields matter; a few C-level finds over the lowered
        # block cost far less than splitting every line.
        fields = head[line_end:].lower() + b"\r\n"
        at = fields.find(b"\r\ncontent-length:")
        while at >= 0:
            value = _field_value(fields, at + 17)
            if not value.isdigit():
                raise MalformedResponse(f"bad Content-Length {value[:40]!r}")
            if length >= 0 and int(value) != length:
                raise MalformedResponse("conflicting Content-Length fields")
            length = int(value)
            at = fields.find(b"\r\ncontent-length:", at + 17)
        at = fields.find(b"\r\ntransfer-encoding:")
        if at >= 0:
            chunked = _field_value(fields, at + 20).endswith(b"chunked")
        at = fields.find(b"\r\nconnection:")
        if at >= 0:
            tokens = _field_value(fields, at + 13)
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
    return status, keep_alive, length, chunked


def _field_value(fields: bytes, start: int) -> bytes:
    return fields[start : fields.find(b"\r\n", start)].strip()


class ConnectionOwner(TypingProtocol):
    """What a connection reports to: the runner's slot."""

    def connected(self, connection: "HTTPClientConnection") -> None: ...

    def response_done(self, connection: "HTTPClientConnection") -> None: ...

    def response_failed(self, connection: "HTTPClientConnection", kind: str) -> None: ...

    def connection_lost(self, connection: "HTTPClientConnection") -> None: ...


class HTTPClientConnection(Protocol):
    """One keep-alive connection; :meth:`send` one request, then wait for the owner's callback."""

    def __init__(self, owner: ConnectionOwner, head_cache: dict[bytes, tuple[int, bool, int, bool]] | None = None) -> None:
        self.owner = owner
        self.parser = ResponseParser(head_cache)

    def connectionMade(self) -> None:  # noqa: N802
        self.owner.connected(self)

    def send(self, request: bytes, no_body: bool = False) -> None:
        """Write *request* (complete, pre-encoded bytes) and expect its response."""
        self.parser.expect(no_body)
        # Straight to the socket when nothing is queued: that saves the
        # reactor a round of write-readiness polling per request.
        send_now(self.transport, request)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        parser = self.parser
        try:
            done = parser.feed(data)
        except MalformedResponse:
            parser.abandon()
            self.owner.response_failed(self, "malformed")
            return
        if done:
            self.owner.response_done(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        parser = self.parser
        if not parser.idle:
            if parser.connection_closed() and reason.check(ConnectionDone):
                self.owner.response_done(self)
            else:
                self.owner.response_failed(self, "reset")
        self.owner.connection_lost(self)

    def close(self) -> None:
        """Drop the connection now, forgetting whatever is in flight."""
        self.parser.abandon()
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()
