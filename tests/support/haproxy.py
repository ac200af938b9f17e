"""HAProxy for integration tests, from the test's side: a real haproxy from a generated config, and its view of its servers.

Frontends and backends are data (:class:`Frontend`, :class:`Backend`,
:class:`Server`); :func:`render_config` turns them into a haproxy.cfg with
HTTP health checks every ``inter_ms`` (``option httpchk GET /readyz``), the
PROXY protocol to servers that ask for it (``send-proxy`` / ``send-proxy-v2``,
health checks included, as HAProxy does by default), logs to its stderr and an
admin stats socket.  :class:`HAProxy` runs it in the foreground (``-db``) on a
host of a :class:`tests.support.netns.Network` (the root namespace unless told
otherwise), ready once every frontend accepts and the stats socket answers.
A frontend of port 0 on the root namespace gets a socket the test binds on a
port the kernel chooses (HAProxy refuses ``bind ADDR:0``), inherited as
``bind fd@N``; :meth:`HAProxy.frontend_address` gives the port.

Using it from a test (tests/conftest.py registers the fixture through
``pytest_plugins``)::

    from tests.support.haproxy import Backend, Frontend, Server

    def test_failover(network, start_haproxy) -> None:
        a, b = network.add_host("a"), network.add_host("b")
        ...  # start servers on a.address:8000 and b.address:8000
        lb = start_haproxy(network, [Frontend("web", network.root_address, 8080, "app")],
                           [Backend("app", (Server("a", a.address, 8000), Server("b", b.address, 8000, proxy_protocol="v2")))])
        lb.wait_server("app", "a", "UP")          # polls `show stat` with a deadline, no sleeping
        ...  # kill a's server
        lb.wait_server("app", "a", "DOWN")
        network.http_get(lb.frontend_address("web"), "/")

``lb.servers()`` gives every server's :class:`ServerState` (``status``,
``check_status``, ``sessions_total``), ``lb.operational_states()`` the
``srv_op_state`` of ``show servers state``, ``lb.command(...)`` any
stats-socket command's text, ``lb.kill()`` / ``lb.stop()`` end it.  Backends
retry a refused connect at once on another server (``retries 2``, ``option
redispatch 1``), as a production config would; without that, a request sent
to a server just killed waits a second per retry.  For load through it while
a server dies, see :mod:`tests.support.load`.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import pytest

from tests.support.netns import READY_WITHIN, Host, HostProcess, Network, wait_until
from tests.support.ports import bound_listener
from tests.support.processes import require_binary

__all__ = [
    "Backend",
    "Frontend",
    "HAProxy",
    "Server",
    "ServerState",
    "Timeouts",
    "find_haproxy",
    "render_config",
    "start_haproxy",
]

#: Bound on one stats-socket command.
STATS_TIMEOUT = 5.0
#: Bound on HAProxy noticing a dead or revived server: fall or rise checks, each at most inter + timeout check.
STATE_CHANGE_WITHIN = 15.0

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PROXY_KEYWORDS = {None: "", "v1": " send-proxy", "v2": " send-proxy-v2"}


@dataclass(frozen=True)
class Server:
    """One backend server; ``proxy_protocol`` is None, ``"v1"`` or ``"v2"`` (sent on health checks too)."""

    name: str
    address: str
    port: int
    weight: int = 1
    proxy_protocol: Optional[str] = None
    check: bool = True


@dataclass(frozen=True)
class Backend:
    """A backend: its servers, balancing, health checks (``check_path`` None: TCP connect checks only), retries on connect failures."""

    name: str
    servers: Sequence[Server]
    mode: str = "http"
    balance: str = "roundrobin"
    check_path: Optional[str] = "/readyz"
    inter_ms: int = 100
    fall: int = 2
    rise: int = 2
    retries: int = 2
    redispatch: bool = True
    extra: Sequence[str] = ()  # further lines for the section, verbatim


@dataclass(frozen=True)
class Frontend:
    """A listener that sends everything to one backend."""

    name: str
    address: str
    port: int  # 0: a port the kernel chooses, see HAProxy
    backend: str
    mode: str = "http"
    extra: Sequence[str] = ()
    #: The descriptor of a listening socket HAProxy inherits, instead of binding address:port.
    fd: Optional[int] = None


@dataclass(frozen=True)
class Timeouts:
    """HAProxy's timeouts, in milliseconds (short, so a dead server costs a test little)."""

    connect_ms: int = 1000
    client_ms: int = 30000
    server_ms: int = 30000
    check_ms: int = 1000


