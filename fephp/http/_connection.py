"""The server end of one HTTP/1.1 connection: bytes in, request events out; response calls in, bytes out."""

from __future__ import annotations

from typing import Any, NoReturn, Optional, Sequence

from ._errors import BodyError, HTTPCodecError, LocalProtocolError, RemoteProtocolError
from ._events import NEED_DATA, PAUSED, AnyEvent, ConnectionClosed, Data, EndOfMessage, Request
from ._readers import CHUNK_LINE_MAX, Limits, allowance, chunk_size, judge_lines, read_head
from ._state import Framing, State
from ._writers import CONTINUE, LAST_CHUNK, reason_phrase, response_head

__all__ = ["DEFAULT_MAX_HEADERS", "DEFAULT_MAX_HEADER_SIZE", "DEFAULT_MAX_LINE_LENGTH", "ServerConnection"]

#: limits.max_header_size's default: the request line and header lines together, without their CRLFs.
DEFAULT_MAX_HEADER_SIZE = 16 * 1024
#: The longest line of a head (Twisted's HTTPChannel.MAX_LENGTH, which fephp's channel kept).
DEFAULT_MAX_LINE_LENGTH = 16 * 1024
#: The most header lines in a head (Twisted's HTTPChannel.maxHeaders).
DEFAULT_MAX_HEADERS = 500

# Where a chunked body's reader is.
_SIZE, _CHUNK, _CHUNK_END, _TRAILER = range(4)
_END = EndOfMessage()
_NO_BODY_STATUSES = frozenset((204, 304))
_lowered: dict[bytes, bytes] = {}
#: One Limits per set of bounds (a server has one or two).
_limits: dict[tuple[int, int, int], Limits] = {}


# Enum members bound once: on CPython 3.11 each State.X is a descriptor call.
_IDLE, _BODY, _DONE, _CLOSED, _ERROR = State.IDLE, State.BODY, State.DONE, State.CLOSED, State.ERROR
_NONE, _LENGTH, _CHUNKED_BODY, _CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE


