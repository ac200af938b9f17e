"""What fephp checks in a request head above the HTTP/1.1 codec, from the server's side: the Host rule, X-Request-Id, the absolute form.

Shared by both HTTP/1.x protocols (fephp.web.site's channel and
fephp.web.h1): each asks these the same questions of every request.
"""

from __future__ import annotations

import re

__all__ = ["MAX_REQUEST_ID", "REQUEST_ID", "origin_form", "valid_host", "valid_request_id"]

#: The longest X-Request-Id taken from a client (a UUID is 36, nginx's $request_id 32).
MAX_REQUEST_ID = 128
#: Letters, digits and the punctuation of UUIDs, base64 and common trace ids.
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+=/@-]{1,%d}" % MAX_REQUEST_ID)
_BAD_HOST = re.compile(rb"[\x00-\x20\x7f/\\]")


def valid_request_id(value: bytes) -> bool:
    """An X-Request-Id fephp passes on as it came: bounded in length, no space, quote or control byte."""
    return REQUEST_ID.fullmatch(value) is not None


def valid_host(host: bytes) -> bool:
    """A Host value nginx would take: no path, no space or control byte, no "..".

    Like ngx_http_validate_host, this keeps names apps may use verbatim in
    links from carrying a path or a parent-directory step.
    """
    # find(), not "in": a bytes argument costs CPython's bytes.__contains__ a formatted TypeError (it tries an int first).
    if not host or host.find(b"..") >= 0:
        return False
    return not _BAD_HOST.search(host)


def origin_form(uri: bytes) -> bytes:
    """``http://host:port/p?q`` -> ``/p?q`` (and ``http://host?q`` -> ``/?q``); RFC 9112 3.2.2's absolute form made origin form."""
    scheme, sep, rest = uri.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return uri
    cut = len(rest)
    for mark in (b"/", b"?"):
        index = rest.find(mark)
        if index != -1:
            cut = min(cut, index)
    tail = rest[cut:]
    return tail if tail.startswith(b"/") else b"/" + tail
