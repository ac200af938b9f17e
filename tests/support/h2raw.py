"""A raw-frame HTTP/2 client over TLS for attack and conformance tests, from the hostile client's side, on hyperframe and hpack.

Unlike :mod:`tests.support.h2client` (an h2 ``H2Connection`` that refuses
to send what RFC 9113 forbids), :class:`RawH2` writes whatever frames the
test builds, in one write if asked, and records what the server answered::

    client = RawH2(port)                              # TLS, ALPN h2, preface and SETTINGS sent
    block = client.block("/once.php?tag=r1")          # an HPACK header block of a GET
    client.send(headers(1, block) + rst_stream(1))    # HEADERS then RST_STREAM(CANCEL) in one write
    client.read_until(lambda c: c.goaway is not None, within=5.0)
    client.goaway, client.resets, client.closed

Every read is bounded by *within* seconds; the connection counts as closed
on EOF or a reset from the server.  Only 127.0.0.1 is ever dialled.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

__all__ = [
    "CANCEL",
    "COMPRESSION_ERROR",
    "ENHANCE_YOUR_CALM",
    "FRAME_SIZE_ERROR",
    "NO_ERROR",
    "PREFACE",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "RawH2",
    "SETTINGS_INITIAL_WINDOW_SIZE",
    "Stream",
    "continuation",
    "data",
    "goaway",
    "headers",
    "pad_field",
    "ping",
    "priority",
    "raw_frame",
    "rst_stream",
    "settings",
    "window_update",
]

#: RFC 9113 7, the error codes the tests expect.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

#: RFC 9113 3.4, the client connection preface.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: RFC 9113 6.5.2.
SETTINGS_INITIAL_WINDOW_SIZE = 0x4

_FRAME_HEADER = struct.Struct(">I B B I")  # 24-bit length in the top of the I, type, flags, stream


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes, *, length: Optional[int] = None) -> bytes:
    """A frame as bytes, its 9-byte header announcing *length* (the payload's own length unless given)."""
    announced = len(payload) if length is None else length
    assert 0 <= announced < 2**24, "a frame's length field has 24 bits"
    return struct.pack(">I", announced)[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id & 0x7FFFFFFF) + payload


def pad_field(value_size: int) -> bytes:
    """One HPACK field ``x-pad: aaa...`` (*value_size* bytes, at least 127) as a literal without indexing nor Huffman coding (RFC 7541 6.2.2)."""
    rest = value_size - 127
    length = bytearray(b"\x7f")  # RFC 7541 5.1: the 7-bit prefix full, then 7 bits a byte
    while rest >= 128:
        length.append(rest % 128 + 128)
        rest //= 128
    length.append(rest)
    return b"\x00\x05x-pad" + bytes(length) + b"a" * value_size


def headers(stream_id: int, block: bytes, *, end_stream: bool = True, end_headers: bool = True) -> bytes:
    f = HeadersFrame(stream_id, block)
    for flag, on in (("END_STREAM", end_stream), ("END_HEADERS", end_headers)):
        if on:
            f.flags.add(flag)
    return f.serialize()


def continuation(stream_id: int, block: bytes, *, end_headers: bool = False) -> bytes:
    f = ContinuationFrame(stream_id, block)
    if end_headers:
        f.flags.add("END_HEADERS")
    return f.serialize()


def data(stream_id: int, payload: bytes = b"", *, end_stream: bool = False) -> bytes:
    f = DataFrame(stream_id, payload)
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def rst_stream(stream_id: int, code: int = CANCEL) -> bytes:
    return RstStreamFrame(stream_id, error_code=code).serialize()


def settings(values: Optional[dict[int, int]] = None, *, ack: bool = False) -> bytes:
    f = SettingsFrame(0, settings=values or {})
    if ack:
        f.flags.add("ACK")
    return f.serialize()


def ping(payload: bytes = b"12345678") -> bytes:
    return PingFrame(0, payload).serialize()


def window_update(stream_id: int, increment: int) -> bytes:
    return WindowUpdateFrame(stream_id, window_increment=increment).serialize()


def priority(stream_id: int, depends_on: int = 0, weight: int = 15) -> bytes:
    return PriorityFrame(stream_id, depends_on=depends_on, stream_weight=weight).serialize()


def goaway(last_stream_id: int, code: int = NO_ERROR) -> bytes:
    return GoAwayFrame(0, last_stream_id=last_stream_id, error_code=code).serialize()


@dataclass
class Stream:
    """What the server sent on one stream."""

    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reset: Optional[int] = None  # the RST_STREAM error code, if the server reset it

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class RawH2:
    """One TLS connection to 127.0.0.1:*port* speaking HTTP/2 frame by frame.

    The connection preface and a SETTINGS frame with *initial_settings* go
    out at once; the server's SETTINGS are acknowledged and (with
    *auto_window*) every DATA frame is given back by WINDOW_UPDATE, as a
    well-behaved client does, unless the test says otherwise.
    States: open, then closed (:attr:`closed`, once the server closed or
    reset the TCP connection, or :meth:`close`).
    """

    def __init__(
        self,
        port: int,
        *,
        initial_settings: Optional[dict[int, int]] = None,
        auto_window: bool = True,
        timeout: float = 10.0,
    ) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each write out at once, as the attacks mean it
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.alpn = self.sock.selected_alpn_protocol()
        self.port = port
        self.auto_window = auto_window
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.streams: dict[int, Stream] = {}
        self.goaway: Optional[int] = None
        self.goaway_last_stream: Optional[int] = None
        self.goaway_at: Optional[float] = None
        self.closed = False
        self.closed_at: Optional[float] = None
        self.send_failed = False
        self.bytes_sent = 0
        self.settings_acks = 0
        self.pings = 0
        self._buffer = bytearray()
        self._block: dict[int, bytearray] = {}
        self.send(PREFACE + settings(initial_settings or {}))

    # -- building ------------------------------------------------------------------

    def block(
        self,
        path: str,
        method: str = "GET",
        extra: Iterable[tuple[str, str]] = (),
        *,
        pseudo: Optional[list[tuple[str, str]]] = None,
    ) -> bytes:
        """The HPACK block of a request for *path* (or of exactly *pseudo* + *extra*), encoded by this connection's encoder."""
        fields = pseudo if pseudo is not None else [
            (":method", method), (":scheme", "https"), (":authority", f"127.0.0.1:{self.port}"), (":path", path),
        ]
        return bytes(self.encoder.encode(list(fields) + list(extra)))

    def request(self, stream_id: int, path: str, *, end_stream: bool = True) -> None:
        """HEADERS of a GET for *path* on *stream_id*, sent now."""
        self.send(headers(stream_id, self.block(path), end_stream=end_stream))

    # -- the wire --------------------------------------------------------------------

    def send(self, payload: bytes) -> bool:
        """Write *payload*; False (and :attr:`send_failed`) if the server had closed or stopped reading past the timeout."""
        if self.closed:
            return False
        try:
            self.sock.sendall(payload)
        except (OSError, ssl.SSLError):
            self.send_failed = True
            return False
        self.bytes_sent += len(payload)
        return True

    def readable(self) -> bool:
        """Whether bytes (or the close) from the server wait to be read now."""
        if self.closed:
            return False
        if self.sock.pending():
            return True
        ready, _, _ = select.select([self.sock], [], [], 0)
        return bool(ready)

    def wait_io(self, timeout: float) -> tuple[bool, bool]:
        """Wait up to *timeout* for bytes from the server or room to send; (readable, writable)."""
        if self.closed:
            return False, False
        if self.sock.pending():
            return True, False
        readable, writable, _ = select.select([self.sock], [self.sock], [], timeout)
        return bool(readable), bool(writable)

    def read_once(self, timeout: Optional[float] = None) -> None:
        """One read (blocking up to *timeout*, or the socket's), its frames applied; EOF or a reset marks the connection closed."""
        if self.closed:
            return
        previous = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        except (ConnectionError, ssl.SSLError, OSError):
            chunk = b""
        finally:
            if timeout is not None and not self.closed:
                self.sock.settimeout(previous)
        if not chunk:
            self.closed = True
            self.closed_at = time.monotonic()
            return
        self._buffer += chunk
        self._parse()

    def read_until(self, done: Callable[["RawH2"], bool], within: float) -> bool:
        """Read until *done* holds or the server closed; False if *within* seconds passed first."""
        deadline = time.monotonic() + within
        while not done(self):
            if self.closed:
                return done(self)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.read_once(left)
        return True

    def handshake(self, within: float = 5.0) -> None:
        """Wait until the server acknowledged our SETTINGS: its own, sent before, are then read and acknowledged too.

        Before a header block is left open (HEADERS without END_HEADERS),
        so that no SETTINGS ACK of ours falls inside it (RFC 9113 6.10).
        """
        if not self.read_until(lambda c: c.settings_acks >= 1, within):
            raise TimeoutError(f"no SETTINGS ACK in {within} s")

    def drain(self) -> None:
        """Apply whatever the server has sent by now without waiting."""
        while self.readable():
            self.read_once(0.05)

    def response(self, stream_id: int, within: float = 10.0) -> Stream:
        """Read until *stream_id* ended or was reset (or the connection went); what came back on it."""
        self.read_until(lambda c: c.stream(stream_id).done or c.goaway is not None and stream_id > (c.goaway_last_stream or 0), within)
        return self.stream(stream_id)

    def stream(self, stream_id: int) -> Stream:
        return self.streams.setdefault(stream_id, Stream())

    def close(self) -> None:
        """Drop the connection (no GOAWAY, no close_notify: as a client that vanishes)."""
        if not self.closed:
            self.closed = True
            self.closed_at = time.monotonic()
        try:
            self.sock.close()
        except OSError:
            pass

    # -- what came back ----------------------------------------------------------------

    def _parse(self) -> None:
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
            if len(self._buffer) < 9 + length:
                return
            frame.parse_body(memoryview(bytes(self._buffer[9 : 9 + length])))
            del self._buffer[: 9 + length]
            self._apply(frame)

    def _apply(self, frame: Frame) -> None:
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acks += 1
            else:
                self.send(settings(ack=True))
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                self.pings += 1
        elif isinstance(frame, GoAwayFrame):
            self.goaway = int(frame.error_code)
            self.goaway_last_stream = int(frame.last_stream_id)
            self.goaway_at = time.monotonic()
        elif isinstance(frame, RstStreamFrame):
            self.stream(frame.stream_id).reset = int(frame.error_code)
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self._block.setdefault(frame.stream_id, bytearray()).extend(frame.data)
            if "END_HEADERS" in frame.flags:
                self._headers_done(frame.stream_id)
            if "END_STREAM" in frame.flags:
                self.stream(frame.stream_id).ended = True
        elif isinstance(frame, DataFrame):
            stream = self.stream(frame.stream_id)
            stream.body += frame.data
            if "END_STREAM" in frame.flags:
                stream.ended = True
            if self.auto_window and frame.flow_controlled_length:
                n = frame.flow_controlled_length
                self.send(window_update(0, n) + window_update(frame.stream_id, n) if not stream.ended else window_update(0, n))

    def _headers_done(self, stream_id: int) -> None:
        fields = self.decoder.decode(bytes(self._block.pop(stream_id)), raw=False)
        stream = self.stream(stream_id)
        for name, value in fields:
            if name == ":status":
                if 100 <= int(value) < 200:
                    continue
                stream.status = int(value)
            else:
                stream.headers.append((str(name), str(value)))
