"""One request and its response as the app sees them, whatever carried them: the Exchange.

The app (:mod:`fephp.web.app`), PHP (:mod:`fephp.web.php`), static files,
compression, early hints, error pages, the access log and the figures speak
this interface and nothing else.  Three things carry an exchange:

- fephp's own HTTP/1.1 protocol (:mod:`fephp.web.h1`), whose request object
  *is* an exchange;
- fephp's HTTP/2 connection (:mod:`fephp.web.http2`), one exchange a stream;
- Twisted Web's ``Request``, adapted (:class:`fephp.web.resource.PHPResource`
  inside anyone's ``twisted.web.server.Site``).

Names are lowercase bytes, values bytes, as on the wire; a header list keeps
the order and the repetitions it was given in.  The request side is complete
when the app is called (the body read, within the site's limits); the
response side is driven by the app: ``start_response``, then ``write`` /
``write_pieces`` any number of times, then ``finish`` (or ``abort``).

An implementation decides compression at its first body write (or at
``finish`` when nothing was written) by calling
:meth:`fephp.web.compress.Compression.begin` with itself, and passes every
later write through the encoder it got; :mod:`fephp.web.adapt` shows how.

Added since the first version (issue 18): ``compression`` (the site's
policy, read by static files for precompressed siblings and by the write
path); ``header_edits`` (the ``headers`` rules' edits, which the carrier
applies with :func:`edit_headers` at its first write, before compression
decides, to the whole head: the site's Server, Date and X-Request-Id too);
``start_response`` may be called again while nothing was sent
(``first_byte_at`` is None): an error page replacing an answer PHP began.
"""

from __future__ import annotations

import enum
from typing import IO, TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Protocol, Sequence, Union, runtime_checkable

if TYPE_CHECKING:
    from ..cgi.rules import HeaderEdit
    from .compress import Compression

__all__ = ["Address", "Exchange", "ExchangeState", "Body", "HeaderList", "edit_headers", "header_value"]

#: Header pairs: lowercase names, raw values, in order.
HeaderList = list[tuple[bytes, bytes]]
#: A request body: bytes, or a readable, seekable binary file; None: no body.
Body = Union[bytes, IO[bytes], None]


class Address(NamedTuple):
    """One end of the connection: an IP address and port, or ``("unix:", 0)`` for a UNIX socket."""

    host: str
    port: int


class ExchangeState(enum.Enum):
    """Where an exchange is; each state only moves forward (LOST may follow any before FINISHED)."""

    #: The request is complete; no response yet.
    RECEIVED = "received"
    #: ``start_response`` was called: status and headers fixed (sent, or held to go with the first bytes).
    RESPONDING = "responding"
    #: ``finish`` was called: the whole response is handed to the transport.
    FINISHED = "finished"
    #: The client went away, or the app called ``abort``: nothing more is sent.
    LOST = "lost"