def render_config(
    frontends: Sequence[Frontend],
    backends: Sequence[Backend],
    *,
    stats_socket: str,
    timeouts: Timeouts = Timeouts(),
) -> str:
    """A complete haproxy.cfg: no daemon, no chroot, logs to stderr, the admin socket at *stats_socket*."""
    names = {b.name for b in backends}
    named = [f.name for f in frontends] + [b.name for b in backends] + [s.name for b in backends for s in b.servers]
    for name in named:
        if not _NAME.match(name):
            raise ValueError(f"HAProxy name {name!r}: letters, digits, '_', '.', '-'")
    for f in frontends:
        if f.backend not in names:
            raise ValueError(f"frontend {f.name!r} names backend {f.backend!r}, which is not given")
    lines = [
        "global",
        "    log stderr format raw local0 info",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    stats timeout 10s",
        "",
        "defaults",
        "    log global",
        "    option dontlognull",
        f"    timeout connect {timeouts.connect_ms}ms",
        f"    timeout client {timeouts.client_ms}ms",
        f"    timeout server {timeouts.server_ms}ms",
        f"    timeout check {timeouts.check_ms}ms",
        "",
    ]
    for f in frontends:
        lines += [
            f"frontend {f.name}",
            f"    mode {f.mode}",
            f"    bind fd@{f.fd}" if f.fd is not None else f"    bind {f.address}:{f.port}",
            f"    default_backend {f.backend}",
            *(["    option httplog"] if f.mode == "http" else []),  # one log line per request, naming its server
            *(f"    {line}" for line in f.extra),
            "",
        ]
    for b in backends:
        lines += [f"backend {b.name}", f"    mode {b.mode}", f"    balance {b.balance}", f"    retries {b.retries}"]
        if b.redispatch:
            # A connect refused by a dead server is retried at once on another; retried on the same
            # one, each try first waits min(timeout connect, 1 s), and a request queued behind a
            # freshly killed server would take retries seconds.
            lines.append("    option redispatch 1")
        if b.check_path is not None:
            lines += [f"    option httpchk GET {b.check_path}", "    http-check expect status 200"]
        # fastinter/downinter as inter: the default would slow down the very transitions tests wait for.
        lines.append(
            f"    default-server inter {b.inter_ms}ms fastinter {b.inter_ms}ms downinter {b.inter_ms}ms"
            f" fall {b.fall} rise {b.rise}"
        )
        lines += [f"    {line}" for line in b.extra]
        for s in b.servers:
            if s.proxy_protocol not in _PROXY_KEYWORDS:
                raise ValueError(f"server {s.name!r}: proxy_protocol must be None, 'v1' or 'v2', not {s.proxy_protocol!r}")
            check = " check" if s.check else ""
            lines.append(f"    server {s.name} {s.address}:{s.port} weight {s.weight}{check}{_PROXY_KEYWORDS[s.proxy_protocol]}")
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class ServerState:
    """One server as HAProxy's ``show stat`` reports it."""

    backend: str
    server: str
    status: str  # "UP", "DOWN", "UP 1/2" (going down), "DOWN 1/2" (coming up), "MAINT", "no check"
    check_status: str  # "L7OK", "L4CON", "L7STS", "INI" (no check done yet), ...
    sessions_current: int
    sessions_total: int

    @property
    def state(self) -> str:
        """The status without its transition counter: what HAProxy routes by."""
        return self.status.split(" ")[0]


def find_haproxy() -> Optional[str]:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


