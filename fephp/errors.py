"""Errors a backend (FastCGI pool or php-cgi) raises, each knowing its HTTP meaning.

The web resource turns any of these into a short page with ``http_status``;
the message is for the log, never for the client.
"""

from __future__ import annotations

from .fastcgi import ProtocolError

__all__ = [
    "BackendError",
    "ConnectError",
    "BackendClosed",
    "BackendProtocolError",
    "ResponseTimeout",
    "PoolOverloaded",
    "QueueTimeout",
    "ProtocolError",
]


class BackendError(Exception):
    """Base of every failure to get a response from PHP."""

    http_status = 502


class ConnectError(BackendError):
    """No connection to the backend could be made within the connect timeout."""

    http_status = 502


class BackendClosed(BackendError):
    """The backend closed the connection before the request ended."""

    http_status = 502


class BackendProtocolError(BackendError):
    """The backend sent something that is not valid FastCGI or CGI output."""

    http_status = 502


class ResponseTimeout(BackendError):
    """The backend sent nothing for longer than the response timeout."""

    http_status = 504


class PoolOverloaded(BackendError):
    """The wait queue for a backend connection is full."""

    http_status = 503


class QueueTimeout(BackendError):
    """A request waited too long in the queue for a free backend connection."""

    http_status = 503
