"""server.workers: the supervisor on a fake reactor, then real twistd with two workers sharing one port."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import struct
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel, eventAsJSON
from twisted.python.failure import Failure

from fephp.phpfpm import find_php_fpm
from fephp.workers import LOG_FD, WorkerSupervisor, connections_per_worker
from tests.conftest import free_port, processes_with, require_binary
from tests.test_daemon import _zombie, daemonize, wait_for
from tests.test_http_php import make_docroot


@pytest.mark.parametrize(
    ("pool", "workers", "expected"),
    [(16, 2, 8), (16, 3, 5), (16, 16, 1), (4, 8, 1), (1, 1, 1)],
)
def test_connections_per_worker(pool: int, workers: int, expected: int) -> None:
    """Each worker gets an equal share of worker_pool_size, rounded down, at least one."""
    assert connections_per_worker(pool, workers) == expected


# -- the supervisor on a fake reactor ---------------------------------------------------


class FakeTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.written = b""

    def signalProcess(self, name: str) -> None:  # noqa: N802 - Twisted's name
        self.signals.append(name)

    def write(self, data: bytes) -> None:
        self.written += data


class FakeReactor(Clock):
    """A Clock that records spawned processes."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, FakeTransport, list[str], dict[int, Any]]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None, childFDs: Any = None) -> FakeTransport:  # noqa: N802
        transport = FakeTransport(200 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append((protocol, transport, args, childFDs))
        return transport


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
def fake() -> Iterator[tuple[FakeReactor, WorkerSupervisor, list[dict[str, Any]], Lines]]:
    reactor = FakeReactor()
    published: list[dict[str, Any]] = []
    out = Lines()
    supervisor = WorkerSupervisor(
        reactor,
        count=2,
        argv=lambda i: ["python", "-m", "fephp.workers", "--index", str(i)],
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
        ["python", "-m", "fephp.workers", "--index", "1"],
        ["python", "-m", "fephp.workers", "--index", "2"],
    ]
    _, transport, _, fds = reactor.spawned[0]
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


# -- real twistd with two workers -------------------------------------------------------


def children_of(parent: int, marker: str) -> list[int]:
    """Live processes whose parent is *parent* and whose command line mentions *marker*."""
    return sorted(
        pid for pid in processes_with(marker) if _stat(pid) is not None and _stat(pid)[1] == parent  # type: ignore[index]
    )


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def socket_owner(conn: http.client.HTTPConnection, server_port: int, candidates: list[int]) -> int | None:
    """Which of *candidates* holds the server side of *conn* (from /proc/net/tcp and /proc/PID/fd)."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                inode = fields[9]
    assert inode is not None, "the server side of the connection is in /proc/net/tcp"
    for pid in candidates:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def served_by_only(worker: int, workers: list[int], port: int, count: int = 5) -> list[int]:
    """With every other worker stopped (SIGSTOP), *count* PHP requests on new connections; the owners of their server sockets."""
    others = [w for w in workers if w != worker]
    owners = []
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(count):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/status.php")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"status body")
                owner = socket_owner(conn, port, workers)
                assert owner is not None
                owners.append(owner)
            finally:
                conn.close()
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)
    return owners


def get_unix(path: str, url: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("localhost", timeout=10)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    conn.sock = sock
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_tcp(port: int, url: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def answers(port: int) -> bool:
    try:
        return get_tcp(port, "/static/hello.txt")[0] == 200
    except OSError:
        return False


@pytest.mark.php
def test_two_workers_share_the_port_restart_and_stop_cleanly(tmp_path: Path) -> None:
    """Both workers serve PHP from one port; a SIGKILLed worker is replaced; SIGTERM leaves no pidfile, socket or process."""
    require_binary(find_php_fpm(), "php-fpm")
    port = free_port()
    root = make_docroot(tmp_path)
    unix_path = tmp_path / "http.sock"
    config = tmp_path / "fephp.yaml"
    config.write_text(
        f"""
server:
  listen: ["tcp:{port}:interface=127.0.0.1", "unix:{unix_path}"]
  root: {root}
  workers: 2
  shutdown_grace: 5
php:
  worker_pool_size: 4
logging:
  access_log: access.log
"""
    )
    pidfile = tmp_path / "fephp.pid"
    logfile = tmp_path / "fephp.log"
    daemonize(tmp_path, config)
    parent = 0
    try:
        wait_for(pidfile.exists, "the pidfile")
        parent = int(pidfile.read_text())
        wait_for(lambda: len(children_of(parent, "fephp.workers")) == 2, "two workers")
        workers = children_of(parent, "fephp.workers")
        wait_for(lambda: len(children_of(parent, "php-fpm: master")) == 1, "php-fpm")
        masters = children_of(parent, "php-fpm: master")
        php_fpm = masters + children_of(masters[0], "php-fpm: pool")
        assert len(php_fpm) == 1 + 4, "one php-fpm, run by the parent, with worker_pool_size children for all workers"
        wait_for(lambda: answers(port), "the listener")

        for worker in workers:
            assert served_by_only(worker, workers, port) == [worker] * 5
        assert get_unix(str(unix_path), "/status.php") == (200, b"status body")

        killed = workers[0]
        os.kill(killed, signal.SIGKILL)
        # kill() returns before the signal lands: a worker still running could
        # answer one more request (its access-log line then lost with it).
        wait_for(lambda: _zombie(killed) or not os.path.exists(f"/proc/{killed}"), "the killed worker to die")
        for _ in range(20):  # the other worker serves while the first is replaced
            assert get_tcp(port, "/status.php") == (200, b"status body")
        wait_for(
            lambda: len(children_of(parent, "fephp.workers")) == 2 and killed not in children_of(parent, "fephp.workers"),
            "the killed worker to be replaced",
        )
        replaced = children_of(parent, "fephp.workers")
        new = next(pid for pid in replaced if pid not in workers)
        assert served_by_only(new, replaced, port) == [new] * 5
        assert f"worker 1 (pid {killed}) exited" in logfile.read_text()

        # A request in flight at SIGTERM is finished: the workers drain.
        slow: list[tuple[int, bytes]] = []
        client = threading.Thread(target=lambda: slow.append(get_tcp(port, "/sleep.php?ms=1500")))
        client.start()
        wait_for(lambda: any(_sleeping(pid) for pid in php_fpm), "PHP to be running the request")
        os.kill(parent, signal.SIGTERM)
        client.join(timeout=20)
        assert slow and slow[0][0] == 200 and slow[0][1].isdigit()
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")
        wait_for(lambda: _zombie(parent), "the parent to exit")
        wait_for(lambda: not processes_with(str(config)), "no worker left")
        wait_for(lambda: all(_zombie(pid) for pid in php_fpm), "php-fpm to exit")
        assert not unix_path.exists()
        access = (tmp_path / "access.log").read_text()
        # Every worker that stopped gracefully flushed its lines: the survivor's
        # 5 + 20 and the replacement's 5.  The SIGKILLed one may lose its buffer.
        assert 5 + 20 + 5 <= access.count('"GET /status.php HTTP/1.1" 200') <= 5 + 5 + 1 + 20 + 5
        assert '"GET /sleep.php?ms=1500 HTTP/1.1" 200' in access
    finally:
        if parent and not _zombie(parent):
            os.kill(parent, signal.SIGKILL)


def _sleeping(pid: int) -> bool:
    """Whether *pid* is in a sleep call (a PHP child in usleep())."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "nanosleep" in f.read()
    except OSError:
        return False


def start_daemon(tmp_path: Path, workers: int) -> tuple[int, int, Path, Path]:
    """twistd fephp with *workers* workers in managed mode: (parent pid, port, config, pidfile), once it answers."""
    port = free_port()
    root = make_docroot(tmp_path)
    config = tmp_path / "fephp.yaml"
    config.write_text(
        f"server:\n  listen: [\"tcp:{port}:interface=127.0.0.1\"]\n  root: {root}\n  workers: {workers}\n"
        "php:\n  worker_pool_size: 2\n"
    )
    pidfile = tmp_path / "fephp.pid"
    daemonize(tmp_path, config)
    wait_for(pidfile.exists, "the pidfile")
    parent = int(pidfile.read_text())
    wait_for(lambda: answers(port), "the listener")
    return parent, port, config, pidfile


@pytest.mark.php
def test_killed_parent_leaves_no_worker_and_no_php_fpm(tmp_path: Path) -> None:
    """SIGKILL to the parent: the workers (parent-death signal, EOF) and php-fpm all exit by themselves."""
    require_binary(find_php_fpm(), "php-fpm")
    parent, port, config, _ = start_daemon(tmp_path, 2)
    try:
        wait_for(lambda: len(children_of(parent, "fephp.workers")) == 2, "two workers")
        wait_for(lambda: len(children_of(parent, "php-fpm: master")) == 1, "php-fpm")
        assert get_tcp(port, "/status.php") == (200, b"status body")
        master = children_of(parent, "php-fpm: master")[0]
        ours = children_of(parent, "fephp.workers") + [master] + children_of(master, "php-fpm: pool")
    finally:
        os.kill(parent, signal.SIGKILL)
    wait_for(lambda: all(_zombie(pid) for pid in ours), "every worker and php-fpm process to exit")
    assert not processes_with(str(config))


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

    from fephp.workers import _SharedTCPPort

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
    port = _SharedTCPPort._fromListeningDescriptor(reactor, listening.fileno(), socket.AF_INET, Counting())
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
