"""The HTTP payload of RoadRunner's worker protocol: the request context fephp sends, the response context it reads.

A request is one frame whose payload is the *context* (JSON) followed by
the body, the context's length in the frame's one option
(roadrunner-server/pool ``worker.go`` sendFrame: ``WriteOptions(len(Context))``;
roadrunner-php/worker ``PayloadFactory::fromFrame`` cuts ``substr($payload,
0, $frame->options[0])``).  The context's keys and their order are those of
roadrunner-server/http ``handler/request.go``'s ``Request`` struct, which
roadrunner-php/http ``HttpWorker::arrayToRequest`` reads:

``remoteAddr`` (the client's IP, no port: FetchIP), ``protocol``
("HTTP/1.1"), ``method``, ``uri`` (absolute: scheme, host, path, query),
``headers`` (name -> list of values, names in Go's canonical form),
``cookies`` (name -> value), ``rawQuery``, ``parsed`` (true when the body
is a form fephp parsed into JSON), ``uploads`` (null, or the tree of
uploaded files) and ``attributes``.

A response frame carries ``{"status": N, "headers": {name: [values]}}``
as its context (HttpWorker::createRespondPayload; Go's ``Response``
struct in ``handler/response.go``) and the body.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Union

from .._compat import SLOTS
from ._errors import ProtocolError

__all__ = [
    "UploadedFile",
    "UploadTree",
    "HeaderPairs",
    "canonical_header_name",
    "cookies_from_headers",
    "encode_request_context",
    "parse_response_context",
]

#: Response headers as fephp's web layer takes them.
HeaderPairs = tuple[tuple[bytes, bytes], ...]

#: RFC 9110 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: RFC 9110 5.5: CR, LF and NUL are refused in a field value (a worker could split the response with them).
_BAD_VALUE = re.compile(r"[\r\n\0]")


@dataclass(frozen=True, **SLOTS)
class UploadedFile:
    """One uploaded file as the worker sees it (roadrunner-server/http ``handler/uploads.go`` FileUpload).

    ``error`` is PHP's ``UPLOAD_ERR_*`` (0 for a file received whole);
    ``tmp_name`` is where fephp put its bytes.
    """

    name: str
    mime: str
    size: int
    tmp_name: str
    error: int = 0

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "mime": self.mime, "size": self.size, "error": self.error, "tmpName": self.tmp_name}


#: Uploads as PHP nests them: ``file`` -> one file, ``file[]`` -> a list, ``file[a]`` -> a map.
UploadTree = Union[UploadedFile, Sequence["UploadTree"], Mapping[str, "UploadTree"]]


def canonical_header_name(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``, which RoadRunner's request headers pass: ``x-foo`` -> ``X-Foo``.

    A name that is not a token is left as it is, as Go does.
    """
    if not _TOKEN.fullmatch(name):
        return name
    return "-".join(part.capitalize() for part in name.split("-"))


#: A cookie value's bytes (Go's net/http validCookieValueByte): 0x20..0x7E but '"', ';' and '\\'.
_COOKIE_VALUE = re.compile(r"[\x20\x21\x23-\x3a\x3c-\x5b\x5d-\x7e]*")
#: url.QueryUnescape refuses a '%' without two hex digits after it.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def cookies_from_headers(values: Iterable[Union[str, bytes]]) -> dict[str, str]:
    """The ``cookies`` map from the request's Cookie header lines, as roadrunner-server/http builds it.

    That is Go's ``Request.Cookies()`` then ``url.QueryUnescape`` of each
    value (handler/request.go): pairs split on ``;``, a name that is not a
    token or a value with a byte Go refuses skips that pair, surrounding
    double quotes are dropped, ``+`` becomes a space and ``%XX`` its byte,
    a bad ``%`` escape skips the pair, and a later pair of the same name wins.
    """
    cookies: dict[str, str] = {}
    for line in values:
        for part in _text(line).split(";"):
            name, _, value = part.strip(" \t\r\n").partition("=")
            name = name.strip(" \t\r\n")
            if not _TOKEN.fullmatch(name):
                continue
            if len(value) > 1 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not _COOKIE_VALUE.fullmatch(value) or _BAD_ESCAPE.search(value):
                continue
            cookies[name] = unquote_to_bytes(value.replace("+", " ")).decode("utf-8", "replace")
    return cookies


