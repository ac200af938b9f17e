"""HTTP/2's server-side rules that the h2 library leaves to its user, sans-io: frame bounds, floods, stream errors.

Two pieces, neither of which touches a socket or a clock:

- :class:`FrameGuard` reads the 9-byte header of every frame a client sends
  *before* h2 sees the bytes.  h2 buffers a whole frame before it checks its
  length, and processes every frame of a read before returning: so a 16 MiB
  DATA frame, an endless CONTINUATION chain (CVE-2024-27316 and its family) or
  a read holding thousands of SETTINGS or PINGs would cost memory or CPU
  before anything said no.  The guard says no at the header.
- :class:`ServerConnection` is h2's connection with the errors RFC 9113 makes
  stream errors kept as stream errors (a malformed request, one stream over
  the concurrency limit), HPACK failures reported as COMPRESSION_ERROR, and a
  client's GOAWAY(NO_ERROR) letting the streams it already opened finish.
"""

from __future__ import annotations

import enum
import struct
from typing import Any

import h2.connection
import h2.events
import h2.exceptions
import h2.stream
import hpack.exceptions
from h2.connection import ConnectionInputs
from h2.errors import ErrorCodes
from h2.stream import StreamInputs

__all__ = [
    "CONTROL_BURST",
    "CONTROL_RATE",
    "INSTANT_RESET_COST",
    "UNANSWERED_KEPT",
    "SEEN_HEADER_LISTS",
    "FrameGuard",
    "FrameRefused",
    "ServerConnection",
]

#: Frames that cost us work and give the client nothing (below) it may send
#: in a burst, and the refill per second.  nginx and Go close a connection
#: that floods them; a browser sends a handful per connection (SETTINGS,
#: WINDOW_UPDATE, some PRIORITY), plus a WINDOW_UPDATE per few DATA frames it
#: reads, which :meth:`FrameGuard.credit` pays back.
CONTROL_BURST = 300
CONTROL_RATE = 50.0
#: What a RST_STREAM costs, in control frames, when it resets a stream fephp
#: has not answered yet: h2 decoded and checked the request, and maybe PHP
#: started it, for nothing (Rapid Reset, CVE-2023-44487).  Whether the reset
#: comes in the read of its HEADERS or a later one (the attacker's writes
#: split across TCP reads as the network pleases) it costs the same, so about
#: CONTROL_BURST / INSTANT_RESET_COST such resets end a connection; a read
#: holding more than that is refused before h2 parses any of it.  A browser
#: cancels a few requests when its user leaves a page: well within it.
INSTANT_RESET_COST = 10
#: Streams the guard remembers as opened and not answered (a stream refused or
#: reset by fephp is never answered): past this many the oldest are forgotten.
UNANSWERED_KEPT = 256

# Frame types (RFC 9113 6) and flags the guard reads.
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = range(10)
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
#: Frames whose payload has one size (RFC 9113 6.3, 6.4, 6.7, 6.9): another
#: is a FRAME_SIZE_ERROR.  PRIORITY's is a stream error, left to h2.
_FIXED_SIZE = {_RST_STREAM: 4, _PING: 8, _WINDOW_UPDATE: 4}
#: Known frame types that are not controls costing nothing to send.
_PAYLOAD_TYPES = frozenset((_DATA, _HEADERS, _PUSH_PROMISE, _GOAWAY, _CONTINUATION))
#: RFC 9113 4.1: a frame's 9-byte header, with the 24-bit length and the 8-bit type packed in one integer.
_FRAME_HEADER = struct.Struct(">IBI")
#: Distinct validated request header lists a connection remembers (see ServerConnection).
SEEN_HEADER_LISTS = 32


class FrameRefused(Exception):
    """The client broke a bound that ends the connection: GOAWAY with *code*, then close."""

    def __init__(self, code: ErrorCodes, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code.name}: {self.reason}"


class _Scan(enum.Enum):
    """Where the guard is in the byte stream."""

    PREFACE = "preface"  # the client's 24-byte connection preface, before any frame
    HEADER = "header"  # collecting the 9-byte header of the next frame
    PAYLOAD = "payload"  # skipping the payload of a frame already judged


