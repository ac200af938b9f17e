"""TLS on client connections through the standard library's ssl (SSLObject over MemoryBIO), from the server's side.

Twisted's own TLS (:mod:`twisted.protocols.tls`) runs pyOpenSSL over a
memory BIO: every read, write and BIO transfer is a cffi call.  The
standard library's :class:`ssl.SSLObject` is the same OpenSSL over the same
kind of memory BIO, driven from C.  :class:`TLSServerFactory` wraps a
site's factory as :class:`twisted.protocols.tls.TLSMemoryBIOFactory` does,
and its protocol is the transport the site's channels see: ALPN's answer as
``negotiatedProtocol``, ``getPeerCertificate``, producers, ``loseConnection``
with a close_notify, ``abortConnection``.  The writes of one reactor turn
are gathered into one ``SSLObject.write`` and one socket send.

``server.tls_engine: stdlib`` selects it for ``ssl:`` listeners (the same
endpoint string: ``privateKey``, ``certKey``, ``extraCertChain``,
``dhParameters``, ``interface``, ``backlog``); :func:`listen_ssl` and
:func:`context_from_description` are what the listeners use.
"""

from __future__ import annotations

import enum
import os
import ssl
import tempfile
from typing import Any, Callable, Optional

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IHandshakeListener,
    IProtocolNegotiationFactory,
    ISSLTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from .._twisted import send_now

__all__ = [
    "ENGINES",
    "SNIHook",
    "TLSServerFactory",
    "TLSServerProtocol",
    "context_from_description",
    "listen_ssl",
    "server_context",
    "ssl_arguments",
]

#: The values of ``server.tls_engine``: Twisted's pyOpenSSL, or this module.
ENGINES = ("pyopenssl", "stdlib")

#: Picks the context of a connection by the name its client asked for (SNI),
#: or None to keep the listener's own.
SNIHook = Callable[[Optional[str]], Optional[ssl.SSLContext]]

#: Plaintext gathered before it is encrypted and sent without waiting for
#: the end of the reactor turn (Twisted's _AggregateSmallWrites holds 64 kB).
WRITE_GATHER = 64 * 1024
#: Plaintext taken from the TLS layer per read: one whole record (RFC 8446
#: 5.1: at most 2^14 bytes), which is all OpenSSL returns per read anyway;
#: SSLObject.read allocates this much before it shrinks to what it got.
READ_SIZE = 16 * 1024


def ssl_arguments(description: str) -> tuple[list[str], dict[str, str]]:
    """An endpoint string's positional and keyword arguments, with Twisted's grammar.

    Arguments are separated by ``:``; the first ``=`` of an argument makes
    it a keyword; a backslash takes the next character as it is.
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    parts: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            parts.append("".join(current))
            _add(args, kwargs, parts)
            parts, current = [], []
        elif char == "=" and not parts:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    _add(args, kwargs, parts)
    return args, kwargs


def _add(args: list[str], kwargs: dict[str, str], parts: list[str]) -> None:
    if len(parts) == 1:
        args.append(parts[0])
    else:
        kwargs[parts[0]] = parts[1]


def server_context(
    cert_key: str,
    private_key: str,
    *,
    extra_chain: Optional[str] = None,
    dh_parameters: Optional[str] = None,
) -> ssl.SSLContext:
    """A server SSLContext with the certificate in *cert_key* (and *extra_chain*'s) and the key in *private_key*.

    TLS 1.2 and up, the server's cipher order, no renegotiation (a client
    could make the server pay for handshakes without a new connection), no
    compression (CRIME).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    # PyPy 3.9's ssl does not name it; OpenSSL's value since 1.1.0h.
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0x40000000)
    if extra_chain is None:
        context.load_cert_chain(cert_key, private_key)
    else:
        # SSLContext reads a chain from a file only: the certificate, then
        # the chain's, in one file of public certificates.
        with open(cert_key, "rb") as f:
            certificate = f.read()
        with open(extra_chain, "rb") as f:
            chain = f.read()
        fd, path = tempfile.mkstemp(suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_certificates(certificate) + _certificates(chain))
            context.load_cert_chain(path, private_key)
        finally:
            os.unlink(path)
    if dh_parameters is not None:
        context.load_dh_params(dh_parameters)
    return context


