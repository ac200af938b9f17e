"""Splitting a goridge byte stream into frames, from either end of the pipe; no I/O.

Bytes go in with :meth:`FrameReader.receive_data`, in pieces cut anywhere;
:meth:`FrameReader.next_frame` gives the next whole frame, or
:data:`NEED_DATA` while the frame in progress is incomplete (h11's
``next_event`` contract).
"""

from __future__ import annotations

from typing import Union

from ._errors import ProtocolError
from ._frames import DEFAULT_MAX_PAYLOAD, HEADER_LEN, Frame, FrameHeader, parse_header, parse_options

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

    The bytes fed and not yet taken as frames are kept as the list of the
    pieces fed, joined once when a frame is whole: a 5 MiB response read
    in 64 KiB pieces is copied once into its frame, not grown piece by
    piece.  A frame announcing a payload over ``max_payload`` is refused at
    its header, before its payload is waited for, so what is held never
    grows past one bounded frame plus the data of one call.  After a
    :class:`ProtocolError` the reader refuses everything.
    """

    __slots__ = ("_chunks", "_size", "_header", "_max_payload", "closed")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        #: The checked header of the frame in progress, once its 12 bytes are in.
        self._header: FrameHeader | None = None
        self._max_payload = max_payload
        self.closed = False

    @property
    def max_payload(self) -> int:
        return self._max_payload

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            raise ProtocolError("data received after a protocol error")
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)

    def _joined(self) -> bytes:
        chunks = self._chunks
        if len(chunks) > 1:
            chunks[:] = [b"".join(chunks)]
        return chunks[0]

    def next_frame(self) -> Union[Frame, NeedData]:
        header = self._header
        if header is None:
            if self._size < HEADER_LEN:
                return NEED_DATA
            first = self._chunks[0]
            if len(first) < HEADER_LEN:
                first = self._joined()
            try:
                header = parse_header(first, 0, self._max_payload)
            except ProtocolError:
                self.closed = True
                raise
            self._header = header
        stop = header.header_len + header.payload_len
        if self._size < stop:
            return NEED_DATA
        data = self._joined()
        options = parse_options(data, HEADER_LEN, header.option_count)
        payload = data[header.header_len : stop]
        if stop == len(data):
            self._chunks.clear()
        else:
            self._chunks[0] = data[stop:]
        self._size -= stop
        self._header = None
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
        return self._size
