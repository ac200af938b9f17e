"""Error pages, the one place a failure becomes what the client sees.

Every page names its status and nothing else: no path, no backend address,
no PHP message (those go to the log).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Optional

from twisted.web.server import Request

__all__ = ["error_page", "raw_error_response", "send_error"]


def error_page(status: int) -> bytes:
    """A short HTML page for *status* that discloses nothing else."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} {phrase}"
    return (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1></body></html>\n"
    ).encode()


def send_error(request: Request, status: int, headers: Optional[dict[bytes, bytes]] = None) -> bytes:
    """Set *status* with its page on *request*; returns the body for render()."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    body = error_page(status)
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def raw_error_response(status: int) -> bytes:
    """A whole HTTP/1.1 response for *status* that closes the connection.

    For the channel's own refusals, written straight to the transport where
    no Request can answer (a head too long to parse, a body over the limit).
    """
    body = error_page(status)
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, HTTPStatus(status).phrase.encode(), len(body))
    ) + body
