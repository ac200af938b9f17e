"""The web server's end of a FastCGI connection as a state machine, from fephp's side: bytes in, events out."""

from __future__ import annotations

from typing import Iterable, Mapping, cast

from ._errors import ProtocolError
from ._events import (
    EndRequest,
    Event,
    GetValuesResult,
    Stderr,
    Stdout,
    UnknownType,
)
from ._reader import RecordReader
from ._records import (
    _HEADER,
    NULL_REQUEST_ID,
    VERSION_1,
    BeginFlags,
    RecordType,
    Role,
    decode_end_request,
    decode_name_values,
    decode_unknown_type,
    encode_name_values,
    encode_record,
    encode_request_head,
    encode_stream,
)

__all__ = ["ClientConnection"]

_STDOUT = RecordType.STDOUT
_STDERR = RecordType.STDERR
_END_REQUEST = RecordType.END_REQUEST
# Plain ints for struct: an enum member costs a conversion at every pack.
_STDIN = int(RecordType.STDIN)
_KEEP_CONN = int(BeginFlags.KEEP_CONN)


class ClientConnection:
    """The web server's end of one FastCGI connection.

    Requests are started with :meth:`begin_request`, fed with
    :meth:`send_stdin`, and end when an :class:`EndRequest` event comes out of
    :meth:`receive_data`.  Every method that produces output returns the bytes
    to write; nothing here does I/O.
    """

    __slots__ = ("_reader", "_active", "_pending_get_values", "_failed")

    def __init__(self) -> None:
        self._reader = RecordReader(streamed=frozenset((_STDOUT, _STDERR)))
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
        return encode_request_head(request_id, role, _KEEP_CONN if keep_conn else 0, params)

    def send_stdin(self, request_id: int, data: bytes) -> bytes:
        """A piece of the request body; empty *data* gives no bytes."""
        self._check_active(request_id)
        if not data:
            return b""
        return encode_stream(RecordType.STDIN, request_id, data)

    def end_stdin(self, request_id: int) -> bytes:
        """The empty STDIN record that ends the body (section 3.3)."""
        self._check_active(request_id)
        return _HEADER.pack(VERSION_1, _STDIN, request_id, 0, 0)  # no content, no padding

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
            # Only STDOUT and STDERR are streamed: every other content is whole bytes.
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
                        # Log lines, rare and decoded: bytes, never a view.
                        append(Stderr(request_id, bytes(content)))
                elif rtype == _END_REQUEST:
                    if request_id not in active:
                        raise ProtocolError(f"END_REQUEST for unknown request id {request_id}")
                    # Whole bytes (not streamed); typing.cast would be a call per request.
                    app_status, protocol_status = decode_end_request(content)  # type: ignore[arg-type]
                    active.discard(request_id)
                    append(EndRequest(request_id, app_status, protocol_status))
                elif rtype == RecordType.GET_VALUES_RESULT:
                    if request_id != NULL_REQUEST_ID:
                        raise ProtocolError("GET_VALUES_RESULT with a non-zero request id")
                    if self._pending_get_values == 0:
                        raise ProtocolError("GET_VALUES_RESULT that answers no query")
                    self._pending_get_values -= 1
                    append(GetValuesResult(dict(decode_name_values(cast(bytes, content)))))
                elif rtype == RecordType.UNKNOWN_TYPE:
                    if request_id != NULL_REQUEST_ID:
                        raise ProtocolError("UNKNOWN_TYPE with a non-zero request id")
                    append(UnknownType(decode_unknown_type(cast(bytes, content))))
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
