"""Request facts -> the CGI environment sent to PHP as FastCGI PARAMS (RFC 3875 section 4.1).

The environment is built from the request alone and inherits nothing from
``os.environ`` (twcgi copies the server's environment into every script's).
Variables and values follow nginx's ``fastcgi_params`` so that ``$_SERVER``
looks the same to an application moved from nginx:

* CONTENT_TYPE and CONTENT_LENGTH are always present, "" when the request
  has none, exactly as nginx sends ``$content_type`` / ``$content_length``.
  php-fpm reads the body by CONTENT_LENGTH alone (it never waits for an
  empty STDIN record to learn the length), so a body without it is lost or
  makes the script block; "" means no body and php-fpm reads it as 0.  The
  caller therefore sets ``content_length`` for every request with a body,
  buffering a chunked body first as nginx does, and leaves it None only
  when there is none.
* Every request header also becomes HTTP_*, Content-Type and Content-Length
  included (nginx passes them as HTTP_CONTENT_TYPE / HTTP_CONTENT_LENGTH
  too, and some applications read them there).
"""

from __future__ import annotations

import binascii
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .._compat import SLOTS
from .routing import Script

__all__ = ["RequestFacts", "build_env", "HEADER_NAME_CACHE_SIZE"]


@dataclass(**SLOTS)
class RequestFacts:
    """What the HTTP layer knows about a request, as received; never changed once made.

    Not a frozen dataclass, unlike the codec's events: one is made for
    every PHP request, and a frozen dataclass's ``__init__`` sets each of
    these 13 fields through ``object.__setattr__`` (about 9,000
    instructions per request on CPython, against plain slot stores).
    """

    method: bytes
    raw_uri: bytes  # the request target exactly as received: "/a%20b.php/x?q=1"
    query_string: bytes  # after "?", as received; b"" if none
    headers: Sequence[tuple[bytes, bytes]]  # in order, names as received
    content_length: int | None  # the body's length; None only when there is no body
    content_type: bytes | None
    server_protocol: bytes  # b"HTTP/1.1"
    https: bool
    remote_addr: str
    remote_port: int
    server_addr: str
    server_port: int
    host: bytes | None  # the Host header's value


# nginx's ignore_invalid_headers with underscores_in_headers off: a name with
# "_" (or anything but letters, digits and "-") is dropped, so a header
# "Content_Length" cannot arrive as HTTP_CONTENT_LENGTH next to the real one,
# nor "X_Forwarded_For" pose as "X-Forwarded-For".
_HEADER_NAME = re.compile(rb"[A-Za-z0-9-]+")

# Header name as received -> HTTP_* name (None: dropped).  Names repeat from
# request to request, so this saves the match, upper() and replace() per
# header; cleared when full so that random names cannot grow it.
HEADER_NAME_CACHE_SIZE = 1024
_env_names: dict[bytes, bytes | None] = {}


def _env_name(name: bytes) -> bytes | None:
    """The HTTP_* variable for header *name*, or None if the header must not reach PHP."""
    try:
        return _env_names[name]
    except KeyError:
        pass
    env: bytes | None = None
    if _HEADER_NAME.fullmatch(name):
        env = b"HTTP_" + name.upper().replace(b"-", b"_")
        if env == b"HTTP_PROXY":
            # httpoxy (CVE-2016-5385): PHP libraries read $_SERVER['HTTP_PROXY']
            # (getenv('HTTP_PROXY')) as their outgoing proxy.
            env = None
    if len(_env_names) >= HEADER_NAME_CACHE_SIZE:
        _env_names.clear()
    _env_names[name] = env
    return env


def _remote_user(authorization: bytes | None) -> bytes:
    """The user name of the first Authorization header's value when it is Basic, else b""."""
    if authorization is None:
        return b""
    scheme, _, credentials = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return b""
    try:
        decoded = binascii.a2b_base64(credentials.strip())
    except binascii.Error:
        return b""
    user, colon, _ = decoded.partition(b":")
    return user if colon and 0 not in user else b""  # 0: NUL, as an int (see below)


# os.fsencode's own arguments (POSIX), without its two Python-level calls
# per path on every request.
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def _server_name(host: bytes | None, server_addr: str) -> bytes:
    """The Host header without its port, lowercased like nginx's $host; *server_addr* without one."""
    if host:
        if host.startswith(b"["):  # IPv6 literal: "[::1]:8080"
            end = host.find(b"]")
            name = host[: end + 1] if end != -1 else host
        else:
            name = host.partition(b":")[0]
        if name:
            return name.lower()
    return server_addr.encode()


