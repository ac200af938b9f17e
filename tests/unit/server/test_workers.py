"""server.workers on a fake reactor: the supervisor's spawns, restarts and stops, and the adopted port's accepts."""

from __future__ import annotations

import signal
import socket
import struct
from typing import Any, Iterator

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel, eventAsJSON
from twisted.python.failure import Failure

from fephp.server.workers import LOG_FD, WorkerSupervisor, connections_per_worker
from fephp.testing import FakeProcessReactor


@pytest.mark.parametrize(
    ("pool", "workers", "expected"),
    [(16, 2, 8), (16, 3, 5), (16, 16, 1), (4, 8, 1), (1, 1, 1)],
)
def test_connections_per_worker(pool: int, workers: int, expected: int) -> None:
    """Each worker gets an equal share of worker_pool_size, rounded down, at least one."""
    assert connections_per_worker(pool, workers) == expected


class FakeListener:
    def __init__(self, fileno: int) -> None:
        self.fileno = fileno


class Lines:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[tuple[FakeProcessReactor, WorkerSupervisor, list[dict[str, Any]], Lines]]:
    reactor = FakeProcessReactor(first_pid=200)
    published: list[dict[str, Any]] = []
    out = Lines()
    supervisor = WorkerSupervisor(
        reactor,
        count=2,
        argv=lambda i: ["python", "-m", "fephp.server.worker", "--index", str(i)],
        config_text="server: {}\n",
        listeners=[FakeListener(7), FakeListener(9)],  # type: ignore[list-item]
        stop_grace=5.0,
        publish=published.append,
        stdout=out,
    )
    yield reactor, supervisor, published, out


def exit_with(protocol: Any, signal_name: str | None) -> None:
    reason = ProcessDone(0) if signal_name is None else ProcessTerminated(signal=signal.SIGKILL)
    protocol.processExited(Failure(reason))


def test_spawn_passes_listeners_and_config(fake: Any) -> None:
    """Each worker gets its number, the listening sockets from fd 4 on, and the config text length-prefixed on stdin."""
    reactor, supervisor, _, _ = fake
    supervisor.startService()
    assert [args for _, _, args, _ in reactor.spawned] == [
        ["python", "-m", "fephp.server.worker", "--index", "1"],
        ["python", "-m", "fephp.server.worker", "--index", "2"],
    ]
    transport = reactor.spawned[0].transport
    fds = transport.child_fds
    assert fds == {0: "w", 1: "r", 2: "r", 3: "r", 4: 7, 5: 9}
    assert transport.written == struct.pack("!I", 11) + b"server: {}\n"
    assert supervisor.pids == [200, 201]


def test_dead_worker_restarts_with_backoff(fake: Any) -> None:
    """A dying worker is restarted after 0.5 s, then 1 s while it keeps dying, and 0.5 s again after a stable run."""
    reactor, supervisor, _, _ = fake
    supervisor.startService()
    exit_with(reactor.spawned[0][0], "KILL")
    assert supervisor.pids == [201]
    reactor.advance(0.49)
    assert len(reactor.spawned) == 2
    reactor.advance(0.01)
    assert reactor.spawned[2][2][-1] == "1"
    exit_with(reactor.spawned[2][0], "KILL")
    reactor.advance(0.99)
    assert len(reactor.spawned) == 3
    reactor.advance(0.01)
    assert len(reactor.spawned) == 4
    reactor.advance(supervisor.stable_after)
    exit_with(reactor.spawned[3][0], "KILL")
    reactor.advance(0.5)
    assert len(reactor.spawned) == 5
    assert supervisor.pids == [204, 201]
    assert supervisor.restarts == 3


