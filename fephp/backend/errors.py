"""Errors a backend (FastCGI pool or php-cgi) raises, each knowing its HTTP meaning.

The web resource turns any of these into a short page with ``http_status``;
the message is for the log, never for the client.
"""

from __future__ import annotations

from ..fastcgi import ProtocolError, ProtocolStatus

__all__ = [
    "BackendError",
    "ConnectError",
    "BackendClosed",
    "BackendProtocolError",
    "ResponseTimeout",
    "PoolOverloaded",
    "QueueTimeout",
    "RequestRejected",
    "ProtocolError",
]


class BackendError(Exception):
    """Base of every failure to get a response from PHP."""

    http_status = 502


class ConnectError(BackendError):
    """No connection to the backend could be made within the connect timeout."""

    http_status = 502


class BackendClosed(BackendError):
    """The backend closed the connection before the request ended.

    ``response_started`` tells whether any response byte had arrived;
    ``never_ran`` that the backend provably threw the request away unread
    (php-fpm closing a kept connection after ``pm.max_requests``, seen on a
    UNIX socket).  :func:`fephp.backend.pool.should_retry` decides from both.
    """

    http_status = 502

    def __init__(
        self, message: str = "connection closed", *, response_started: bool = False, never_ran: bool = False
    ) -> None:
        super().__init__(message)
        self.response_started = response_started
        self.never_ran = never_ran
        #: Set by a pool that would have sent the request again itself
        #: (:func:`fephp.backend.pool.should_retry`) but leaves that to the
        #: balancer above it, which sends it to another backend.
        self.resendable = False


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


class RequestRejected(BackendError):
    """The backend ended the request without running it (END_REQUEST's protocol status).

    OVERLOADED and CANT_MPX_CONN mean "try later" (503); UNKNOWN_ROLE is a
    misconfigured backend (502).
    """

    def __init__(self, protocol_status: int, app_status: int = 0) -> None:
        self.protocol_status = protocol_status
        self.app_status = app_status
        try:
            name = ProtocolStatus(protocol_status).name
        except ValueError:
            name = f"protocol status {protocol_status}"
        super().__init__(f"backend rejected the request: {name}")
        if protocol_status in (ProtocolStatus.OVERLOADED, ProtocolStatus.CANT_MPX_CONN):
            self.http_status = 503