class ServerConnection:
    """The server side of an HTTP/1.1 connection, sans-io (as h11's Connection, cut for a front server's speed).

    Feed what the client sent with :meth:`receive_data` (``b""`` at its end)
    and take events with :meth:`next_event` until it gives NEED_DATA or
    PAUSED: a :class:`Request` (head read and its framing judged), its
    :class:`Data`, :class:`EndOfMessage`, :class:`ConnectionClosed`.  A
    refusal raises :class:`RemoteProtocolError` (HeadError, BodyError) whose
    ``status`` is the answer (400, 413, 414, 431, 501, 505); the connection
    must then close.  Answer with :meth:`send_response_head`,
    :meth:`send_data` and :meth:`send_end` (or :meth:`send_response` for a
    whole body at once), each returning the bytes to write; then
    :meth:`start_next_cycle` when :attr:`keep_alive`, else close.

    The limits are fephp's configuration keys: ``max_header_size``
    (limits.max_header_size) and ``max_body_size`` (limits.max_body_size,
    None: none); ``max_line_length`` and ``max_headers`` are what Twisted's
    channel allowed.
    """

    def __init__(
        self,
        *,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_body_size: Optional[int] = None,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ) -> None:
        key = (max_header_size, max_line_length, max_headers)
        limits = _limits.get(key)
        if limits is None:
            limits = _limits[key] = Limits(max_header_size, max_line_length, max_headers)
        self._limits = limits
        #: limits.max_body_size (None: none); may change between requests (a reload's new site).
        self.max_body_size = max_body_size
        # Everything else starts as the class attributes below say: a
        # connection is made per client connection, on the accept path.

    _buffer = b""
    _start = 0
    #: Bytes from _start already searched for a head's end.
    _scanned = 0
    #: Of a head still arriving: the bytes from _start of its lines judged, how many, and their size.
    _judged = 0
    _judged_lines = 0
    _judged_size = 0
    _eof = False
    _closed_complete = True
    #: The one empty line RFC 9112 2.2 lets a client send before a request line was skipped.
    _blank_skipped = False
    _error: Optional[HTTPCodecError] = None
    their_state = _IDLE
    our_state = _IDLE
    #: The request of the current cycle, once its head is read.
    request: Optional[Request] = None
    #: Whether the connection may carry another request after this cycle.
    keep_alive = True
    #: The client sent Expect: 100-continue and has had neither a 100 nor a response.
    client_waiting_for_continue = False
    # The request body being read: Content-Length bytes left, or the
    # chunked reader's state, bytes read in all, the trailer's size.
    _remaining = 0
    _chunked: Optional[int] = None
    _received = 0
    _trailer_size = 0
    # The response: its framing and the Content-Length bytes left.
    _out = _NONE
    _out_left = 0

    # -- receiving ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes the client sent; ``b""`` says it closed its side."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("bytes received after the end of the stream")
        start = self._start
        if start == len(self._buffer):
            self._buffer = data
        elif start:
            self._buffer = self._buffer[start:] + data
        else:
            self._buffer += data
        self._start = 0

    @property
    def pending(self) -> int:
        """Bytes received and not yet turned into events (a pipelined request while PAUSED)."""
        return len(self._buffer) - self._start

    @property
    def receiving(self) -> Optional[str]:
        """``"head"`` while part of a request head is in, ``"body"`` while its body is read, else None (for the timeouts)."""
        state = self.their_state
        if state is _IDLE:
            return "head" if self._start < len(self._buffer) or self._blank_skipped else None
        return "body" if state is _BODY and self.request is not None and self.request.framing is not _NONE else None

    def next_event(self) -> AnyEvent:
        """The next event of what was received, or NEED_DATA, or PAUSED (a next request waits for start_next_cycle)."""
        state = self.their_state
        if state is _IDLE:
            return self._next_head()
        if state is _BODY:
            if self._chunked is None:
                return self._next_data()
            return self._next_chunked()
        if state is _DONE:
            if self._start < len(self._buffer):
                return PAUSED
            if self._eof:
                self.their_state = _CLOSED
                return ConnectionClosed(True)
            return NEED_DATA
        if state is _CLOSED:
            return ConnectionClosed(self._closed_complete)
        assert self._error is not None
        raise self._error

    def _closed(self, complete: bool) -> ConnectionClosed:
        self.their_state = _CLOSED
        self._closed_complete = complete
        return ConnectionClosed(complete)

    def _fail(self, error: RemoteProtocolError) -> NoReturn:
        self.their_state = _ERROR
        self._error = error
        self.keep_alive = False
        raise error

    def _next_head(self) -> AnyEvent:
        buf = self._buffer
        start = self._start
        size = len(buf)
        if start == size:
            return self._closed(not self._blank_skipped) if self._eof else NEED_DATA
        if buf[start] == 13 and not self._blank_skipped:  # RFC 9112 2.2: one empty line before a request
            if size - start < 2:
                return self._closed(False) if self._eof else NEED_DATA
            if buf[start + 1] == 10:
                self._blank_skipped = True
                start = self._start = start + 2
                if start == size:
                    return self._closed(False) if self._eof else NEED_DATA
        end = buf.find(b"\r\n\r\n", start + max(0, self._scanned - 3))
        if end == -1:
            self._scanned = size - start
            try:
                self._judge_pending(buf, start)
            except RemoteProtocolError as error:
                self._fail(error)
            return self._closed(False) if self._eof else NEED_DATA
        self._start = end + 4
        self._scanned = self._judged = self._judged_lines = self._judged_size = 0
        try:
            request = read_head(buf[start:end], self._limits, self.max_body_size)
        except RemoteProtocolError as error:
            self._fail(error)
        self.request = request
        self.their_state = _BODY
        self.keep_alive = request.keep_alive
        self.client_waiting_for_continue = request.expect_continue
        framing = request.framing
        if framing is _NONE:
            self._remaining = 0
        elif framing is _LENGTH:
            self._remaining = request.content_length or 0
        else:
            self._chunked = _SIZE
            self._received = 0
        return request

    def _judge_pending(self, buf: bytes, start: int) -> None:
        """Judge the lines of a head still arriving as they end, so that a fault is refused when its line is in (as Twisted's line reader did).

        Each line is judged once; the line being received is looked at only
        when it holds a bare LF or is over its allowance already.
        """
        limits = self._limits
        judged = start + self._judged
        cut = buf.rfind(b"\r\n", judged)
        if cut != -1:
            lines = buf[judged:cut].split(b"\r\n")
            self._judged_size = judge_lines(
                lines, limits, complete=True, first=self._judged_lines, so_far=self._judged_size
            )
            self._judged_lines += len(lines)
            judged = cut + 2
            self._judged = judged - start
        waiting = len(buf) - judged - buf.endswith(b"\r")
        if buf.find(b"\n", judged) != -1 or waiting > allowance(limits, self._judged_size):
            judge_lines([buf[judged:]], limits, complete=False, first=self._judged_lines, so_far=self._judged_size)

    def _next_data(self) -> AnyEvent:
        """A Content-Length body (or none): its next piece, or its end."""
        remaining = self._remaining
        if not remaining:
            self.their_state = _DONE
            self.client_waiting_for_continue = False
            return _END
        buf = self._buffer
        start = self._start
        available = len(buf) - start
        if not available:
            return self._closed(False) if self._eof else NEED_DATA
        self.client_waiting_for_continue = False
        if available <= remaining:
            data = buf[start:] if start else buf
            self._buffer = b""
            self._start = 0
            self._remaining = remaining - available
        else:
            data = buf[start : start + remaining]
            self._start = start + remaining
            self._remaining = 0
        return Data(data)

    def _next_chunked(self) -> AnyEvent:
        """A chunked body (RFC 9112 7.1): its next piece, or its end, checked against max_body_size as sizes are announced."""
        buf = self._buffer
        while True:
            start = self._start
            state = self._chunked
            if state == _CHUNK:
                available = len(buf) - start
                if not available:
                    break
                self.client_waiting_for_continue = False
                remaining = self._remaining
                if available < remaining:
                    data = buf[start:] if start else buf
                    self._buffer = buf = b""
                    self._start = 0
                    self._remaining = remaining - available
                else:
                    data = buf[start : start + remaining]
                    self._start = start + remaining
                    self._remaining = 0
                    self._chunked = _CHUNK_END
                self._received += len(data)
                return Data(data)
            if state == _SIZE:
                eol = buf.find(b"\r\n", start)
                if eol == -1:
                    line = buf[start:]
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    if len(line) >= CHUNK_LINE_MAX or 10 in line:  # 10: LF, as an int (see http/_readers.py)
                        self._fail(BodyError("a chunk-size line too long or with a bare LF (RFC 9112 7.1)"))
                    break
                try:
                    size = chunk_size(buf[start:eol])
                except ValueError:
                    self._fail(BodyError("a malformed chunk-size line (RFC 9112 7.1)"))
                self._start = eol + 2
                limit = self.max_body_size
                if limit is not None and self._received + size > limit:
                    self._fail(BodyError("a chunked body over limits.max_body_size", 413))
                if size:
                    self._remaining = size
                    self._chunked = _CHUNK
                else:
                    self._chunked = _TRAILER
                    self._trailer_size = 0
            elif state == _CHUNK_END:
                available = len(buf) - start
                if available and buf[start] != 13 or available > 1 and buf[start + 1] != 10:
                    self._fail(BodyError("a chunk not followed by CRLF (RFC 9112 7.1)"))
                if available < 2:
                    break
                self._start = start + 2
                self._chunked = _SIZE
            else:  # the trailer section: fields dropped, bounded by max_header_size
                eol = buf.find(b"\r\n", start)
                if eol == start:
                    self._start = start + 2
                    self._chunked = None
                    self.their_state = _DONE
                    return _END
                bound = self._limits.max_header_size
                if eol == -1:
                    waiting = len(buf) - start
                    if self._trailer_size + waiting + (1 if buf.endswith(b"\r") else 2) > bound:
                        self._fail(BodyError("a trailer section over limits.max_header_size"))
                    break
                self._trailer_size += eol - start + 2
                if self._trailer_size > bound:
                    self._fail(BodyError("a trailer section over limits.max_header_size"))
                self._start = eol + 2
        return self._closed(False) if self._eof else NEED_DATA

    # -- sending -----------------------------------------------------------------------

    def send_continue(self) -> bytes:
        """``100 Continue`` if the client waits for it (Expect: 100-continue, no response yet), else b""."""
        if not self.client_waiting_for_continue:
            return b""
        self.client_waiting_for_continue = False
        return CONTINUE

    def send_informational(self, status: int, headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
        """A 1xx response (103 Early Hints) before the response; b"" to an HTTP/1.0 client (RFC 9110 15.2)."""
        request = self.request
        if not 100 <= status < 200 or status == 101:
            raise LocalProtocolError(f"{status} is not an informational status fephp sends")
        if request is None or self.our_state is not _IDLE:
            raise LocalProtocolError("an informational response outside a request, or after the response head")
        if request.version != b"HTTP/1.1":
            return b""
        if status == 100:
            self.client_waiting_for_continue = False
        return response_head(b"HTTP/1.1", status, reason_phrase(status), headers, ())

    def send_response_head(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], reason: Optional[bytes] = None
    ) -> bytes:
        """The response head: *headers* as given, then the framing and Connection fields the codec decides.

        A Content-Length in *headers* frames the body; without one the body is
        chunked for HTTP/1.1 and ends with the connection for HTTP/1.0.  HEAD,
        204 and 304 responses have no body (:meth:`send_data` drops what it
        is given, as Twisted did).  ``Connection: close`` in *headers*, or a
        client that did not ask to keep the connection, ends it after this
        response: 1.1 responses then say ``Connection: close``, kept 1.0
        ones ``Connection: keep-alive``.  With no request (a refusal), the
        head is HTTP/1.1 and closes.
        """
        if self.our_state is not _IDLE:
            raise LocalProtocolError("a second response head in one cycle")
        if not 200 <= status <= 999:
            raise LocalProtocolError(f"{status} is no final status (1xx: send_informational)")
        request = self.request
        length: Optional[int] = None
        close = False
        connection_given = False
        lowered = _lowered
        for name, value in headers:
            lower = lowered.get(name)
            if lower is None:
                lower = name.lower()
                if len(lowered) < 1000:
                    lowered[name] = lower
            if lower == b"content-length":
                if length is not None or not value.isdigit():
                    raise LocalProtocolError("a second or malformed Content-Length in a response")
                length = int(value)
            elif lower == b"connection":
                connection_given = True
                if b"close" in [token.strip(b" \t").lower() for token in value.split(b",")]:
                    close = True
            elif lower == b"transfer-encoding":
                raise LocalProtocolError("the codec frames the response; no Transfer-Encoding from the caller")
        extra: list[tuple[bytes, bytes]] = []
        if request is None:
            version = b"HTTP/1.1"
            framing = _LENGTH if length is not None else _CLOSE
            keep = False
        else:
            version = request.version
            if request.method == b"HEAD" or status in _NO_BODY_STATUSES:
                framing = _NONE
            elif length is not None:
                framing = _LENGTH
            elif version == b"HTTP/1.1":
                framing = _CHUNKED_BODY
                extra.append((b"Transfer-Encoding", b"chunked"))
            else:
                framing = _CLOSE  # RFC 9112 6.3 item 8: an HTTP/1.0 body without a length
            keep = self.keep_alive and not close and framing is not _CLOSE and self.their_state is not _ERROR
        if version == b"HTTP/1.1":
            if not keep and not close:
                extra.append((b"Connection", b"close"))
        elif keep and not connection_given:
            extra.append((b"Connection", b"keep-alive"))
        self.keep_alive = keep
        self.client_waiting_for_continue = False
        head = response_head(version, status, reason if reason is not None else reason_phrase(status), headers, extra)
        lines = len(headers) + len(extra) + 2
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            self.our_state = _ERROR
            raise LocalProtocolError("CR or LF inside a response field or reason (RFC 9110 5.5)")
        self._out = framing
        self._out_left = length or 0
        self.our_state = _BODY
        return head

    def send_data(self, data: bytes) -> bytes:
        """Body bytes framed for the wire (a chunk; as they are under Content-Length); b"" for nothing or a bodiless response."""
        if self.our_state is not _BODY:
            raise LocalProtocolError("body bytes outside a response body")
        framing = self._out
        if not data or framing is _NONE:
            return b""
        if framing is _CHUNKED_BODY:
            return b"%x\r\n%b\r\n" % (len(data), data)
        if framing is _LENGTH:
            left = self._out_left - len(data)
            if left < 0:
                self.our_state = _ERROR
                raise LocalProtocolError("more body bytes than the response's Content-Length")
            self._out_left = left
        return data

    def send_data_pieces(self, pieces: list[Any]) -> list[Any]:
        """:meth:`send_data` for *pieces* (bytes or memoryviews) left unjoined, for one gathered send."""
        if self.our_state is not _BODY:
            raise LocalProtocolError("body bytes outside a response body")
        framing = self._out
        size = sum(map(len, pieces))
        if not size or framing is _NONE:
            return []
        if framing is _CHUNKED_BODY:
            return [b"%x\r\n" % size, *pieces, b"\r\n"]
        if framing is _LENGTH:
            left = self._out_left - size
            if left < 0:
                self.our_state = _ERROR
                raise LocalProtocolError("more body bytes than the response's Content-Length")
            self._out_left = left
        return pieces

    @property
    def response_framing(self) -> Framing:
        """How the response being sent is delimited (NONE before its head, and for HEAD, 204 and 304)."""
        return self._out

    def sent_elsewhere(self, count: int) -> None:
        """*count* body bytes the caller sent past the codec (``os.sendfile``), counted against the Content-Length."""
        if self.our_state is not _BODY or self._out is not _LENGTH or count > self._out_left:
            self.our_state = _ERROR
            raise LocalProtocolError("body bytes sent past the codec outside a Content-Length body, or beyond it")
        self._out_left -= count

    def send_end(self) -> bytes:
        """The end of the response body: the last chunk, or nothing; LocalProtocolError if a Content-Length was not met."""
        if self.our_state is not _BODY:
            raise LocalProtocolError("the end of a response that was not begun")
        framing = self._out
        self.our_state = _DONE
        if framing is _CHUNKED_BODY:
            return LAST_CHUNK
        if framing is _LENGTH and self._out_left:
            self.our_state = _ERROR
            raise LocalProtocolError("a response body shorter than its Content-Length")
        return b""

    def send_response(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes, reason: Optional[bytes] = None
    ) -> bytes:
        """A whole response in one piece, with the Content-Length of *body* (none on 204 and 304): head and body in one send."""
        if status in _NO_BODY_STATUSES:
            whole = self.send_response_head(status, headers, reason)
        else:
            whole = self.send_response_head(status, [*headers, (b"Content-Length", b"%d" % len(body))], reason)
            if self._out is not _NONE and body:
                self._out_left = 0
                whole += body
        self.our_state = _DONE
        return whole

    def start_next_cycle(self) -> None:
        """After a whole request and a whole response on a kept connection: read the next request."""
        if self.their_state is not _DONE or self.our_state is not _DONE:
            raise LocalProtocolError("the request or the response is not finished")
        if not self.keep_alive:
            raise LocalProtocolError("this connection must close after its response")
        self.their_state = _IDLE
        self.our_state = _IDLE
        self.request = None
        self._blank_skipped = False
        self.client_waiting_for_continue = False