class FrameGuard:
    """Judges each frame by its header before h2 reads it: size, header-block bound, control-frame budget.

    States (:class:`_Scan`): *preface*, then *header* and *payload* in turn
    for each frame.  :meth:`feed` raises :class:`FrameRefused` on the first
    frame that breaks a bound, before the bytes go anywhere; the connection
    then sends GOAWAY and reads no more.
    """

    __slots__ = ("_state", "_need", "_partial", "_max_frame", "_max_block", "_block", "_tokens", "_burst", "_rate", "_last", "_unanswered")

    def __init__(
        self,
        *,
        max_frame_size: int,
        max_header_block: int,
        now: float,
        burst: int = CONTROL_BURST,
        rate: float = CONTROL_RATE,
    ) -> None:
        self._state = _Scan.PREFACE
        self._need = 24  # bytes left of the preface, or of the current payload
        self._partial = b""  # the part of a frame header seen so far
        self._max_frame = max_frame_size
        self._max_block = max_header_block
        #: Bytes of the header block being received (HEADERS + CONTINUATION), or -1 for none.
        self._block = -1
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._last = now
        #: Streams whose HEADERS the guard saw and whose answer has not started (bounded by UNANSWERED_KEPT).
        self._unanswered: set[int] = set()

    def feed(self, data: bytes, now: float) -> None:
        """Judge the frames whose headers are in *data*; raise FrameRefused at the first one out of bounds."""
        tokens = self._tokens
        if tokens < self._burst:
            tokens = min(self._burst, tokens + (now - self._last) * self._rate)
        self._last = now
        pos = 0
        end = len(data)
        state = self._state
        need = self._need
        while pos < end:
            if state is not _Scan.HEADER:
                taken = min(need, end - pos)
                pos += taken
                need -= taken
                if need == 0:
                    state = _Scan.HEADER
                continue
            if self._partial:
                head = self._partial + data[pos:pos + 9 - len(self._partial)]
                pos += 9 - len(self._partial)
            else:
                head = data[pos:pos + 9]
                pos += 9
            if len(head) < 9:
                self._partial = head
                break
            self._partial = b""
            length = int.from_bytes(head[:3], "big")
            kind = head[3]
            flags = head[4]
            cost = self._judge(length, kind, flags)
            if cost:
                if kind == _HEADERS:
                    unanswered = self._unanswered
                    if len(unanswered) >= UNANSWERED_KEPT:
                        unanswered.discard(min(unanswered))
                    unanswered.add(int.from_bytes(head[5:9], "big") & 0x7FFFFFFF)
                    cost = 0
                elif kind == _RST_STREAM and self._unanswered:
                    stream_id = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                    if stream_id in self._unanswered:
                        self._unanswered.discard(stream_id)
                        cost = INSTANT_RESET_COST
                tokens -= cost
                if tokens < 0:
                    self._tokens = 0.0
                    if cost == INSTANT_RESET_COST:
                        raise FrameRefused(ErrorCodes.ENHANCE_YOUR_CALM, "streams reset before their answer")
                    raise FrameRefused(ErrorCodes.ENHANCE_YOUR_CALM, f"a flood of frames of type {kind} that carry nothing")
            need = length
            state = _Scan.PAYLOAD if length else _Scan.HEADER
        self._state = state
        self._need = need
        self._tokens = tokens

    def _judge(self, length: int, kind: int, flags: int) -> int:
        """Check one frame header; what it costs of the control budget (HEADERS: 1, for :meth:`feed` to note the stream)."""
        if length > self._max_frame:
            # RFC 9113 4.2: before its payload is read, let alone buffered.
            raise FrameRefused(ErrorCodes.FRAME_SIZE_ERROR, f"a frame of {length} bytes, over SETTINGS_MAX_FRAME_SIZE")
        if kind == _HEADERS or kind == _PUSH_PROMISE:
            if length > self._max_block:
                raise FrameRefused(ErrorCodes.ENHANCE_YOUR_CALM, f"a header block over {self._max_block} bytes")
            self._block = -1 if flags & _END_HEADERS else length
            return kind == _HEADERS
        if kind == _CONTINUATION:
            if self._block >= 0:
                self._block += length
                if self._block > self._max_block:
                    # CVE-2024-27316's family: end it as the bound is crossed, not when the block ends.
                    raise FrameRefused(ErrorCodes.ENHANCE_YOUR_CALM, f"a header block over {self._max_block} bytes")
                if flags & _END_HEADERS:
                    self._block = -1
            return length == 0 and not flags & _END_HEADERS
        if kind == _DATA:
            return length == 0 and not flags & _END_STREAM
        if kind == _SETTINGS:
            # RFC 9113 6.5: an ACK with a payload, or a payload not in 6-byte settings.
            if (flags & _ACK and length) or length % 6:
                raise FrameRefused(ErrorCodes.FRAME_SIZE_ERROR, f"a SETTINGS frame of {length} bytes")
            return True
        fixed = _FIXED_SIZE.get(kind)
        if fixed is not None and length != fixed:
            raise FrameRefused(ErrorCodes.FRAME_SIZE_ERROR, f"a frame of type {kind} with {length} bytes, not {fixed}")
        # PING, WINDOW_UPDATE, RST_STREAM, PRIORITY, and extension frames that h2 ignores.
        return kind not in _PAYLOAD_TYPES

    def answered(self, stream_id: int) -> None:
        """The answer of *stream_id* has started: a reset of it from now on costs what any reset costs."""
        self._unanswered.discard(stream_id)

    def credit(self, frames: int) -> None:
        """We sent *frames* DATA frames: the WINDOW_UPDATEs that answer them (the stream's, the connection's) are paid for."""
        tokens = self._tokens + 2 * frames
        self._tokens = tokens if tokens < self._burst else self._burst

    @property
    def tokens(self) -> float:
        """Control frames the client may still send now (without the refill since the last feed)."""
        return self._tokens


