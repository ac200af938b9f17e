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
import platform
import select
from typing import Any, Optional

from twisted.internet import main
from twisted.internet.endpoints import _parseServer
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.tcp import Connection
from twisted.web.http_headers import Headers

__all__ = [
    "adopt_listening_port",
    "endpoint_arguments",
    "epoll_poll_and_dispatch",
    "header_name",
    "headers_raw",
    "select_and_dispatch",
    "send_now",
    "send_pieces_now",
    "idle_socket",
    "observer_file",
    "plain_reads",
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


#: Header names seen, and how Headers spells each (bounded: names are the peers' to choose).
_header_names: dict[bytes, bytes] = {}
_HEADER_NAMES_KEPT = 1000


#: PyPy copies every read out of a raw buffer it mallocs (and frees) at the
#: size asked for; reading into one buffer kept here spares that.
_READS_INTO_BUFFER = platform.python_implementation() == "PyPy"
_read_buffers: dict[int, tuple[bytearray, memoryview]] = {}


def plain_reads(transport: Any, size: int) -> bool:
    """Make a plain connection read at most *size* bytes with one ``recv`` a read; whether it could.

    Twisted's UNIX connections read with ``recvmsg`` so as to take file
    descriptors passed along (``IFileDescriptorReceiver``): on PyPy that
    is a few microseconds more per read than ``recv``, for ancillary data a
    FastCGI backend never sends.  On PyPy the bytes are read into one
    buffer of *size* bytes kept for all connections (the reactor reads one
    socket at a time) and copied out, as PyPy's own ``recv`` would copy them
    out of a buffer it mallocs and frees for each read; CPython's ``recv``
    reads straight into the bytes it returns.

    Only for a ``tcp.Connection`` (UNIX connections are one) without TLS,
    whose protocol takes no file descriptors.  Relies on the reactor calling
    ``doRead()`` as looked up on the connection, and on what it returns: None
    to go on, ``main.CONNECTION_DONE`` for the end of the stream,
    ``main.CONNECTION_LOST`` for an error (twisted.internet.tcp and
    posixbase, since Twisted 8).
    """
    if not isinstance(transport, Connection) or transport.TLS:
        return False
    sock = transport.socket
    protocol = transport.protocol
    received = protocol.dataReceived
    if _READS_INTO_BUFFER:
        if size not in _read_buffers:
            buffer = bytearray(size)
            _read_buffers[size] = (buffer, memoryview(buffer))
        buffer, view = _read_buffers[size]
        recv_into = sock.recv_into

        def do_read() -> Any:
            try:
                n = recv_into(buffer)
            except OSError as e:
                return None if e.args[0] == errno.EWOULDBLOCK else main.CONNECTION_LOST
            if not n:
                return main.CONNECTION_DONE
            received(view[:n].tobytes())
            return None
    else:
        recv = sock.recv

        def do_read() -> Any:
            try:
                data = recv(size)
            except OSError as e:
                return None if e.args[0] == errno.EWOULDBLOCK else main.CONNECTION_LOST
            if not data:
                return main.CONNECTION_DONE
            received(data)
            return None

    transport.doRead = do_read  # type: ignore[method-assign]
    return True


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


def headers_raw(headers: Headers) -> dict[bytes, list[bytes]]:
    """The dict behind *headers* (name as Headers spells it -> its values), to read on the request path.

    Headers' own getters encode and canonicalize the name on every call:
    RequestExchange reads a plain Request's headers (the list, then the
    ones the CGI environment asks for) about 25,000 instructions per request
    cheaper from the dict.  Whoever writes to it must give what Headers
    would have made: a name from :func:`header_name`, values without CR or
    LF, and never an empty list.

    Relies on ``Headers._rawHeaders`` (that dict, since Twisted 8; a slot
    since 22).
    """
    return headers._rawHeaders


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
