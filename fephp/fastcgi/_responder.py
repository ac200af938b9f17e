"""The application's end of a FastCGI connection (a minimal responder), from PHP's side: bytes in, events out.

fephp never runs it in production: it stands in for php-fpm in tests
(:mod:`fephp.testing`) and is the reference the client end is checked
against.
"""

from __future__ import annotations

from typing import Mapping, cast

from ._errors import ProtocolError
from ._events import (
    AbortRequest,
    BeginRequest,
    Data,
    Event,
    GetValues,
    Params,
    Stdin,
    UnknownType,
)
from ._reader import MAX_PARAMS_LEN, RecordReader
from ._records import (
    NULL_REQUEST_ID,
    BeginFlags,
    ProtocolStatus,
    RecordType,
    decode_begin_request,
    decode_name_values,
    encode_end_request,
    encode_name_values,
    encode_record,
    encode_stream,
    encode_unknown_type,
)

__all__ = ["ResponderConnection"]


class ResponderConnection:
    """The application's end of a FastCGI connection (a minimal responder).

    PARAMS are collected until their stream closes and then given as one
    :class:`Params` event; the size of that stream is bounded by
    ``max_params_len``.
    """

    def __init__(self, *, max_params_len: int = MAX_PARAMS_LEN) -> None:
        self._reader = RecordReader()
        self._params: dict[int, bytearray] = {}
        self._requests: set[int] = set()
        self._max_params_len = max_params_len

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for rtype, request_id, part in self._reader.feed(data):
            content = cast(bytes, part)  # no type is streamed on this side: every content is whole bytes
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