class _CompressionError(h2.exceptions.ProtocolError):
    """A header block HPACK cannot decode: a connection error of type COMPRESSION_ERROR (RFC 9113 4.3)."""

    error_code = ErrorCodes.COMPRESSION_ERROR


#: What hpack raises for a block it cannot decode (h2 catches the same).
_HPACK_ERRORS = (hpack.exceptions.HPACKError, IndexError, TypeError, UnicodeDecodeError)


class StreamRejected(h2.events.Event):
    """A stream h2 would have ended the connection for, reset with *error_code* instead."""

    def __init__(self, stream_id: int, error_code: ErrorCodes, reason: str) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.reason = reason

    def __repr__(self) -> str:
        return f"<StreamRejected stream_id:{self.stream_id}, error_code:{self.error_code!r}, reason:{self.reason}>"


class ServerConnection(h2.connection.H2Connection):
    """h2's connection, with the stream errors, error codes and GOAWAY handling of RFC 9113 that h2 gets wrong.

    - A new stream over SETTINGS_MAX_CONCURRENT_STREAMS is reset with
      REFUSED_STREAM (RFC 9113 5.1.2); h2 ends the connection.
    - A malformed request head (an upper-case name, a connection-specific
      header, a pseudo-header after a regular one...) is reset with
      PROTOCOL_ERROR (RFC 9113 8.1.1); h2 ends the connection.
    - A header block HPACK cannot decode ends the connection with
      COMPRESSION_ERROR (RFC 9113 4.3); h2 says PROTOCOL_ERROR.
    - A client's GOAWAY(NO_ERROR) lets the streams it already opened be
      answered (RFC 9113 6.8); h2 refuses to send anything after it.
      :attr:`refusing` is then set, and later new streams are refused.

    Each such stream reset comes out as a :class:`StreamRejected` event.
    The header block is always decoded first, so HPACK's table stays in step.
    This overrides two of h2's private methods (``_receive_headers_frame``,
    ``_receive_goaway_frame``), stable across h2 4.x and calling nothing else
    private; ``tests/unit/web/test_h2server.py`` pins them.

    Two things are made cheaper than h2 makes them, with h2's own rules:

    - A request's header list that h2 validated before on this connection
      (the same list, the same flags) is not run through h2's eight
      validating generators again: the result is a function of the two
      (:class:`_ServerStream`, at most :data:`SEEN_HEADER_LISTS` kept).
    - :meth:`send_response_headers` and :meth:`send_body` are h2's
      ``send_headers`` and ``send_data`` for a final response, taking the
      same state machine steps and windows, with the frames written as
      bytes instead of hyperframe objects; h2's checks that fephp's
      response cannot fail (priority, padding, informational) are left out.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (header list, validation flags) -> the validated list, for _ServerStream.
        self.seen_headers: dict[Any, list[Any]] = {}
        #: Bytes to send, h2's own moved in before each of ours, so that frames leave in the order they were made.
        self._outbound = bytearray()

    def data_to_send(self, amount: Any = None) -> bytes:
        """h2's: the bytes to send (up to *amount*), ours and h2's in the order they were made."""
        outbound = self._outbound
        if not outbound:
            return super().data_to_send(amount)
        outbound += super().data_to_send()
        if amount is None:
            data = bytes(outbound)
            outbound.clear()
        else:
            data = bytes(outbound[:amount])
            del outbound[:amount]
        return data

    def clear_outbound_data_buffer(self) -> None:
        self._outbound.clear()
        super().clear_outbound_data_buffer()

    def _write(self, frames: bytes) -> None:
        """Queue frames made here after whatever h2 queued before them."""
        outbound = self._outbound
        outbound += super().data_to_send()
        outbound += frames

    def _stream(self, stream_id: int) -> Any:
        """h2's stream *stream_id*; StreamClosedError if h2 no longer has it (reset, or closed and forgotten)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            raise h2.exceptions.StreamClosedError(stream_id)
        return stream

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> Any:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = _ServerStream
        stream.seen_headers = self.seen_headers  # type: ignore[attr-defined]  # a _ServerStream now
        return stream

    def send_response_headers(self, stream_id: int, headers: Any, end_stream: bool) -> None:
        """Send a final response's HEADERS (``:status`` >= 200) on *stream_id*, as h2's ``send_headers``."""
        stream = self._stream(stream_id)
        self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        machine = stream.state_machine
        machine.process_input(StreamInputs.SEND_HEADERS)
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
        block = self.encoder.encode(headers)
        size = self.max_outbound_frame_size
        end = 0x1 if end_stream else 0
        if len(block) <= size:
            self._write(_FRAME_HEADER.pack(len(block) << 8 | _HEADERS, end | _END_HEADERS, stream_id) + block)
            return
        # RFC 9113 6.10: the rest of the block in CONTINUATION frames, END_HEADERS on the last.
        pieces = [block[i:i + size] for i in range(0, len(block), size)]
        out = [_FRAME_HEADER.pack(len(pieces[0]) << 8 | _HEADERS, end, stream_id), pieces[0]]
        for i, piece in enumerate(pieces[1:], 2):
            out += [_FRAME_HEADER.pack(len(piece) << 8 | _CONTINUATION, _END_HEADERS if i == len(pieces) else 0, stream_id), piece]
        self._write(b"".join(out))

    def send_body(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Send one DATA frame of *data* (within the windows and the frame size: the caller's check), as h2's ``send_data``."""
        stream = self._stream(stream_id)
        size = len(data)
        if size > stream.outbound_flow_control_window or size > self.outbound_flow_control_window:
            raise h2.exceptions.FlowControlError(f"Cannot send {size} bytes, the flow control window is smaller")
        if size > self.max_outbound_frame_size:
            raise h2.exceptions.FrameTooLargeError(f"Cannot send frame size {size}")
        self.state_machine.process_input(ConnectionInputs.SEND_DATA)
        machine = stream.state_machine
        machine.process_input(StreamInputs.SEND_DATA)
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        self._write(_FRAME_HEADER.pack(size << 8 | _DATA, 0x1 if end_stream else 0, stream_id) + data)

    #: Set once the client said GOAWAY(NO_ERROR), or the server chose to refuse new streams.
    refusing = False
    #: A stream over the limit is being taken only to be refused (h2 decodes its block).
    _admitting = False

    def _receive_headers_frame(self, frame: Any) -> Any:
        stream_id = frame.stream_id
        new = stream_id not in self.streams
        # Counted before the stream exists, as h2 counts (the property also forgets closed streams).
        limit = self.local_settings.max_concurrent_streams
        # h2 keeps closed streams until it counts: fewer than the limit in all need no count (a walk over them).
        over = new and (self.refusing or (len(self.streams) >= limit and self.open_inbound_streams >= limit))
        self._admitting = over  # h2 takes the stream, so that its block is decoded; it is refused below
        try:
            frames, events = super()._receive_headers_frame(frame)
        except h2.exceptions.ProtocolError as e:
            if new and stream_id in self.streams:
                # Decoded, and the stream opened: what failed is the request's
                # own check (RFC 9113 8.2, 8.3), a stream error.
                self.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
                return [], [StreamRejected(stream_id, ErrorCodes.PROTOCOL_ERROR, f"malformed request: {e}")]
            if isinstance(e.__cause__, _HPACK_ERRORS) and not isinstance(e, h2.exceptions.DenialOfServiceError):
                raise _CompressionError(str(e)) from e
            raise
        finally:
            self._admitting = False
        if over:
            self.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return [], [StreamRejected(stream_id, ErrorCodes.REFUSED_STREAM, "over the concurrent stream limit")]
        return frames, events

    @property
    def open_inbound_streams(self) -> int:
        """h2's count of the client's open streams; none while a stream to be refused is taken."""
        return 0 if self._admitting else super().open_inbound_streams

    def _receive_goaway_frame(self, frame: Any) -> Any:
        if frame.error_code != ErrorCodes.NO_ERROR:
            return super()._receive_goaway_frame(frame)
        # The client is done opening streams; those it opened may finish.
        self.refusing = True
        event = h2.events.ConnectionTerminated()
        event.error_code = ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class _ServerStream(h2.stream.H2Stream):
    """h2's stream, remembering the header lists its connection validated (ServerConnection).

    h2's ``normalize_inbound_headers`` and ``validate_headers`` depend only on
    the list and the flags (request, trailers...), so an identical pair gets
    the same answer; a list h2 refuses raises as before and is not kept.
    """

    seen_headers: dict[Any, list[Any]]

    def _process_received_headers(self, headers: Any, header_validation_flags: Any, header_encoding: Any) -> Any:
        if header_encoding is not None and header_encoding is not False:
            return super()._process_received_headers(headers, header_validation_flags, header_encoding)
        key = (tuple(headers), header_validation_flags)
        seen = self.seen_headers
        done = seen.get(key)
        if done is None:
            done = super()._process_received_headers(key[0], header_validation_flags, header_encoding)
            if len(seen) >= SEEN_HEADER_LISTS:
                seen.clear()
            seen[key] = done
        return list(done)
