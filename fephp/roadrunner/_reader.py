"""Splitting a goridge byte stream into frames, from either end of the pipe; no I/O.

Bytes go in with :meth:`FrameReader.receive_data`, in pieces cut anywhere;
:meth:`FrameReader.next_frame` gives the next whole frame, or
:data:`NEED_DATA` while the frame in progress is incomplete (h11's
``next_event`` contract).
"""

from __future__ import annotations

from typing import Union

from ._errors import ProtocolError
from ._frames import DEFAULT_MAX_PAYLOAD, HEADER_LEN, Frame, parse_header, parse_options

__all__ = ["NEED_DATA", "NeedData", "FrameReader"]


class NeedData:
    """The sentinel type of :data:`NEED_DATA`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: What :meth:`FrameReader.next_frame` answers while a frame is incomplete.
NEED_DATA = NeedData()


class FrameReader:
    """Frames out of a byte stream, each checked (version, header length, CRC, payload bound).

    The buffer holds the bytes fed and not yet taken as frames.  A frame
    announcing a payload over ``max_payload`` is refused at its header,
    before its payload is waited for, so the buffer never grows past one
    bounded frame plus the data of one call.  After a :class:`ProtocolError`
    the reader refuses everything.
    """

    __slots__ = ("_buf", "_pos", "_max_payload", "closed")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max_payload = max_payload
        self.closed = False

    @property
    def max_payload(self) -> int:
        return self._max_payload

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            raise ProtocolError("data received after a protocol error")
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> Union[Frame, NeedData]:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_LEN:
            return NEED_DATA
        try:
            header = parse_header(buf, pos, self._max_payload)
        except ProtocolError:
            self.closed = True
            raise
        start = pos + header.header_len
        stop = start + header.payload_len
        if len(buf) < stop:
            return NEED_DATA
        options = parse_options(buf, pos + HEADER_LEN, header.option_count)
        payload = bytes(buf[start:stop])
        self._pos = stop
        return Frame(payload, header.flags, options, header.stream)

    def frames(self) -> list[Frame]:
        """Every whole frame buffered, in order."""
        out: list[Frame] = []
        while True:
            frame = self.next_frame()
            if isinstance(frame, NeedData):
                return out
            out.append(frame)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buf) - self._pos