def test_stop_terms_then_kills_and_does_not_restart(fake: Any) -> None:
    """Stopping sends SIGTERM to every worker, SIGKILL after stop_grace, and fires once all have exited."""
    reactor, supervisor, _, _ = fake
    supervisor.startService()
    first, second = reactor.spawned[0], reactor.spawned[1]
    done = supervisor.stopService()
    assert (first[1].signals, second[1].signals) == (["TERM"], ["TERM"])
    exit_with(first[0], None)
    reactor.advance(5.0)
    assert (first[1].signals, second[1].signals) == (["TERM"], ["TERM", "KILL"])
    assert not done.called
    exit_with(second[0], "KILL")
    assert done.called
    reactor.advance(60)
    assert len(reactor.spawned) == 2


def test_worker_output_reaches_the_parent(fake: Any) -> None:
    """Log records become events of the parent's log (worker and pid as system); stdout is copied a whole line at a time."""
    reactor, supervisor, published, out = fake
    supervisor.startService()
    protocol = reactor.spawned[1][0]
    record = eventAsJSON({"log_format": "hello {who}", "who": "there", "log_level": LogLevel.warn, "log_namespace": "fephp.x"})
    data = ("\x1e" + record + "\n").encode()
    protocol.childDataReceived(LOG_FD, data[:10])
    assert published == []
    protocol.childDataReceived(LOG_FD, data[10:])
    assert len(published) == 1
    event = published[0]
    assert (event["log_format"], event["who"], event["log_level"], event["log_system"]) == (
        "hello {who}", "there", LogLevel.warn, "worker 2 pid 201"
    )
    protocol.childDataReceived(1, b'127.0.0.1 - - "GET / HTTP/1.1" 200\n127.0.0.1 - - "GET /a')
    assert out.text == '127.0.0.1 - - "GET / HTTP/1.1" 200\n'
    protocol.childDataReceived(1, b' HTTP/1.1" 404\n')
    assert out.text.endswith('"GET /a HTTP/1.1" 404\n')


class SelectableRecorder(Clock):
    """Just enough reactor for a port and its connections: readers and writers are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: set[Any] = set()

    def addReader(self, reader: Any) -> None:  # noqa: N802 - Twisted's name
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:  # noqa: N802 - Twisted's name
        self.readers.discard(reader)

    def addWriter(self, writer: Any) -> None:  # noqa: N802 - Twisted's name
        pass

    def removeWriter(self, writer: Any) -> None:  # noqa: N802 - Twisted's name
        pass


def test_adopted_port_accepts_one_connection_per_wakeup() -> None:
    """A worker's adopted port takes one queued connection per readable event, however many wait, so a burst is shared out."""
    from twisted.internet.protocol import Factory, Protocol

    from fephp._twisted import adopt_listening_port
    from fephp.server.worker import _SharedTCPPort

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    listening.setblocking(False)
    clients = [socket.create_connection(listening.getsockname()) for _ in range(3)]
    built: list[Any] = []

    class Counting(Factory):
        def buildProtocol(self, addr: Any) -> Protocol:  # noqa: N802 - Twisted's name
            built.append(addr)
            return Protocol()

    reactor = SelectableRecorder()
    port = adopt_listening_port(_SharedTCPPort, reactor, listening.fileno(), Counting(), socket.AF_INET)
    port.startListening()
    try:
        for expected in (1, 2, 3):
            port.doRead()
            assert len(built) == expected
    finally:
        for client in clients:
            client.close()
        port.socket.close()
        listening.close()


def test_certs_reaches_every_worker_and_a_reloads_new_one(fake: Any) -> None:
    """reload_certificates writes "certs" to each running worker, and to a reload's new worker before it is ready."""
    reactor, supervisor, _, _ = fake
    supervisor.startService()
    first, second = reactor.spawned[0][1], reactor.spawned[1][1]
    sent = (len(first.written), len(second.written))
    supervisor.reload_certificates()
    assert (first.written[sent[0]:], second.written[sent[1]:]) == (b"certs\n", b"certs\n")
    supervisor.replace(count=1, argv=lambda i: ["python", "new", str(i)], config_text="x\n",
                       listeners=[FakeListener(7)])  # type: ignore[list-item]
    successor = reactor.spawned[2][1]
    start = len(successor.written)
    supervisor.reload_certificates()
    assert successor.written[start:] == b"certs\n"
