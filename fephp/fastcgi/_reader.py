"""Splitting a FastCGI byte stream into records, from either end of the connection; no I/O."""

from __future__ import annotations

from typing import Union

from ._errors import ProtocolError
from ._records import _HEADER, HEADER_LEN, VERSION_1

__all__ = ["MAX_PARAMS_LEN", "VIEW_FROM", "Chunk", "RecordReader"]

#: Bound on a request's whole PARAMS stream and on a GET_VALUES_RESULT, as seen
#: by the receiving side.  php-fpm itself refuses params beyond this order of size.
MAX_PARAMS_LEN = 1 << 20
#: Streamed parts at least this long come out as memoryviews into the read, not copies.
VIEW_FROM = 4096

#: A piece of a stream's content: bytes, or a read-only memoryview of bytes.
Chunk = Union[bytes, memoryview]


def _part(buf: bytes, start: int, stop: int) -> Chunk:
    """``buf[start:stop]``: a memoryview when it is long (no copy), else bytes; all of *buf* as it is."""
    if start == 0 and stop == len(buf):
        return buf
    if stop - start >= VIEW_FROM:
        return memoryview(buf)[start:stop]
    return bytes(buf[start:stop])


class RecordReader:
    """Splits a byte stream into (type, request_id, content) records.

    The buffer never holds more than one incomplete record (at most
    8 + 65535 + 255 bytes) beyond the data of the current call.

    Records of the *streamed* types are not held until they are whole: the
    part of the content that has arrived comes out at once as a record of
    its own (never empty), and the rest follows as it arrives.  A stream's
    content has no boundaries that mean anything (section 3.3), and this
    spares joining the halves of a 64 KiB STDOUT record that spans two
    reads and cutting it out again.  An empty record, a stream's end, is
    always whole.

    A streamed part of :data:`VIEW_FROM` bytes or more is a ``memoryview``
    into the data fed, not a copy: a large response then goes from the
    socket's read to the client's send without its bytes being copied on
    the way (on PyPy each 64 KiB copy also fed the garbage collector, which
    made a 1 MiB response cost four times CPython's CPU).  Smaller parts,
    and the content of every other type, are ``bytes``.
    """

    __slots__ = ("_buffer", "closed", "_streamed", "_stream")

    def __init__(self, streamed: frozenset[int] = frozenset()) -> None:
        self._buffer = b""
        self.closed = False
        self._streamed = streamed
        #: The streamed record in progress: (type, request id, content bytes
        #: still to come, padding bytes still to skip).
        self._stream: tuple[int, int, int, int] | None = None

    def feed(self, data: bytes) -> list[tuple[int, int, Chunk]]:
        if self.closed:
            raise ProtocolError("data received after a protocol error")
        records: list[tuple[int, int, Chunk]] = []
        pos = 0
        end = len(data)
        if self._stream is not None:
            rtype, request_id, left, padding = self._stream
            take = left if left < end else end
            if take:
                records.append((rtype, request_id, _part(data, 0, take)))
            skip = padding if padding < end - take else end - take
            left -= take
            padding -= skip
            if left or padding:
                self._stream = (rtype, request_id, left, padding)
                return records
            self._stream = None
            pos = take + skip
        if self._buffer:
            # Only the start of a record is ever held (a header cut in two,
            # or a short record of a type that is not streamed).
            buf = self._buffer + (data[pos:] if pos else data)
            pos = 0
            end = len(buf)
        else:
            buf = data
        unpack = _HEADER.unpack_from
        streamed = self._streamed
        while end - pos >= HEADER_LEN:
            version, rtype, request_id, length, padding = unpack(buf, pos)
            if version != VERSION_1:
                self.closed = True
                raise ProtocolError(f"record with FastCGI version {version}, expected 1")
            start = pos + HEADER_LEN
            stop = start + length
            if stop + padding > end:
                if rtype in streamed:
                    if end >= stop:  # the content is whole, some padding is not
                        records.append((rtype, request_id, _part(buf, start, stop)))
                        self._stream = (rtype, request_id, 0, stop + padding - end)
                    else:
                        if end > start:
                            records.append((rtype, request_id, _part(buf, start, end)))
                        self._stream = (rtype, request_id, stop - end, padding)
                    pos = end
                break
            if rtype in streamed:
                records.append((rtype, request_id, _part(buf, start, stop)))
            else:
                records.append((rtype, request_id, bytes(buf[start:stop])))
            pos = stop + padding
        self._buffer = bytes(buf[pos:]) if pos < end else b""
        return records

    @property
    def pending(self) -> int:
        """Bytes of an incomplete record waiting for the rest."""
        if self._stream is not None:
            return 1 + len(self._buffer)
        return len(self._buffer)
