"""The one door to Twisted's private names: each use behind a named function, from fephp's side.

fephp reaches past Twisted's public API in a few places, for speed on the
request path or for a behaviour Twisted has no public switch for.  Every such
use is here and nowhere else, with what it relies on and the release it was
checked against (Twisted 23.10 to 26.10), and ``tests/unit/test_twisted_door.py``
exercises each against the installed Twisted, so that an upgrade that changes
one fails there, by name, instead of somewhere on the request path.
"""

from __future__ import annotations

import errno
import select
from typing import Any, Optional

from twisted.internet.endpoints import _parseServer
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.tcp import Connection
from twisted.web import http, server
from twisted.web.http_headers import Headers

__all__ = [
    "adopt_listening_port",
    "channel_between_requests",
    "channel_dispatch",
    "channel_head_progress",
    "channel_partial_line",
    "channel_receiving",
    "chunk_left",
    "endpoint_arguments",
    "epoll_poll_and_dispatch",
    "header_name",
    "headers_from_raw",
    "headers_raw",
    "raise_listen_errors",
    "refuse_malformed_heads_with",
    "request_disconnected",
    "select_and_dispatch",
    "send_now",
    "send_pieces_now",
    "site_request_write",
    "idle_socket",
]


def send_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, but sent by this call when the socket can take it.

    Twisted's ``write()`` queues the bytes and registers the socket for
    writing; the reactor sends them on its next turn and unregisters it: two
    ``epoll_ctl`` calls and a loop iteration for every response.  With nothing
    queued, sending now is the same thing sooner.  Whatever the socket does
    not take, and any error, goes through ``write()`` as usual, which keeps
    Twisted's ordering, backpressure and error handling.  Any other transport
    (TLS, in-memory, a wrapper) just gets ``write()``: a TLS wrapper would
    even lend its plain socket through attribute lookup.

    Relies on ``tcp.Connection._tempDataLen`` (bytes written since the last
    flush into ``dataBuffer``, in abstract.FileDescriptor since Twisted 8).
    """
    if _can_send_now(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    # Twisted's buffer takes bytes only.
    transport.write(data if type(data) is bytes else bytes(data))


def _can_send_now(transport: Any) -> bool:
    return bool(
        isinstance(transport, Connection)
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataLen
        and not transport.disconnecting
        and transport.connected
    )


def idle_socket(transport: Any) -> Any:
    """The socket of *transport* when it is a plain TCP connection with nothing queued, else None.

    For writing past Twisted's buffer (``os.sendfile``): only then do bytes
    written to the socket keep their order with Twisted's.  Relies on what
    :func:`send_now` relies on.
    """
    return transport.socket if _can_send_now(transport) else None


def send_pieces_now(transport: Any, pieces: list[Any]) -> None:
    """:func:`send_now` of the concatenation of *pieces* (bytes or memoryviews), without concatenating them.

    With nothing queued, one ``sendmsg`` gathers the pieces in the kernel:
    a large response goes from the FastCGI read to the client's socket
    with no copy in Python.  Whatever the socket does not take is joined
    into bytes (Twisted's buffer takes bytes only) and goes through
    ``write()``; so does everything for any other transport.  Relies on
    what :func:`send_now` relies on.
    """
    if _can_send_now(transport):
        try:
            sent = transport.socket.sendmsg(pieces)
        except OSError:
            sent = 0
        if sent:
            rest = []
            for piece in pieces:
                size = len(piece)
                if sent >= size:
                    sent -= size
                    continue
                rest.append(piece[sent:] if sent else piece)
                sent = 0
            if not rest:
                return
            pieces = rest
    transport.write(b"".join(pieces))


def channel_between_requests(channel: Any) -> bool:
    """Whether an HTTPChannel waits for the first line of a new request, with nothing buffered.

    Relies on LineReceiver's ``_buffer`` and ``_busyReceiving`` and on
    HTTPChannel's ``_handlingRequest`` and its name-mangled ``__first_line``
    (1 before a request line, 2 after one tolerated empty line, 0 inside a
    head), all in twisted.web.http since Twisted 16.
    """
    return bool(
        channel.line_mode
        and not channel._buffer
        and not channel._busyReceiving
        and not channel._handlingRequest
        and channel._HTTPChannel__first_line == 1
    )


def channel_dispatch(channel: Any, request: Any, method: bytes, target: bytes, version: bytes) -> None:
    """Hand *request*, whose whole bodiless head was parsed elsewhere, to its channel.

    What HTTPChannel.allContentReceived does once a head and an empty body
    are in: the idle timeout is saved and stopped while the request is
    handled (``_savedTimeOut``, restored by requestDone), the channel is
    marked busy (``_handlingRequest``: later bytes are buffered for the next
    request) and put in raw mode, then the request is told it has arrived.
    """
    if channel.timeOut:
        channel._savedTimeOut = channel.setTimeout(None)
    channel._handlingRequest = True
    channel.setRawMode()
    request.requestReceived(method, target, version)


def channel_head_progress(channel: Any) -> tuple[bool, int]:
    """Where Twisted's parser of an HTTPChannel is in a request head: (before the request line, bytes so far).

    Relies on HTTPChannel's name-mangled ``__first_line`` (nonzero until the
    request line is read) and ``_receivedHeaderSize`` (the bytes of the
    head's lines so far, checked against ``totalHeadersSize``), both in
    twisted.web.http since Twisted 16.
    """
    return bool(channel._HTTPChannel__first_line), int(channel._receivedHeaderSize)


def channel_receiving(channel: Any) -> Optional[str]:
    """What an HTTPChannel is reading: ``"head"`` (a request head has begun), ``"body"`` (its body), or None.

    None means between requests with nothing buffered, or answering a
    request (later bytes are then only buffered).  Relies on HTTPChannel's
    ``_handlingRequest`` and name-mangled ``__first_line`` (0 once a request
    line was read) and on LineReceiver's ``line_mode`` (raw mode while a
    body is read) and ``_buffer`` (a line begun), since Twisted 16.
    """
    if channel._handlingRequest:
        return None
    if not channel.line_mode:
        return "body"
    if channel._buffer or channel._HTTPChannel__first_line == 0:
        return "head"
    return None


def channel_partial_line(channel: Any) -> bytes:
    """The bytes of a line an HTTPChannel has begun and not ended (LineReceiver's ``_buffer``, since Twisted 16)."""
    return bytes(channel._buffer)


def chunk_left(channel: Any) -> Optional[int]:
    """Bytes of the current chunk of a chunked request body that its size line announced and that have not come yet.

    None outside a chunk's data.  Relies on HTTPChannel's
    ``_transferDecoder`` (the body's decoder while a body is read) and on
    ``_ChunkedTransferDecoder``'s ``state`` ("BODY" inside a chunk's data)
    and ``length`` (what is left of it), since Twisted 16.
    """
    decoder = channel._transferDecoder
    if decoder is None or getattr(decoder, "state", None) != "BODY":
        return None
    return int(decoder.length)


def refuse_malformed_heads_with(channel_class: Any, refuse: Any) -> None:
    """Make HTTPChannel answer a malformed request head by calling ``refuse(channel, 400)``.

    Twisted's own answer (``_respondToBadRequestAndDisconnect``, since
    Twisted 16) is a bare "400 Bad Request" with no body and no
    Connection: close; fephp's pages say what they are and close.
    """
    channel_class._respondToBadRequestAndDisconnect = lambda channel: refuse(channel, 400)


def request_disconnected(request: Any) -> bool:
    """Whether the client of a twisted.web Request has gone (``Request._disconnected``, since Twisted 8)."""
    return bool(request._disconnected)


def headers_raw(headers: Headers) -> dict[bytes, list[bytes]]:
    """The dict behind *headers* (name as Headers spells it -> its values), to read and fill on the request path.

    Headers' own methods encode and canonicalize the name and sanitize each
    value on every call.  Whoever writes to this dict must give what they
    would have made: a name from :func:`header_name`, values without CR or
    LF (parsed lines, or values of our own), and never an empty list.

    Relies on ``Headers._rawHeaders`` (that dict, since Twisted 8; a slot
    since 22).
    """
    return headers._rawHeaders


def headers_from_raw(raw: dict[bytes, list[bytes]]) -> Headers:
    """A Headers holding *raw* itself (no copy), whose names and values are as :func:`headers_raw` requires."""
    headers = Headers()
    headers._rawHeaders = raw
    return headers


def site_request_write(request: Any, data: bytes) -> None:
    """``twisted.web.server.Request.write(request, data)``, past its two header lookups when they can change nothing.

    server.Request's write adds a default Content-Type (nothing to add when
    ``defaultContentType`` is None, as FrontRequest's), drops the body of
    a HEAD it is faking as a GET (``_inFakeHead``, since Twisted 8) and runs
    the resource's encoder (``_encoder``, since Twisted 9); without those it
    is http.Request's write.
    """
    if request.defaultContentType is None and not request._inFakeHead and not request._encoder:
        _http_write(request, data)
    else:
        _site_write(request, data)


# Bound once: twisted.web.http is a deprecation proxy whose every attribute
# lookup is a Python call.
_http_write = http.Request.write
_site_write = server.Request.write


#: Header names seen, and how Headers spells each (bounded: names are the peers' to choose).
_header_names: dict[bytes, bytes] = {}
_HEADER_NAMES_KEPT = 1000


def header_name(name: bytes) -> bytes:
    """*name*, a valid token, as Headers keys it ("user-agent" -> "User-Agent"), learnt from Headers once per spelling."""
    known = _header_names.get(name)
    if known is not None:
        return known
    probe = Headers()
    probe.addRawHeader(name, b"")
    known = next(iter(probe.getAllRawHeaders()))[0]
    if len(_header_names) < _HEADER_NAMES_KEPT:
        _header_names[name] = known
    return known


def raise_listen_errors(service: Any) -> Any:
    """Make a StreamServerEndpointService raise when its port cannot be bound, instead of logging it.

    ``_raiseSynchronously`` (twisted.application.internet, since Twisted
    12.2) is what twistd's own ``strports`` services use, so that a server
    that cannot listen stops with the error instead of running and serving
    nothing.  Returns *service*.
    """
    service._raiseSynchronously = True
    return service


def endpoint_arguments(description: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A server endpoint string's positional and keyword arguments, unescaped.

    ``twisted.internet.endpoints._parseServer`` is the parser behind
    serverFromString (since Twisted 10.2); fephp uses it to check a
    ``systemd:`` string, whose endpoint cannot be built outside the unit
    that passes the sockets.
    """
    _, args, kwargs = _parseServer(description, None)
    return tuple(args), dict(kwargs)


def adopt_listening_port(port_class: Any, reactor: Any, fd: int, factory: Any, family: Optional[int] = None) -> Any:
    """A listening port of *port_class* (a tcp.Port or unix.Port subclass) over the inherited descriptor *fd*.

    What ``reactor.adoptStreamPort`` does, with fephp's own port classes: it
    calls the classes' ``_fromListeningDescriptor`` (since Twisted 12.1),
    which duplicates *fd*; the caller closes its own copy.  Returns the
    port, not yet listening: call ``startListening()``.
    """
    if family is None:
        return port_class._fromListeningDescriptor(reactor, fd, factory)
    return port_class._fromListeningDescriptor(reactor, fd, family, factory)


def epoll_poll_and_dispatch(reactor: Any, timeout: Optional[float]) -> None:
    """One turn of an EPollReactor's poll loop, calling each ready socket straight away.

    Twisted's own ``EPollReactor.doPoll`` hands every ready socket to its
    protocol inside ``log.callWithLogger``, which asks the connection for its
    log prefix and pushes a context dictionary: about a sixth of the CPU
    fephp spends on a small PHP request.  This is that loop without it; it
    relies on the reactor's ``_poller``, ``_selectables`` and
    ``_doReadOrWrite`` (twisted.internet.epollreactor, since Twisted 11).
    """
    try:
        events = reactor._poller.poll(-1 if timeout is None else timeout, len(reactor._selectables))
    except OSError as e:
        if e.errno == errno.EINTR:
            return
        raise
    selectables = reactor._selectables
    dispatch = reactor._doReadOrWrite
    for fd, event in events:
        selectable = selectables.get(fd)
        # A socket an earlier event of this batch closed is gone.
        if selectable is not None:
            dispatch(selectable, fd, event)


def select_and_dispatch(reactor: Any, timeout: Optional[float]) -> None:
    """One turn of a SelectReactor's loop, calling each ready socket straight away.

    The select() counterpart of :func:`epoll_poll_and_dispatch`, for the
    load generator's fixed-rate runs (select() takes a microsecond timeout).
    It relies on the reactor's ``_reads``, ``_writes`` and ``_doReadOrWrite``
    (twisted.internet.selectreactor, since Twisted 8).  A descriptor closed
    behind the reactor's back makes select() fail; then Twisted's own
    ``doSelect`` runs the turn, and its recovery drops that descriptor.
    """
    reads = reactor._reads
    writes = reactor._writes
    try:
        readable, writable, _ = select.select(reads, writes, (), timeout)
    except (ValueError, TypeError, OSError) as e:
        if isinstance(e, OSError) and e.errno == errno.EINTR:
            return
        SelectReactor.doSelect(reactor, timeout)
        return
    dispatch = reactor._doReadOrWrite
    for selectable in readable:
        # A socket an earlier event of this batch closed is gone.
        if selectable in reads:
            dispatch(selectable, "doRead")
    for selectable in writable:
        if selectable in writes:
            dispatch(selectable, "doWrite")


def observer_file(observer: Any) -> Any:
    """The file a FileLogObserver writes to (``FileLogObserver._outFile``, twisted.logger since Twisted 15.2), or None.

    twistd's ``--logfile`` observer is a FileLogObserver over a
    :class:`twisted.python.logfile.LogFile`; fephp reopens that file on
    SIGUSR1 and writes JSON lines to it with ``logging.format: json``.
    """
    return getattr(observer, "_outFile", None)
