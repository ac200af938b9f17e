"""Error pages, the one place a failure becomes what the client sees.

Every page names its status and nothing else: no path, no backend address,
no PHP message (those go to the log).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Optional

from .exchange import HeaderList

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


def send_error(exchange: Any, status: int, headers: Optional[HeaderList] = None) -> None:
    """Answer *exchange* (an :class:`fephp.web.exchange.Exchange`) with *status* and its page, and finish it.

    *headers* (lowercase names) go out beside the page's own.
    """
    body = error_page(status)
    head = [(b"content-type", b"text/html; charset=utf-8")]
    if headers:
        head += headers
    head.append((b"content-length", b"%d" % len(body)))
    exchange.start_response(status, head)
    exchange.write(body)
    exchange.finish()


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
