"""A sans-io codec of RoadRunner's worker protocol (goridge frames and the HTTP payload): bytes in, events out.

The client end (:class:`ClientConnection`) is what fephp runs over a PHP
worker's stdin and stdout; the worker end (:class:`WorkerConnection`)
stands in for PHP in tests.
"""

from ._client import PID_REQUEST, STOP_REQUEST, ClientConnection, ClientState, encode_control
from ._errors import ProtocolError
from ._events import (
    Event,
    InformationalResponse,
    JobError,
    PidRequest,
    Ping,
    Pong,
    Request,
    ResponseBody,
    ResponseEnd,
    ResponseHead,
    StopRequest,
    StreamStop,
    WorkerReady,
    WorkerStopping,
)
from ._frames import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_LEN,
    MAX_OPTIONS,
    MAX_PAYLOAD_FIELD,
    VERSION_1,
    Frame,
    FrameFlags,
    FrameHeader,
    StreamFlags,
    encode_frame,
    header_crc,
    parse_header,
)
from ._http import (
    HeaderPairs,
    UploadedFile,
    UploadTree,
    canonical_header_name,
    cookies_from_headers,
    encode_request_context,
    parse_response_context,
)
from ._reader import NEED_DATA, FrameReader, NeedData
from ._worker import WorkerConnection, response_context

__all__ = [
    "ClientConnection",
    "ClientState",
    "DEFAULT_MAX_PAYLOAD",
    "Event",
    "Frame",
    "FrameFlags",
    "FrameHeader",
    "FrameReader",
    "HEADER_LEN",
    "HeaderPairs",
    "InformationalResponse",
    "JobError",
    "MAX_OPTIONS",
    "MAX_PAYLOAD_FIELD",
    "NEED_DATA",
    "NeedData",
    "PID_REQUEST",
    "PidRequest",
    "Ping",
    "Pong",
    "ProtocolError",
    "Request",
    "ResponseBody",
    "ResponseEnd",
    "ResponseHead",
    "STOP_REQUEST",
    "StopRequest",
    "StreamFlags",
    "StreamStop",
    "UploadTree",
    "UploadedFile",
    "VERSION_1",
    "WorkerConnection",
    "WorkerReady",
    "WorkerStopping",
    "canonical_header_name",
    "cookies_from_headers",
    "encode_control",
    "encode_frame",
    "encode_request_context",
    "header_crc",
    "parse_header",
    "parse_response_context",
    "response_context",
]