class HAProxy:
    """A real haproxy on *host* (default: the network's root namespace).

    States: not started, running, stopped (or killed).
    """

    def __init__(
        self,
        network: Network,
        frontends: Sequence[Frontend],
        backends: Sequence[Backend],
        workdir: Path,
        *,
        binary: str,
        host: Optional[Host] = None,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.network = network
        self.host = host or network.root
        for target in [*(f.address for f in frontends), *(s.address for b in backends for s in b.servers)]:
            network._check_target(target)
        self._sockets: list[socket.socket] = []
        if any(f.port == 0 for f in frontends) and self.host is not network.root:
            raise ValueError("a frontend of port 0 is bound by the test, in the root namespace only")
        self.frontends = [self._bound(f) if f.port == 0 else f for f in frontends]
        frontends = self.frontends
        self.backends = list(backends)
        self.binary = binary
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        # A UNIX socket path has at most 107 bytes, more than pytest's temp dirs sometimes leave.
        self._socket_dir = tempfile.mkdtemp(prefix="fephp-haproxy-")
        self.stats_socket = str(Path(self._socket_dir) / "stats.sock")
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(render_config(frontends, backends, stats_socket=self.stats_socket, timeouts=timeouts))
        self.log = workdir / "haproxy.log"
        self.process: Optional[HostProcess] = None

    def _bound(self, frontend: Frontend) -> Frontend:
        """*frontend* on a socket bound here, on a port the kernel chose: never free between the choice and HAProxy's use."""
        s = bound_listener(frontend.address)
        self._sockets.append(s)
        return replace(frontend, port=int(s.getsockname()[1]), fd=s.fileno())

    def frontend_address(self, name: str) -> tuple[str, int]:
        for f in self.frontends:
            if f.name == name:
                return (f.address, f.port)
        raise KeyError(name)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self) -> "HAProxy":
        """Start haproxy and return once every frontend accepts and the stats socket answers."""
        fds = [s.fileno() for s in self._sockets]
        checked = self.host.run([self.binary, "-c", "-f", str(self.config)], timeout=READY_WITHIN, check=False, pass_fds=fds)
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy rejects {self.config}: {checked.stdout}{checked.stderr}")
        self.process = self.host.spawn([self.binary, "-db", "-f", str(self.config)], log=self.log, pass_fds=fds)
        for s in self._sockets:
            s.close()  # HAProxy holds them now
        self._sockets = []
        try:
            for f in self.frontends:
                self.network.wait_connectable((f.address, f.port), self.process)
            wait_until(self._stats_answer, "haproxy's stats socket")
        except BaseException:
            self.kill()
            raise
        return self

    def _stats_answer(self) -> bool:
        try:
            return bool(self.command("show info"))
        except OSError:
            return False

    def command(self, line: str) -> str:
        """One stats-socket command (``show stat``, ``show servers state``, ``disable server app/a``...): its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(STATS_TIMEOUT)
            s.connect(self.stats_socket)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:  # without "prompt" mode HAProxy closes after one answer
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def servers(self) -> dict[tuple[str, str], ServerState]:
        """Every server of every backend, keyed by (backend, server), from ``show stat``."""
        text = self.command("show stat")
        if not text.startswith("# "):
            raise RuntimeError(f"unexpected answer to show stat: {text[:200]!r}")
        rows = csv.DictReader(io.StringIO(text[2:]))
        found = {}
        for row in rows:
            if row["svname"] in ("FRONTEND", "BACKEND"):
                continue
            state = ServerState(
                backend=row["pxname"],
                server=row["svname"],
                status=row["status"],
                check_status=row["check_status"],
                sessions_current=int(row["scur"] or 0),
                sessions_total=int(row["stot"] or 0),
            )
            found[(state.backend, state.server)] = state
        return found

    def operational_states(self) -> dict[tuple[str, str], int]:
        """``srv_op_state`` of every server from ``show servers state``: 0 down, 1 starting, 2 running, 3 stopping."""
        lines = self.command("show servers state").splitlines()
        if not lines or lines[0].strip() != "1":
            raise RuntimeError(f"unexpected show servers state format: {lines[:2]!r}")
        header: list[str] = []
        found = {}
        for line in lines[1:]:
            if line.startswith("# "):
                header = line[2:].split()
            elif line.strip():
                row = dict(zip(header, line.split()))
                found[(row["be_name"], row["srv_name"])] = int(row["srv_op_state"])
        return found

    def server(self, backend: str, server: str) -> ServerState:
        return self.servers()[(backend, server)]

    def wait_server(self, backend: str, server: str, state: str, within: float = STATE_CHANGE_WITHIN) -> ServerState:
        """Return once HAProxy routes by *state* (``UP``, ``DOWN``, ``MAINT``) for the server, after a real check for UP.

        HAProxy starts servers UP before their first check; waiting for UP
        also waits for a passed check (L4OK/L6OK/L7OK), so it means the server
        answered.
        """

        def reached() -> Optional[ServerState]:
            current = self.server(backend, server)
            if current.state != state:
                return None
            if state == "UP" and not current.check_status.endswith("OK"):
                return None
            return current

        try:
            return wait_until(reached, f"{backend}/{server} to be {state}", within=within)
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen {self.server(backend, server)}\n{self.log_text()[-2000:]}") from None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def stop(self) -> None:
        """SIGTERM (HAProxy's hard stop), SIGKILL after the grace period."""
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def start_haproxy(tmp_path: Path) -> Iterator[Callable[..., HAProxy]]:
    """A factory: ``start_haproxy(network, frontends, backends, host=None)`` gives a started HAProxy, stopped at teardown."""
    binary = require_binary(find_haproxy(), "haproxy")
    started: list[HAProxy] = []

    def make(network: Network, frontends: Sequence[Frontend], backends: Sequence[Backend], **options: Any) -> HAProxy:
        lb = HAProxy(network, frontends, backends, tmp_path / f"haproxy-{len(started)}", binary=binary, **options)
        started.append(lb)
        return lb.start()

    yield make
    for lb in started:
        lb.kill()
