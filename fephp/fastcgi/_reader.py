"""Splitting a FastCGI byte stream into records, from either end of the connection; no I/O."""

from __future__ import annotations

from ._errors import ProtocolError
from ._records import _HEADER, HEADER_LEN, VERSION_1

__all__ = ["MAX_PARAMS_LEN", "RecordReader"]

#: Bound on a request's whole PARAMS stream and on a GET_VALUES_RESULT, as seen
#: by the receiving side.  php-fpm itself refuses params beyond this order of size.
MAX_PARAMS_LEN = 1 << 20


class RecordReader:
    """Splits a byte stream into (type, request_id, content) records.

    The buffer never holds more than one incomplete record (at most
    8 + 65535 + 255 bytes) beyond the data of the current call.

    Records of the *streamed* types are not held until they are whole: the
    part of the content that has arrived comes out at once as a record of
    its own (never empty), and the rest follows as it arrives.  A stream's
    content has no boundaries that mean anything (section 3.3), and this
    spares joining the halves of a 64 KiB STDOUT record that spans two
    reads and cutting it out again: with large responses those copies were
    most of the parser's cost.  An empty record, a stream's end, is always
    whole.
    """

    __slots__ = ("_buffer", "closed", "_streamed", "_stream")

    def __init__(self, streamed: frozenset[int] = frozenset()) -> None:
        self._buffer = b""
        self.closed = False
        self._streamed = streamed
        #: The streamed record in progress: (type, request id, content bytes
        #: still to come, padding bytes still to skip).
        self._stream: tuple[int, int, int, int] | None = None

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        if self.closed:
            raise ProtocolError("data received after a protocol error")
        records = []
        if self._stream is not None:
            rtype, request_id, left, padding = self._stream
            end = len(data)
            take = left if left < end else end
            if take:
                records.append((rtype, request_id, data if take == end else data[:take]))
            skip = padding if padding < end - take else end - take
            left -= take
            padding -= skip
            if left or padding:
                self._stream = (rtype, request_id, left, padding)
                return records
            self._stream = None
            data = data[take + skip :] if take + skip else data
        buf = self._buffer + data if self._buffer else data
        pos = 0
        end = len(buf)
        unpack = _HEADER.unpack_from
        while end - pos >= HEADER_LEN:
            version, rtype, request_id, length, padding = unpack(buf, pos)
            if version != VERSION_1:
                self.closed = True
                raise ProtocolError(f"record with FastCGI version {version}, expected 1")
            start = pos + HEADER_LEN
            stop = start + length
            if stop + padding > end:
                if rtype in self._streamed:
                    if end >= stop:  # the content is whole, some padding is not
                        records.append((rtype, request_id, buf[start:stop]))
                        self._stream = (rtype, request_id, 0, stop + padding - end)
                    else:
                        if end > start:
                            records.append((rtype, request_id, buf[start:]))
                        self._stream = (rtype, request_id, stop - end, padding)
                    pos = end
                break
            records.append((rtype, request_id, buf[start:stop]))
            pos = stop + padding
        self._buffer = buf[pos:] if pos < end else b""
        return records

    @property
    def pending(self) -> int:
        """Bytes of an incomplete record waiting for the rest."""
        if self._stream is not None:
            return 1 + len(self._buffer)
        return len(self._buffer)