def build_env(
    facts: RequestFacts,
    route: Script,
    *,
    document_root: str,
    server_software: str,
    server_name: str | None = None,
) -> list[tuple[bytes, bytes]]:
    """The CGI environment for running *route* for *facts*, as (name, value) pairs in a fixed order.

    ``server_name`` is the configured name; without one SERVER_NAME is the
    Host header without its port, else the server's address.  Raises
    ValueError on a NUL byte anywhere (the HTTP layer must have refused it).
    """
    # FastCGI can carry NUL, but PHP's $_SERVER and C string APIs truncate at
    # it; the HTTP layer refuses such requests, so reaching here is a bug.
    # A byte as an int: CPython's bytes.__contains__ tries its argument as an int first, and
    # a bytes argument costs it a formatted TypeError (about 2,000 instructions) each time.
    if (
        0 in facts.method
        or 0 in facts.raw_uri
        or 0 in facts.query_string
        or (facts.content_type is not None and 0 in facts.content_type)
        or (facts.host is not None and 0 in facts.host)
    ):
        raise ValueError("NUL byte in the request line, Content-Type or Host")
    content_length = facts.content_length
    if content_length is not None and content_length < 0:
        raise ValueError(f"negative content length {content_length}")

    # Every request header as HTTP_*, first: REMOTE_USER comes from the
    # first Authorization header seen here.
    headers: dict[bytes, bytes] = {}
    authorization: bytes | None = None
    for name, value in facts.headers:
        if 0 in name or 0 in value:
            raise ValueError(f"NUL byte in header {name[:40]!r}")
        key = _env_name(name)
        if key is None:
            continue
        previous = headers.get(key)
        if previous is None:
            headers[key] = value
            if key == b"HTTP_AUTHORIZATION":
                authorization = value
        elif key == b"HTTP_COOKIE":
            # RFC 6265 5.4 allows one Cookie header; HTTP/2 splits it into
            # several fields that must be joined with "; " (RFC 9113 8.2.3).
            headers[key] = previous + b"; " + value
        else:
            headers[key] = previous + b", " + value  # RFC 9110 5.3

    path_info = route.path_info.encode()
    env = [
        # Filesystem paths are encoded as fsencode does (a root configured with
        # undecodable bytes round-trips); URL paths are the decoded UTF-8
        # the router worked on, as nginx's $fastcgi_script_name is.
        (b"SCRIPT_FILENAME", route.script_filename.encode(_FS_ENCODING, _FS_ERRORS)),
        (b"QUERY_STRING", facts.query_string),
        (b"REQUEST_METHOD", facts.method),
        (b"CONTENT_TYPE", facts.content_type or b""),
        (b"CONTENT_LENGTH", b"" if content_length is None else b"%d" % content_length),
        (b"SCRIPT_NAME", route.script_name.encode()),
        # The original target, undecoded, as nginx's $request_uri: routers
        # in WordPress, MediaWiki and Laravel parse it themselves.
        (b"REQUEST_URI", facts.raw_uri),
        (b"DOCUMENT_URI", route.document_uri.encode()),
        (b"DOCUMENT_ROOT", document_root.encode(_FS_ENCODING, _FS_ERRORS)),
        (b"SERVER_PROTOCOL", facts.server_protocol),
        (b"REQUEST_SCHEME", b"https" if facts.https else b"http"),
    ]
    if facts.https:
        env.append((b"HTTPS", b"on"))  # absent otherwise: nginx's "$https if_not_empty"; PHP tests !empty()
    env += [
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"SERVER_SOFTWARE", server_software.encode()),
        (b"REMOTE_ADDR", facts.remote_addr.encode()),
        # "" for no port (a UNIX socket, or a client a proxy named without
        # one), as nginx's $remote_port.
        (b"REMOTE_PORT", b"%d" % facts.remote_port if facts.remote_port else b""),
        (b"SERVER_ADDR", facts.server_addr.encode()),
        (b"SERVER_PORT", b"%d" % facts.server_port),
        (
            b"SERVER_NAME",
            server_name.encode() if server_name else _server_name(facts.host, facts.server_addr),
        ),
        # php-cgi built with --enable-force-cgi-redirect refuses to run without it.
        (b"REDIRECT_STATUS", b"200"),
        # nginx's $remote_user: the user name of a Basic Authorization header,
        # whether or not the server checked it (RFC 3875 4.1.11), else "".
        (b"REMOTE_USER", _remote_user(authorization)),
        # Always present, "" when empty, as nginx sends $fastcgi_path_info.
        (b"PATH_INFO", path_info),
    ]
    if path_info:
        # RFC 3875 4.1.6: only when PATH_INFO is non-empty; the document
        # root + PATH_INFO, the virtual-to-physical mapping of 4.1.5.
        env.append((b"PATH_TRANSLATED", document_root.rstrip("/").encode(_FS_ENCODING, _FS_ERRORS) + path_info))
    env += headers.items()
    return env