def _text(value: Union[str, bytes]) -> str:
    # Go's json.Marshal replaces bytes that are not UTF-8 by U+FFFD; so do we.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _uploads_json(tree: UploadTree) -> object:
    if isinstance(tree, UploadedFile):
        return tree.to_json()
    if isinstance(tree, Mapping):
        return {str(key): _uploads_json(sub) for key, sub in tree.items()}
    return [_uploads_json(sub) for sub in tree]


def encode_request_context(
    *,
    method: str,
    uri: str,
    headers: Iterable[tuple[Union[str, bytes], Union[str, bytes]]],
    remote_addr: str,
    protocol: str = "HTTP/1.1",
    raw_query: str = "",
    cookies: Union[Mapping[str, str], Iterable[tuple[str, str]]] = (),
    uploads: Union[Mapping[str, UploadTree], None] = None,
    attributes: Union[Mapping[str, Union[str, Sequence[str]]], None] = None,
    parsed: bool = False,
) -> bytes:
    """The request context, compact JSON in UTF-8, from plain values.

    Repeated headers become one name with several values, in the order
    received; a later cookie of the same name wins (Go's map assignment).
    """
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(canonical_header_name(_text(name)), []).append(_text(value))
    cookie_map = dict(cookies.items() if isinstance(cookies, Mapping) else cookies)
    context = {
        "remoteAddr": remote_addr,
        "protocol": protocol,
        "method": method,
        "uri": uri,
        "headers": grouped,
        "cookies": cookie_map,
        "rawQuery": raw_query,
        "parsed": parsed,
        "uploads": None if uploads is None else {str(k): _uploads_json(v) for k, v in uploads.items()},
        "attributes": {k: v if isinstance(v, str) else list(v) for k, v in (attributes or {}).items()},
    }
    text = json.dumps(context, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace")


def _header_values(name: object, values: object) -> list[tuple[bytes, bytes]]:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ProtocolError(f"response header name {name!r} is not a token")
    # Go's Response struct is map[string][]string: a bare string does not decode.
    if not isinstance(values, list):
        raise ProtocolError(f"response header {name} is {type(values).__name__}, not a list of strings")
    out = []
    raw_name = name.encode("ascii")
    for value in values:
        if not isinstance(value, str):
            raise ProtocolError(f"response header {name} has a {type(value).__name__} value, not a string")
        if _BAD_VALUE.search(value):
            raise ProtocolError(f"response header {name} has CR, LF or NUL in its value")
        out.append((raw_name, value.encode("utf-8")))
    return out


def parse_response_context(data: bytes) -> tuple[int, HeaderPairs]:
    """(status, headers) of a response context; :class:`ProtocolError` for anything else.

    The status is 100..599 but not 101: roadrunner-server/http refuses a
    status outside 100..599 and ignores 101 (a worker cannot switch
    protocols over a pipe); 1xx statuses other than 101 are informational
    (103 Early Hints).  ``headers`` may be absent (Go's zero map) or ``[]``
    (PHP's ``json_encode`` of an empty array).
    """
    try:
        context = json.loads(data)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"response context is not JSON: {e}") from None
    if not isinstance(context, dict):
        raise ProtocolError(f"response context is a JSON {type(context).__name__}, not an object")
    status = context.get("status")
    if type(status) is not int:  # noqa: E721 - a JSON true is a Python bool, an int subclass
        raise ProtocolError(f"response status {status!r} is not an integer")
    if not 100 <= status <= 599 or status == 101:
        raise ProtocolError(f"response status {status} out of range")
    headers = context.get("headers", {})
    if headers == []:
        headers = {}
    if not isinstance(headers, dict):
        raise ProtocolError(f"response headers are a JSON {type(headers).__name__}, not an object")
    pairs: list[tuple[bytes, bytes]] = []
    for name, values in headers.items():
        pairs.extend(_header_values(name, values))
    return status, tuple(pairs)
