"""Public fakes for testing code that uses fephp, as ``treq.testing`` is for treq.

- :class:`RecordingSink`: a :class:`fephp.backend.interface.ResponseSink`
  that keeps everything it is given, in order;
- :class:`FakeEndpoint`: a client endpoint whose connects the test fires by
  hand; a connect that succeeds gets a :class:`FakeFastCGIServer`, the
  php-fpm end of that connection (a real FastCGI responder codec over a
  StringTransport, with a :class:`FakePeerWatch` for what the kernel
  would know about it);
- :class:`FakeProcessReactor`: a Clock that records the processes it is
  asked to spawn, each with a :class:`FakeProcessTransport`.

Nothing here touches a socket, a process or the global reactor.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Optional

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from .backend.protocol import FastCGIClientProtocol
from .fastcgi import Chunk, Event, Params, ResponderConnection

__all__ = [
    "FakeEndpoint",
    "FakeFastCGIServer",
    "FakePeerWatch",
    "FakeProcessReactor",
    "FakeProcessTransport",
    "PendingConnect",
    "RecordingSink",
    "Spawned",
]


class RecordingSink:
    """A ResponseSink that keeps one request's output and writes down every call in order.

    ``calls`` holds ``("started",)``, ``("stdout", data)``, ``("stderr",
    data)`` and ``("flush",)``; ``stdout`` and ``stderr`` the bytes so far.
    It asserts the interface's promise that ``response_started`` comes once,
    before any stdout.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.producer: Optional[IPushProducer] = None
        self.started = 0
        self.stdout = b""
        self.stderr = b""
        self._waiting: list[tuple[bytes, Deferred[None]]] = []

    def response_started(self, producer: IPushProducer) -> None:
        assert self.started == 0 and self.stdout == b"", "response_started must come once, before any stdout"
        self.started += 1
        self.producer = producer
        self.calls.append(("started",))

    def stdout_received(self, data: Chunk) -> None:
        self.stdout += data
        self.calls.append(("stdout", data))
        for pattern, d in list(self._waiting):
            if re.search(pattern, self.stdout):
                self._waiting.remove((pattern, d))
                d.callback(None)

    def stderr_received(self, data: bytes) -> None:
        self.stderr += data
        self.calls.append(("stderr", data))

    def flush(self) -> None:
        self.calls.append(("flush",))

    def wait_for(self, pattern: bytes) -> "Deferred[None]":
        """Fires once the regular expression *pattern* matches the stdout so far."""
        d: Deferred[None] = Deferred()
        if re.search(pattern, self.stdout):
            d.callback(None)
        else:
            self._waiting.append((pattern, d))
        return d

    def split(self) -> tuple[bytes, bytes]:
        """The CGI head and the body of the stdout so far."""
        head, _, body = self.stdout.partition(b"\r\n\r\n")
        return head, body


class PendingConnect:
    """One ``connect()`` call on a :class:`FakeEndpoint`, to be fired by the test."""

    def __init__(self, factory: IProtocolFactory, at: float) -> None:
        self.factory = factory
        self.at = at
        self.cancelled = False
        self.deferred: Deferred[Any] = Deferred(self._cancel)

    def _cancel(self, d: "Deferred[Any]") -> None:
        self.cancelled = True

    def succeed(self) -> "FakeFastCGIServer":
        """The connect succeeds: the protocol is connected to a fake php-fpm end, returned."""
        return FakeFastCGIServer(self)

    def refuse(self) -> None:
        self.deferred.errback(ConnectionRefusedError("refused"))