def _certificates(pem: bytes) -> bytes:
    """The CERTIFICATE blocks of *pem*, nothing else (a key beside them stays out of the copy)."""
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    blocks = []
    start = pem.find(begin)
    while start != -1:
        stop = pem.find(end, start)
        if stop == -1:
            break
        blocks.append(pem[start:stop + len(end)] + b"\n")
        start = pem.find(begin, stop)
    return b"".join(blocks)


def context_from_description(description: str) -> ssl.SSLContext:
    """The SSLContext of an ``ssl:`` endpoint string, its files read now (as Twisted's ssl: endpoint reads them)."""
    _, kwargs = ssl_arguments(description)
    private_key = kwargs.get("privateKey", "server.pem")
    return server_context(
        kwargs.get("certKey", private_key),
        private_key,
        extra_chain=kwargs.get("extraCertChain"),
        dh_parameters=kwargs.get("dhParameters"),
    )


def listen_ssl(reactor: Any, description: str, factory: Any, sni: Optional[SNIHook] = None) -> Any:
    """Listen on an ``ssl:`` endpoint string with this module's TLS around *factory*; the port (raises if it cannot)."""
    args, kwargs = ssl_arguments(description)
    if args[:1] != ["ssl"]:
        raise ValueError(f"not an ssl: endpoint string: {description!r}")
    port = kwargs["port"] if "port" in kwargs else (args[1] if len(args) > 1 else "")
    return reactor.listenTCP(
        int(port),
        TLSServerFactory(context_from_description(description), factory, reactor, sni=sni),
        backlog=int(kwargs.get("backlog", "50")),
        interface=kwargs.get("interface", ""),
    )


class _State(enum.Enum):
    """Where one TLS connection is."""

    HANDSHAKING = "handshaking"  # writes wait for the handshake's end
    OPEN = "open"
    CLOSING = "closing"  # loseConnection: close_notify and FIN sent after what was written, the client's close awaited
    CLOSED = "closed"  # the TLS layer is done (closed, failed or aborted); nothing more is read or written


