"""The two ends of a FastCGI connection as state machines: bytes in, events out.

:class:`ClientConnection` is the web server's end (what fephp uses);
:class:`ServerConnection` is the application's end, used as a fake backend in
tests and as the reference the client is checked against.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from ._errors import ProtocolError
from ._events import (
    AbortRequest,
    BeginRequest,
    Data,
    EndRequest,
    Event,
    GetValues,
    GetValuesResult,
    Params,
    Stderr,
    Stdin,
    Stdout,
    UnknownType,
)
from ._records import (
    _HEADER,
    HEADER_LEN,
    NULL_REQUEST_ID,
    VERSION_1,
    BeginFlags,
    ProtocolStatus,
    RecordType,
    Role,
    decode_begin_request,
    decode_end_request,
    decode_name_values,
    decode_unknown_type,
    encode_begin_request,
    encode_end_request,
    encode_name_values,
    encode_record,
    encode_stream,
    encode_unknown_type,
)

__all__ = ["ClientConnection", "ServerConnection", "MAX_PARAMS_LEN"]

#: Bound on a request's whole PARAMS stream and on a GET_VALUES_RESULT, as seen
#: by the receiving side.  php-fpm itself refuses params beyond this order of size.
MAX_PARAMS_LEN = 1 << 20

_STDOUT = RecordType.STDOUT
_STDERR = RecordType.STDERR
_END_REQUEST = RecordType.END_REQUEST


class _RecordReader:
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


class ClientConnection:
    """The web server's end of one FastCGI connection.

    Requests are started with :meth:`begin_request`, fed with
    :meth:`send_stdin`, and end when an :class:`EndRequest` event comes out of
    :meth:`receive_data`.  Every method that produces output returns the bytes
    to write; nothing here does I/O.
    """

    __slots__ = ("_reader", "_active", "_pending_get_values", "_failed")

    def __init__(self) -> None:
        self._reader = _RecordReader(streamed=frozenset((_STDOUT, _STDERR)))
        self._active: set[int] = set()
        self._pending_get_values = 0
        self._failed = False

    @property
    def active_requests(self) -> frozenset[int]:
        return frozenset(self._active)

    @property
    def idle(self) -> bool:
        """No request in flight and no partial record buffered: safe to reuse."""
        return not self._active and not self._failed and self._reader.pending == 0

    def begin_request(
        self,
        request_id: int,
        params: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]],
        *,
        keep_conn: bool = True,
        role: int = Role.RESPONDER,
    ) -> bytes:
        """BEGIN_REQUEST and the whole PARAMS stream, closed."""
        if request_id == NULL_REQUEST_ID or not 0 < request_id <= 0xFFFF:
            raise ValueError(f"request id {request_id} out of range 1..65535")
        if request_id in self._active:
            raise ValueError(f"request id {request_id} is already active")
        self._active.add(request_id)
        flags = BeginFlags.KEEP_CONN if keep_conn else BeginFlags.NONE
        return encode_begin_request(request_id, role, flags) + encode_stream(
            RecordType.PARAMS, request_id, encode_name_values(params), close=True
        )

    def send_stdin(self, request_id: int, data: bytes) -> bytes:
        """A piece of the request body; empty *data* gives no bytes."""
        self._check_active(request_id)
        return encode_stream(RecordType.STDIN, request_id, data)

    def end_stdin(self, request_id: int) -> bytes:
        """The empty STDIN record that ends the body (section 3.3)."""
        self._check_active(request_id)
        return encode_record(RecordType.STDIN, request_id)

    def abort_request(self, request_id: int) -> bytes:
        """ABORT_REQUEST (section 5.4); the request stays active until END_REQUEST."""
        self._check_active(request_id)
        return encode_record(RecordType.ABORT_REQUEST, request_id)

    def get_values(self, names: Iterable[bytes]) -> bytes:
        """A GET_VALUES query (section 4.1); values are sent empty."""
        self._pending_get_values += 1
        return encode_record(
            RecordType.GET_VALUES, NULL_REQUEST_ID, encode_name_values((n, b"") for n in names)
        )

    def _check_active(self, request_id: int) -> None:
        if request_id not in self._active:
            raise ValueError(f"request id {request_id} is not active")

    def receive_data(self, data: bytes) -> list[Event]:
        """Parse *data* and return the events it completes, in order.

        Raises :class:`ProtocolError` on anything an application may not send;
        the connection is then unusable.
        """
        try:
            records = self._reader.feed(data)
            events: list[Event] = []
            append = events.append
            active = self._active
            for rtype, request_id, content in records:
                if rtype == _STDOUT:
                    if request_id not in active:
                        raise ProtocolError(f"STDOUT for unknown request id {request_id}")
                    if content:
                        append(Stdout(request_id, content))
                elif rtype == _STDERR:
                    if request_id not in active:
                        raise ProtocolError(f"STDERR for unknown request id {request_id}")
                    if content:
                        append(Stderr(request_id, content))
                elif rtype == _END_REQUEST:
                    if request_id not in active:
                        raise ProtocolError(f"END_REQUEST for unknown request id {request_id}")
                    app_status, protocol_status = decode_end_request(content)
                    active.discard(request_id)
                    append(EndRequest(request_id, app_status, protocol_status))
                elif rtype == RecordType.GET_VALUES_RESULT:
                    if request_id != NULL_REQUEST_ID:
                        raise ProtocolError("GET_VALUES_RESULT with a non-zero request id")
                    if self._pending_get_values == 0:
                        raise ProtocolError("GET_VALUES_RESULT that answers no query")
                    self._pending_get_values -= 1
                    append(GetValuesResult(dict(decode_name_values(content))))
                elif rtype == RecordType.UNKNOWN_TYPE:
                    if request_id != NULL_REQUEST_ID:
                        raise ProtocolError("UNKNOWN_TYPE with a non-zero request id")
                    append(UnknownType(decode_unknown_type(content)))
                else:
                    raise ProtocolError(f"record type {rtype} is not one an application sends")
            return events
        except ProtocolError:
            self._fail()
            raise

    def connection_lost(self) -> ProtocolError | None:
        """The transport closed: the error to report, if anything was cut short."""
        if self._active:
            ids = ", ".join(str(i) for i in sorted(self._active))
            return ProtocolError(f"connection closed before END_REQUEST (request {ids})")
        if self._reader.pending:
            return ProtocolError("connection closed in the middle of a record")
        return None

    def _fail(self) -> None:
        self._failed = True
        self._reader.closed = True


class ServerConnection:
    """The application's end of a FastCGI connection (a minimal responder).

    PARAMS are collected until their stream closes and then given as one
    :class:`Params` event; the size of that stream is bounded by
    ``max_params_len``.
    """

    def __init__(self, *, max_params_len: int = MAX_PARAMS_LEN) -> None:
        self._reader = _RecordReader()
        self._params: dict[int, bytearray] = {}
        self._requests: set[int] = set()
        self._max_params_len = max_params_len

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for rtype, request_id, content in self._reader.feed(data):
            if rtype == RecordType.BEGIN_REQUEST:
                role, flags = decode_begin_request(content)
                if request_id in self._requests:
                    raise ProtocolError(f"BEGIN_REQUEST for active request id {request_id}")
                self._requests.add(request_id)
                self._params[request_id] = bytearray()
                events.append(BeginRequest(request_id, role, bool(flags & BeginFlags.KEEP_CONN)))
            elif rtype == RecordType.GET_VALUES:
                names = tuple(name for name, _ in decode_name_values(content))
                events.append(GetValues(names))
            elif rtype in (
                RecordType.PARAMS,
                RecordType.STDIN,
                RecordType.DATA,
                RecordType.ABORT_REQUEST,
            ):
                if request_id not in self._requests:
                    # "The Web server ... the application ignores" records for
                    # request ids it does not know (section 3.3).
                    continue
                if rtype == RecordType.PARAMS:
                    buf = self._params.get(request_id)
                    if buf is None:
                        raise ProtocolError("PARAMS after the PARAMS stream was closed")
                    if content:
                        buf += content
                        if len(buf) > self._max_params_len:
                            raise ProtocolError("PARAMS stream exceeds its bound")
                    else:
                        del self._params[request_id]
                        events.append(Params(request_id, tuple(decode_name_values(bytes(buf)))))
                elif rtype == RecordType.STDIN:
                    events.append(Stdin(request_id, content, end=not content))
                elif rtype == RecordType.DATA:
                    events.append(Data(request_id, content, end=not content))
                else:
                    events.append(AbortRequest(request_id))
            else:
                events.append(UnknownType(rtype))
        return events

    def stdout(self, request_id: int, data: bytes, *, close: bool = False) -> bytes:
        return encode_stream(RecordType.STDOUT, request_id, data, close=close)

    def stderr(self, request_id: int, data: bytes, *, close: bool = False) -> bytes:
        return encode_stream(RecordType.STDERR, request_id, data, close=close)

    def end_request(
        self,
        request_id: int,
        app_status: int = 0,
        protocol_status: int = ProtocolStatus.REQUEST_COMPLETE,
    ) -> bytes:
        self._requests.discard(request_id)
        self._params.pop(request_id, None)
        return encode_end_request(request_id, app_status, protocol_status)

    def get_values_result(self, values: Mapping[bytes, bytes]) -> bytes:
        return encode_record(RecordType.GET_VALUES_RESULT, NULL_REQUEST_ID, encode_name_values(values))

    def unknown_type(self, record_type: int) -> bytes:
        return encode_unknown_type(record_type)