class FakeEndpoint:
    """A client endpoint that records each connect as a :class:`PendingConnect`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.connects: list[PendingConnect] = []
        #: While true, every connect is refused at once, as with nothing listening.
        self.refusing = False

    def connect(self, factory: IProtocolFactory) -> "Deferred[Any]":
        pending = PendingConnect(factory, self.clock.seconds())
        self.connects.append(pending)
        if self.refusing:
            pending.refuse()
        return pending.deferred

    @property
    def last(self) -> PendingConnect:
        return self.connects[-1]


class FakePeerWatch:
    """A stand-in for :class:`fephp.backend.protocol.PeerWatch`: the test says what the kernel knows."""

    def __init__(self) -> None:
        #: An end of file (or anything else) waits in the socket.
        self.gone = False
        #: The other end shut down only its sending side and still reads.
        self.still_reads = False

    def peer_gone(self) -> bool:
        return self.gone

    def peer_still_reads(self) -> bool:
        return self.still_reads


class FakeFastCGIServer:
    """The php-fpm end of one connection a pool made through a :class:`FakeEndpoint`."""

    def __init__(self, pending: PendingConnect) -> None:
        self.transport = StringTransport()
        proto = pending.factory.buildProtocol(None)  # type: ignore[arg-type]  # no address to give
        assert isinstance(proto, FastCGIClientProtocol)
        self.proto: FastCGIClientProtocol = proto
        self.watch: FakePeerWatch = FakePeerWatch()
        proto.watch = self.watch  # type: ignore[assignment]  # answers the same two questions
        self.server: ResponderConnection = ResponderConnection()
        self._unread: list[Event] = []
        proto.makeConnection(self.transport)
        pending.deferred.callback(proto)

    def _read(self) -> None:
        self._unread += self.server.receive_data(self.transport.value())
        self.transport.clear()

    def received(self) -> list[Event]:
        """Everything the client wrote since the last call, as responder events."""
        self._read()
        events, self._unread = self._unread, []
        return events

    def script(self) -> Optional[bytes]:
        """SCRIPT_NAME of the request the client wrote since the last look."""
        for event in self.received():
            if isinstance(event, Params):
                return dict(event.params)[b"SCRIPT_NAME"]
        return None

    def respond(self, body: bytes = b"ok", app_status: int = 0) -> None:
        """Answer the request with a text/plain *body* and END_REQUEST."""
        self._read()
        self.proto.dataReceived(
            self.server.stdout(1, b"Content-Type: text/plain\r\n\r\n" + body, close=True)
            + self.server.end_request(1, app_status)
        )

    def send_output(self, data: bytes) -> None:
        """Send *data* as STDOUT of request 1, without ending it."""
        self.proto.dataReceived(self.server.stdout(1, data))

    def end(self, app_status: int = 0) -> None:
        """END_REQUEST for request 1, with no output before it."""
        self._read()
        self.proto.dataReceived(self.server.end_request(1, app_status))

    def close(self) -> None:
        """The backend closes the connection, both ways (a child that died, php-fpm stopped)."""
        self.watch.gone = True
        self.proto.connectionLost(Failure(ConnectionDone()))

    def hang_up_unseen(self) -> None:
        """The backend closed the connection, and the reactor has not read that yet: only the kernel knows."""
        self.watch.gone = True

    def drain_and_close(self) -> None:
        """php-fpm's close after pm.max_requests: its end of file, while it still reads (and discards) what comes."""
        self.watch.gone = True
        self.watch.still_reads = True
        self.proto.readConnectionLost()
        self.proto.connectionLost(Failure(ConnectionDone()))


class FakeProcessTransport:
    """What a process protocol sees of its child: the signals sent, stdin written, pausing."""

    def __init__(self, pid: int, child_fds: Any = None) -> None:
        self.pid = pid
        self.child_fds = child_fds
        self.signals: list[str] = []
        self.written = b""
        self.stdin_closed = False
        self.paused = False
        self.producer: Any = None

    def signalProcess(self, name: str) -> None:  # noqa: N802 - Twisted's name
        self.signals.append(name)

    def write(self, data: bytes) -> None:
        self.written += data

    def closeStdin(self) -> None:  # noqa: N802 - Twisted's name
        self.stdin_closed = True

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802 - Twisted's name
        self.producer = producer

    def unregisterProducer(self) -> None:  # noqa: N802 - Twisted's name
        self.producer = None


class Spawned(NamedTuple):
    """One ``spawnProcess`` call a :class:`FakeProcessReactor` recorded."""

    protocol: Any
    transport: FakeProcessTransport
    args: list[str]
    env: Any


class FakeProcessReactor(Clock):
    """A Clock whose ``spawnProcess`` records the call and connects the protocol to a fake transport.

    Pids count up from *first_pid*; the test ends a process itself, by
    calling its protocol's ``processExited`` or ``processEnded``.
    """

    def __init__(self, first_pid: int = 100000) -> None:
        super().__init__()
        self.first_pid = first_pid
        self.spawned: list[Spawned] = []

    def spawnProcess(  # noqa: N802 - Twisted's name
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: Any = None,
        path: Any = None,
        uid: Any = None,
        gid: Any = None,
        usePTY: bool = False,  # noqa: N803 - Twisted's name
        childFDs: Any = None,  # noqa: N803 - Twisted's name
    ) -> FakeProcessTransport:
        transport = FakeProcessTransport(self.first_pid + len(self.spawned), childFDs)
        protocol.makeConnection(transport)
        self.spawned.append(Spawned(protocol, transport, list(args), env))
        return transport