@implementer(ISSLTransport)
class TLSServerProtocol(ProtocolWrapper):
    """The server side of one TLS connection: ciphertext from the socket below, plaintext to the wrapped protocol.

    States (:class:`_State`, in ``_state``): HANDSHAKING until OpenSSL's
    handshake completes (the wrapped protocol's writes are held), OPEN,
    CLOSING once ``loseConnection`` asked for a close_notify, CLOSED once the
    TLS layer is finished with (close_notify exchanged, an error, an abort).

    The writes of one reactor turn are held in ``_pending`` and encrypted
    together at the turn's end (or once ``WRITE_GATHER`` bytes are held):
    one ``SSLObject.write`` and one send, straight to the socket when its
    buffer is empty.  Errors reach the wrapped protocol's ``connectionLost``
    as Twisted's TLS reports them: a TLS error as its Failure (an EOF that
    breaks the protocol as ConnectionLost), a clean close as the socket's.
    """

    factory: Any  # TLSServerFactory
    transport: Any  # the TCP connection below
    wrappedProtocol: Any
    _state = _State.HANDSHAKING
    _sslobj: Any = None
    _flush_call: Any = None
    _reason: Optional[Failure] = None
    _handshake_listener = False

    def __init__(self, factory: Any, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._pending: list[bytes] = []
        self._pending_size = 0

    # -- from the socket below ---------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        self._sslobj = self.factory.context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._handshake_listener = IHandshakeListener.providedBy(self.wrappedProtocol)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self._state is _State.CLOSED:
            return
        self._incoming.write(data)
        if self._state is _State.HANDSHAKING:
            self._handshake()
            if self._state is _State.HANDSHAKING or self._state is _State.CLOSED:
                return
        self._read()

    def _handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._send()
            return
        except ssl.SSLError as e:
            self._fail(e)
            return
        self._state = _State.OPEN
        self._send()  # the handshake's last flight (and TLS 1.3's tickets)
        if self._handshake_listener:
            self.wrappedProtocol.handshakeCompleted()
        if self.disconnecting:
            # loseConnection came during the handshake with writes held.
            self._flush()
            self._shut_down()
        elif self._pending and self._flush_call is None:
            self._flush_call = self.factory.clock.callLater(0, self._flush)

    def _read(self, at_eof: bool = False) -> None:
        """Deliver the plaintext of every whole record received (at the socket's end: try once more, for the EOF)."""
        sslobj = self._sslobj
        incoming = self._incoming
        deliver = self.wrappedProtocol.dataReceived
        while self._state is _State.OPEN and (at_eof or incoming.pending or sslobj.pending()):
            try:
                data = sslobj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break  # a record not whole yet
            except ssl.SSLZeroReturnError:
                data = b""
            except ssl.SSLError as e:
                self._fail(e)
                return
            if not data:
                if at_eof:
                    # A close_notify would have been read with the bytes
                    # that carried it: this is the socket's end without one
                    # (PyPy's ssl reads it as b"", CPython's raises SSLEOFError).
                    self._fail(ssl.SSLEOFError())
                else:
                    # The client's close_notify (SSLObject reads it as b""):
                    # answer it, then close.
                    self._state = _State.CLOSED
                    self._close_notify()
                    self.transport.loseConnection()
                return
            deliver(data)
        # Reading may have made TLS bytes to send (a KeyUpdate's answer).
        if self._outgoing.pending:
            self._send()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._state is _State.OPEN:
            # What the client sent before the socket closed is still read.
            self._incoming.write_eof()
            self._read(at_eof=True)
        self._state = _State.CLOSED
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        self._pending = []
        reason = self._reason or reason
        self._reason = None
        super().connectionLost(reason)
        self._sslobj = None

    def _fail(self, error: ssl.SSLError) -> None:
        """A TLS error: send the alert OpenSSL wrote, close, and report *error* (an EOF as ConnectionLost)."""
        reason = Failure(ConnectionLost()) if isinstance(error, ssl.SSLEOFError) else Failure(error)
        if self._reason is None:
            self._reason = reason
        self._state = _State.CLOSED
        self._send()
        self.transport.loseConnection()

    # -- from the wrapped protocol (ITransport) ----------------------------------

    def write(self, data: bytes) -> None:
        if self.disconnecting or self._state is _State.CLOSED:
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._state is _State.HANDSHAKING:
            return
        if self._pending_size >= WRITE_GATHER:
            self._flush()
        elif self._flush_call is None:
            self._flush_call = self.factory.clock.callLater(0, self._flush)

    # IPushProducer, for the wrapped protocol: reading from the socket below.
    # ProtocolWrapper has no such methods: they would reach the socket
    # through __getattr__, an AttributeError raised and caught each time
    # (twisted.web resumes its transport once per request).

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    def writeSequence(self, data: Any) -> None:
        for piece in data:
            self.write(piece)

    def _flush(self) -> None:
        """Encrypt what was written since the last flush and send it."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        pending = self._pending
        if not pending or self._state is _State.HANDSHAKING or self._state is _State.CLOSED:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._pending = []
        self._pending_size = 0
        try:
            self._sslobj.write(data)
        except ssl.SSLError as e:
            self._fail(e)
            return
        self._send()

    def _send(self) -> None:
        out = self._outgoing.read()
        if out:
            send_now(self.transport, out)

    def _close_notify(self) -> None:
        try:
            self._sslobj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass  # sent; the client's own close_notify is not waited for
        self._send()

    def loseConnection(self) -> None:
        """Send what was written and a close_notify, then close the socket (before the handshake's end: abort, as Twisted)."""
        if self.disconnecting or self._state is _State.CLOSED:
            return
        if self._state is _State.HANDSHAKING and not self._pending:
            self.abortConnection()
            return
        self.disconnecting = True
        if self._state is _State.OPEN:
            self._flush()
        if self._state is _State.OPEN:
            self._shut_down()
        # HANDSHAKING with writes held: they go, and the close, once it ends.

    def _shut_down(self) -> None:
        """Send a close_notify and half-close the socket; it closes once the client closes its end.

        Closing the socket at once would reset it if the client's bytes were
        still unread, and a reset can destroy what we sent last (a GOAWAY,
        a 4xx page) before the client reads it.  So, as Twisted's TLS keeps
        the socket until the peer's close_notify, the socket stays open until
        the client closes it (or the wrapped protocol aborts); the FIN goes
        now.  What the client sends meanwhile is dropped unread: OpenSSL
        reads nothing after its own close_notify.
        """
        self._state = _State.CLOSING
        self._close_notify()
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is None:
            self.transport.loseConnection()
        else:
            half_close()

    def abortConnection(self) -> None:
        """Close the socket now, sending nothing more."""
        self.disconnecting = True
        self._state = _State.CLOSED
        self._pending = []
        self.transport.abortConnection()

    @property
    def negotiatedProtocol(self) -> Optional[bytes]:
        """ALPN's answer (b"h2", b"http/1.1"), or None: none agreed, or the handshake is not done."""
        if self._sslobj is None or self._state is _State.HANDSHAKING:
            return None
        chosen = self._sslobj.selected_alpn_protocol()
        return chosen.encode("ascii") if chosen else None

    @property
    def server_name(self) -> Optional[str]:
        """The name the client gave by SNI (recorded by the servername callback), or None."""
        name = self._sslobj.get_servername() if self._sslobj is not None else None
        return name.decode("ascii") if name else None

    def getHandle(self) -> Any:  # noqa: N802 - Twisted's name
        """The connection's SSLObject (Twisted's TLS gives its OpenSSL Connection): ``get_servername()`` is the SNI name."""
        return self._sslobj

    def getPeerCertificate(self) -> Optional[bytes]:
        """The client's certificate in DER, or None (fephp asks for none)."""
        if self._sslobj is None or self._state is _State.HANDSHAKING:
            return None
        cert: Optional[bytes] = self._sslobj.getpeercert(True)
        return cert


class TLSServerFactory(WrappingFactory):
    """Wraps a server factory's connections in TLS on *context* (ALPN from the factory's acceptableProtocols).

    *clock* runs the flush at the end of a reactor turn.  *sni*, when given,
    is called with the name each client asks for (or None) during the
    handshake; the context it returns, offered the same ALPN protocols,
    serves that connection (a certificate per name), None keeps *context*.
    """

    protocol = TLSServerProtocol
    noisy = False  # the wrapped factory logs its start and stop already, as under Twisted's TLS

    def __init__(self, context: ssl.SSLContext, wrappedFactory: Any, clock: Any,
                 sni: Optional[SNIHook] = None) -> None:
        super().__init__(wrappedFactory)
        self.context = context
        self.clock = clock
        protocols: list[str] = []
        if IProtocolNegotiationFactory.providedBy(wrappedFactory):
            protocols = [name.decode("ascii") for name in wrappedFactory.acceptableProtocols()]
            context.set_alpn_protocols(protocols)
        context.sslobject_class = _ServerSSLObject
        context.sni_callback = _sni_callback(context, sni, protocols)

    def logPrefix(self) -> str:
        """As Twisted's TLS factory names itself: the wrapped factory's prefix and "(TLS)"."""
        prefix = getattr(self.wrappedFactory, "logPrefix", None)
        name = prefix() if callable(prefix) else self.wrappedFactory.__class__.__name__
        return f"{name} (TLS)"


def _sni_callback(context: ssl.SSLContext, sni: Optional[SNIHook], protocols: list[str]) -> Callable[..., None]:
    """OpenSSL's servername callback for *context*: keep the name, and move the connection to the context *sni* picks."""

    def callback(sslobj: Any, name: Optional[str], _: ssl.SSLContext) -> None:
        sslobj._server_name = name.encode("ascii") if name else None
        if sni is None:
            return
        chosen = sni(name)
        if chosen is not None and chosen is not context:
            if protocols:
                # ALPN is answered after the name is read, by the context
                # then in place.
                chosen.set_alpn_protocols(protocols)
            sslobj.context = chosen

    return callback


class _ServerSSLObject(ssl.SSLObject):
    """An SSLObject that keeps the name its client asked for (SNI) and tells it as pyOpenSSL's Connection does.

    Server side, ``server_hostname`` stays None: the name is only seen by
    the servername callback, which stores it here.  fephp.web.hosts reads
    it through ``transport.getHandle().get_servername()``, as from
    Twisted's TLS.
    """

    _server_name: Optional[bytes] = None

    def get_servername(self) -> Optional[bytes]:
        """The SNI name as the client sent it (bytes), or None."""
        return self._server_name