@runtime_checkable
class Exchange(Protocol):
    """One HTTP request and its response."""

    # -- the request -------------------------------------------------------------

    #: ``b"GET"``, ``b"POST"``...
    method: bytes
    #: The request target as received: origin-form (``/a/b?q``), absolute-form,
    #: ``*``; HTTP/2's ``:path``.
    target: bytes
    #: The target's path (before ``?``) and query (after it, without it), still %-encoded.
    path: bytes
    query: bytes
    #: ``b"HTTP/1.0"``, ``b"HTTP/1.1"`` or ``b"HTTP/2"``.
    version: bytes
    #: Request headers (HTTP/2's ``:authority`` appears as ``host``).
    headers: HeaderList
    #: ``b"https"`` when the client's connection to us (or, behind a trusted
    #: proxy, to it) is TLS, else ``b"http"``.
    scheme: bytes
    #: The client (after the PROXY protocol, and after trusted_proxies when a trusted proxy named one) and our own end.
    client: Address
    server: Address
    #: The whole request body (see :data:`Body`).
    body: Body
    #: The X-Request-Id of this exchange (the client's when well-formed, else one of ours).
    request_id: bytes
    #: The site's response compression policy (:class:`fephp.web.compress.Compression`), None for none.
    compression: Optional["Compression"]
    #: The ``headers`` rules' edits of the response head (:mod:`fephp.cgi.rules`), () for none.
    header_edits: "tuple[HeaderEdit, ...]"

    # -- the response ------------------------------------------------------------

    state: ExchangeState
    #: The status given to ``start_response`` (0 before).
    status: int
    #: Response headers; the app may add to them until ``start_response``,
    #: which replaces them with its own list plus what is already here.
    response_headers: HeaderList
    #: Body bytes handed to the transport so far (after compression).
    bytes_sent: int

    # -- marks for the access log and the figures -----------------------------------

    #: ``time.monotonic()`` when the request head was complete, and at the first response byte.
    started_at: float
    first_byte_at: Optional[float]
    #: What served it: ``"php"``, ``"static"`` or ``"other"``; PHP's backend and its times.
    kind: str
    backend_name: Optional[str]
    php_started_at: Optional[float]
    php_ended_at: Optional[float]

    def header(self, name: bytes) -> Optional[bytes]:
        """The value of request header *name* (lowercase), several joined with ``", "``; None when absent."""

    def start_response(self, status: int, headers: HeaderList, reason: Optional[bytes] = None) -> None:
        """Fix the status and headers; they go out with the first body bytes or at ``finish``.

        *headers* (lowercase names) are taken over, not copied: the result
        is what ``response_headers`` held (kept first), then *headers*.
        Called again before any byte went out, it starts the response anew
        from what ``response_headers`` held before the first call.
        """

    def write(self, data: bytes) -> None:
        """Send body bytes (none for HEAD, 204 and 304: the transport drops them)."""

    def write_pieces(self, pieces: Sequence[Union[bytes, memoryview]]) -> None:
        """Send body bytes given as pieces, as if joined (one gathered send where the transport can)."""

    def finish(self) -> None:
        """The response is complete."""

    def abort(self) -> None:
        """Stop the response where it is: the client sees it cut (connection closed, or the stream reset)."""

    def informational(self, status: int, headers: HeaderList) -> None:
        """Send a 1xx response (103 Early Hints) before the final one; dropped where the client cannot take one."""

    def register_producer(self, producer: Any, streaming: bool) -> None:
        """Have *producer* paused and resumed as the client takes the response (Twisted's producer contract)."""

    def unregister_producer(self) -> None:
        """Forget the producer registered last."""

    def when_lost(self, call: Callable[[], object]) -> None:
        """Have *call*() run once if the client goes away before ``finish``."""

    def sendfile_socket(self) -> Optional[Any]:
        """After ``start_response``: the socket to ``os.sendfile`` the body into, or None.

        Only a plain TCP HTTP/1.x connection with nothing queued offers one;
        the held head is sent first.  Bytes sent on it are reported with
        :meth:`sent_directly`.
        """

    def sent_directly(self, count: int) -> None:
        """*count* body bytes went out on :meth:`sendfile_socket`'s socket."""


def header_value(headers: HeaderList, name: bytes) -> Optional[bytes]:
    """The value of *name* in *headers*, several joined with ``", "`` (``"; "`` for cookie); None when absent."""
    found = [value for key, value in headers if key == name]
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    return (b"; " if name == b"cookie" else b", ").join(found)


def edit_headers(headers: HeaderList, edits: "Sequence[HeaderEdit]") -> None:
    """Apply the ``headers`` rules' *edits*, in order, to a response head about to go out (lowercase names)."""
    for edit in edits:
        name = edit.name.lower()
        if edit.op == "remove":
            headers[:] = [pair for pair in headers if pair[0] != name]
        elif edit.op == "set":
            kept = [pair for pair in headers if pair[0] != name]
            # In the place of its first line, as a dict key keeps its place.
            at = next((i for i, pair in enumerate(headers) if pair[0] == name), None)
            if at is None:
                kept.append((name, edit.value))
            else:
                kept.insert(sum(1 for pair in headers[:at] if pair[0] != name), (name, edit.value))
            headers[:] = kept
        else:
            headers.append((name, edit.value))
