"""Simulated hosts for integration tests, from the test's side: network namespaces on a private bridge, or loopback addresses.

A :class:`Network` is a private /24 with the root namespace (where pytest runs,
the "client") at ``.1`` and each :class:`Host` at ``.2`` and up.  Two kinds:

- ``netns``: each host is a Linux network namespace with ``lo`` up and one
  veth whose other end sits on a bridge in the root namespace that holds the
  ``.1`` address.  Subnets come from 198.18.0.0/15 (RFC 2544's benchmarking
  range, never routed on a real network); no namespace gets a default route,
  and the root namespace gets an ``unreachable`` route for the subnet under the
  bridge's, so nothing sent to our addresses can leave the machine even while
  the bridge is being torn down.  Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
- ``loopback``: where the kernel refuses namespaces, each host is an address of
  127.18.0.0/15 (all of 127/8 is local on Linux) and its processes run in the
  root namespace.  Same API, so the same tests run; only a host's isolation is
  lost (a process that leaves its process group is not found at teardown).

Several test sessions may run at once on one machine: each network claims a
slot (its /24) in a registry under a lock file (``/run/fephp-netns`` as root),
writes down every name before it creates the thing, and removes it all when it
closes; a later session sweeps what a killed session left behind.

Using it from a test (tests/conftest.py registers its fixtures through
``pytest_plugins``)::

    def test_two_php_hosts(network: Network, start_fpm) -> None:
        a = start_fpm(network.add_host("php1"))        # php-fpm on php1's address, port 9000, ready
        b = start_fpm(network.add_host("php2"), children=2)
        with network.connect(a.address, timeout=2) as s:  # from the root namespace, source ``.1``
            ...
        b.freeze(); b.thaw(); b.kill(); b.restart()      # hang, recover, crash, come back
        client = network.add_host("client")
        client.run([sys.executable, "-c", "..."], timeout=10)     # one command inside a host
        p = client.spawn([...], log=tmp_path / "x.log")           # a long-running one; killed at teardown
        network.root.spawn([...])                                  # one beside pytest, killed at teardown too

Fixtures: ``network`` (namespaces where the kernel allows, else loopback; the
reason is in ``network.fallback_reason``), ``netns_network`` (namespaces or
skip, with the kernel's reason), ``loopback_network``, and ``start_fpm`` (a
factory of started :class:`FPMHost` on any host).  Outside fixtures,
``with open_network("auto") as net:`` gives the same, and ``require_netns()``
skips a test that needs real namespaces.  Everything polls with a deadline
(:func:`wait_until`); nothing sleeps to synchronise.  Other helpers for the
same tests: :mod:`tests.support.haproxy` (HAProxy and its stats socket),
:mod:`tests.support.load` (bounded load counting failed and hung requests),
:mod:`tests.support.echo_http` (a tiny HTTP server that names itself and the
client it saw, plain or behind the PROXY protocol).

Loopback hosts share the root namespace, so a process on one connects to
another from 127.0.0.1, not from its host's address; tests that check the
source address of host-to-host traffic expect that difference.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import pytest

from fephp.process.binaries import find_php
from fephp.process.fpmconfig import PoolSpec, php_fpm_argv, render_config
from tests.support.processes import require_binary

__all__ = [
    "FPMHost",
    "Host",
    "HostProcess",
    "Network",
    "NetnsRefused",
    "loopback_network",
    "namespace_pids",
    "netns_network",
    "network",
    "open_network",
    "require_netns",
    "start_fpm",
    "wait_until",
]

#: Where namespace networks take their /24s: RFC 2544's benchmarking block, 512 slots.
NETNS_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
#: Where loopback networks take theirs: 127.18.0.0/15, also 512 slots.
LOOPBACK_RANGE = ipaddress.IPv4Network("127.18.0.0/15")
#: Hosts per network: .2 to .254 (.1 is the root namespace).
MAX_HOSTS = 253
#: Bound on one ``ip`` command.
IP_TIMEOUT = 10.0
#: Bound on taking the registry's lock (holders keep it for a few ip commands).
LOCK_WITHIN = 30.0
#: Bound on a server becoming connectable after it was started.
READY_WITHIN = 15.0
#: Bound on killed processes being gone, and on a stop's grace period.
KILL_WITHIN = 10.0
#: Interval of every poll here: external processes give no event to wait on.
POLL_INTERVAL = 0.02
#: The metric of the guard route: above any the kernel gives a connected route.
GUARD_METRIC = 4000000000
#: Names we make start with these (Linux interface names are at most 15 bytes).
NAMESPACE_PREFIX = "fephp-"
BRIDGE_PREFIX = "fpb"
VETH_PREFIX = "fpv"


_IP_FOUND = shutil.which("ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
#: The ip command of iproute2, by its full path where found (/usr/sbin is not on every PATH).
IP = _IP_FOUND or "ip"


class NetnsRefused(Exception):
    """The kernel (or the user we run as) does not let us make network namespaces; the message says why."""


# -- polling -----------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], what: str, within: float = READY_WITHIN) -> Any:
    """*predicate()*'s first true value, polled until *within* seconds have passed (then AssertionError naming *what*)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(POLL_INTERVAL)  # polling an external process's state, bounded by the deadline


# -- processes ---------------------------------------------------------------------------


def _stat_fields(pid: int) -> Optional[list[str]]:
    """/proc/PID/stat after the command name (state is [0], pgid [2], start time [19]); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _start_time(pid: int) -> Optional[str]:
    fields = _stat_fields(pid)
    return fields[19] if fields is not None else None


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group *pgid*."""
    found = []
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(pid)
    return found


def namespace_pids(namespace: str) -> list[int]:
    """Live processes inside the named network namespace (what ``ip netns pids`` lists)."""
    try:
        ref = os.stat(f"/run/netns/{namespace}")
    except OSError:
        return []
    found = []
    for pid in _all_pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue  # gone, or a zombie (its namespaces already released)
        if (st.st_dev, st.st_ino) == (ref.st_dev, ref.st_ino) and _alive(pid):
            found.append(pid)
    return found


def _kill(pids: Sequence[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class HostProcess:
    """A process started on a host, in a process group of its own so that signals reach the children it forks.

    States: running, frozen (SIGSTOPped, still holding its sockets), exited.
    """

    def __init__(self, popen: "subprocess.Popen[bytes]", argv: Sequence[str], log: Optional[Path]) -> None:
        self.popen = popen
        self.argv = list(argv)
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def members(self) -> list[int]:
        """Live processes of its group: it and its children."""
        return _group_members(self.pid)

    def signal(self, sig: int) -> None:
        """*sig* to the whole group."""
        if self.popen.poll() is not None and not self.members():
            return  # the group is gone, and its number may already be someone else's
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def freeze(self) -> None:
        """SIGSTOP the group: a hung host (connects still complete in the kernel's backlog, nothing answers)."""
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the group, as a crash would, and return once every member is gone."""
        self.signal(signal.SIGKILL)
        try:
            self.popen.wait(timeout=KILL_WITHIN)
        except subprocess.TimeoutExpired:
            pass  # reported below with the rest of the group
        # The kernel closes a killed child's sockets only once it is really gone.
        wait_until(lambda: not self.members(), f"the group of {self.argv[0]} to die", within=KILL_WITHIN)

    def stop(self, grace: float = KILL_WITHIN) -> None:
        """SIGTERM (and SIGCONT, in case it is frozen), then SIGKILL whatever is left after *grace* seconds."""
        if self.running:
            self.signal(signal.SIGTERM)
            self.signal(signal.SIGCONT)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def log_text(self) -> str:
        """Its output so far, when it was started with a log."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")


# -- the registry of slots ------------------------------------------------------------------------


def _state_dir() -> Path:
    """Where claims live: /run as root (namespaces need root), else a per-user folder in the temp dir."""
    if os.geteuid() == 0 and os.path.isdir("/run"):
        path = Path("/run/fephp-netns")
    else:
        path = Path(tempfile.gettempdir()) / f"fephp-netns-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def _registry_lock(state: Path) -> Iterator[None]:
    with open(state / "lock", "a+") as f:
        deadline = time.monotonic() + LOCK_WITHIN
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise
            time.sleep(POLL_INTERVAL)  # another session holds it for a few ip commands
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class _Claim:
    """One network's entry in the registry: its slot and every name it has made or is about to make."""

    path: Path
    kind: str
    slot: int
    token: str
    owner: int = field(default_factory=os.getpid)
    owner_start: Optional[str] = field(default_factory=lambda: _start_time(os.getpid()))
    bridge: Optional[str] = None
    route: Optional[str] = None
    hosts: dict[str, str] = field(default_factory=dict)  # namespace -> root-side veth

    def save(self) -> None:
        data = {
            "kind": self.kind, "slot": self.slot, "token": self.token, "owner": self.owner,
            "owner_start": self.owner_start, "bridge": self.bridge, "route": self.route, "hosts": self.hosts,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)  # a sweeper never reads half a claim

    @classmethod
    def load(cls, path: Path) -> Optional["_Claim"]:
        try:
            data = json.loads(path.read_text())
            return cls(path=path, **data)
        except (OSError, ValueError, TypeError):
            return None

    def owner_alive(self) -> bool:
        # The start time tells a reused pid from the session that wrote the claim.
        return _start_time(self.owner) == self.owner_start and _alive(self.owner)


def _ip(*args: str) -> None:
    """Run ``ip ARGS``; raise RuntimeError with its stderr if it fails."""
    try:
        done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except FileNotFoundError:
        raise RuntimeError("the ip command (Debian's iproute2) is not installed") from None
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def _ip_quiet(*args: str) -> None:
    """``ip ARGS`` for teardown: what is already gone is fine."""
    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
        _ip(*args)


def _destroy(claim: _Claim) -> list[str]:
    """Remove everything *claim* names, processes first; the problems that remain (empty when all is gone)."""
    problems = []
    for namespace, veth in list(claim.hosts.items()):
        problems += _destroy_namespace(namespace, veth)
    if claim.bridge:
        _ip_quiet("link", "del", claim.bridge)
    if claim.route:
        _ip_quiet("route", "del", "unreachable", claim.route, "metric", str(GUARD_METRIC))
    return problems


def _destroy_namespace(namespace: str, veth: Optional[str]) -> list[str]:
    deadline = time.monotonic() + KILL_WITHIN
    while True:
        inside = namespace_pids(namespace)
        if not inside:
            break
        _kill(inside)  # SIGKILL also ends a SIGSTOPped process
        if time.monotonic() > deadline:
            return [f"processes {inside} in namespace {namespace} survived SIGKILL"]
        time.sleep(POLL_INTERVAL)  # the kernel reaps them a moment later
    if veth:
        _ip_quiet("link", "del", veth)  # takes its peer inside the namespace with it
    _ip_quiet("netns", "del", namespace)
    return []


def _sweep(state: Path) -> None:
    """Free the slots of sessions that died without closing their networks (call under the lock)."""
    for path in state.glob("slot-*.json"):
        claim = _Claim.load(path)
        if claim is None or claim.owner_alive():
            continue
        if claim.kind == "netns":
            _destroy(claim)
        path.unlink(missing_ok=True)


def _addresses_in_use() -> list[ipaddress.IPv4Network]:
    """IPv4 networks of the root namespace's addresses and routes, which a new subnet must not overlap."""
    found = []
    for args in (["-4", "-o", "addr", "show"], ["-4", "route", "show", "table", "all"]):
        try:
            out = subprocess.run([IP, *args], capture_output=True, text=True, timeout=IP_TIMEOUT).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for word in out.split():
            with contextlib.suppress(ValueError):
                if word[:1].isdigit() and ("." in word):
                    found.append(ipaddress.IPv4Network(word, strict=False))
    return found


def _claim_slot(kind: str) -> _Claim:
    state = _state_dir()
    base = NETNS_RANGE if kind == "netns" else LOOPBACK_RANGE
    subnets = list(base.subnets(new_prefix=24))
    with _registry_lock(state):
        _sweep(state)
        taken = set()
        for path in state.glob("slot-*.json"):
            claim = _Claim.load(path)
            if claim is not None:
                taken.add((claim.kind, claim.slot))
        in_use = _addresses_in_use() if kind == "netns" else []
        free = [
            i for i, subnet in enumerate(subnets)
            if (kind, i) not in taken and not any(subnet.overlaps(other) for other in in_use if other.prefixlen > 0)
        ]
        if not free:
            raise RuntimeError(f"no free /24 left in {base} (every slot in {state} is claimed)")
        slot = free[secrets.randbelow(len(free))]
        claim = _Claim(path=state / f"slot-{kind}-{slot}.json", kind=kind, slot=slot, token=secrets.token_hex(3))
        claim.save()
    return claim


def _release(claim: _Claim) -> None:
    with _registry_lock(claim.path.parent):
        claim.path.unlink(missing_ok=True)


# -- networks and hosts ---------------------------------------------------------------------------


_Output = Union[int, IO[Any], None]


class Host:
    """One simulated host: an address of its network and, in ``netns`` networks, a namespace of its own."""

    def __init__(self, network: "Network", name: str, address: str, namespace: Optional[str], veth: Optional[str]) -> None:
        self.network = network
        self.name = name
        self.address = address
        self.namespace = namespace
        self.veth = veth
        self.processes: list[HostProcess] = []

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} {self.namespace or 'loopback'}>"

    def command(self, argv: Sequence[str]) -> list[str]:
        """*argv* as it runs inside this host."""
        if self.namespace is None:
            return list(argv)
        return [IP, "netns", "exec", self.namespace, *argv]

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log: Optional[Path] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[Path] = None,
        stdin: _Output = subprocess.DEVNULL,
        pass_fds: Sequence[int] = (),
    ) -> HostProcess:
        """Start *argv* inside this host, its output to *log* (or nowhere), *pass_fds* inherited; killed when the network closes."""
        out: _Output = subprocess.DEVNULL
        log_file = None
        if log is not None:
            log_file = open(log, "ab")
            out = log_file
        try:
            popen = subprocess.Popen(
                self.command(argv), stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None, cwd=cwd, pass_fds=tuple(pass_fds),
                start_new_session=True,  # its own group, for freeze/thaw/kill of it and its children
            )
        finally:
            if log_file is not None:
                log_file.close()
        process = HostProcess(popen, argv, log)
        self.processes.append(process)
        return process

    def run(
        self, argv: Sequence[str], *, timeout: float, check: bool = True, pass_fds: Sequence[int] = ()
    ) -> "subprocess.CompletedProcess[str]":
        """Run *argv* inside this host to its end (at most *timeout* seconds), *pass_fds* inherited; its output as text."""
        done = subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout, pass_fds=tuple(pass_fds))
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} on {self.name} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def pids(self) -> list[int]:
        """Live processes on this host: the groups it started (one may not have entered the namespace yet) and everything in its namespace."""
        found = {pid for p in self.processes for pid in p.members()}
        if self.namespace is not None:
            found.update(namespace_pids(self.namespace))
        return sorted(found)

    def close(self) -> list[str]:
        """Kill what runs here and remove the namespace; the problems left (empty when clean)."""
        for process in self.processes:
            process.signal(signal.SIGKILL)
        problems = []
        for process in self.processes:
            try:
                process.kill()
            except AssertionError as e:
                problems.append(str(e))
        if self.namespace is not None:
            problems += _destroy_namespace(self.namespace, self.veth)
        return problems


class Network:
    """A private /24 with the root namespace at ``.1`` and hosts from ``.2``; see the module docstring."""

    def __init__(self, claim: _Claim, fallback_reason: Optional[str] = None) -> None:
        self._claim = claim
        self.kind = claim.kind
        base = NETNS_RANGE if self.kind == "netns" else LOOPBACK_RANGE
        self.subnet = list(base.subnets(new_prefix=24))[claim.slot]
        self.root_address = str(self.subnet[1])
        self.fallback_reason = fallback_reason
        self.hosts: list[Host] = []
        #: The root namespace as a host (address ``.1``): for processes that run beside pytest, killed at close too.
        self.root = Host(self, "root", self.root_address, None, None)
        self._next_index = 2
        self._closed = False

    def __repr__(self) -> str:
        return f"<Network {self.kind} {self.subnet}>"

    def _open(self) -> None:
        if self.kind != "netns":
            return
        claim = self._claim
        claim.bridge = f"{BRIDGE_PREFIX}{claim.token}"
        claim.route = str(self.subnet)
        claim.save()
        # The guard first: from now on nothing for our subnet takes the default route.
        _ip("route", "add", "unreachable", claim.route, "metric", str(GUARD_METRIC))
        _ip("link", "add", claim.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.root_address}/24", "dev", claim.bridge)
        _ip("link", "set", claim.bridge, "up")

    def owns(self, address: str) -> bool:
        """Whether *address* is one of this network's (the only addresses a test may send to, besides loopback)."""
        try:
            return ipaddress.ip_address(address) in self.subnet
        except ValueError:
            return False

    def add_host(self, name: str) -> Host:
        """A new host called *name* (letters and digits), with the next free address."""
        if self._closed:
            raise RuntimeError("the network is closed")
        if not (name.isascii() and name.isalnum() and len(name) <= 16):
            raise ValueError(f"host name {name!r}: at most 16 letters and digits")
        if any(h.name == name for h in self.hosts):
            raise ValueError(f"host name {name!r} is taken in this network")
        index = self._next_index
        if index > MAX_HOSTS + 1:
            raise RuntimeError(f"a network holds at most {MAX_HOSTS} hosts")
        self._next_index += 1
        address = str(self.subnet[index])
        if self.kind != "netns":
            host = Host(self, name, address, None, None)
            self.hosts.append(host)
            return host
        claim = self._claim
        namespace = f"{NAMESPACE_PREFIX}{claim.token}-{name}"
        veth = f"{VETH_PREFIX}{claim.token}{index:02x}"
        claim.hosts[namespace] = veth
        claim.save()  # named before made, so a sweep finds it even if we die half-way
        host = Host(self, name, address, namespace, veth)
        self.hosts.append(host)
        _ip("netns", "add", namespace)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", veth, "master", str(claim.bridge), "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        return host

    def remove_host(self, host: Host) -> None:
        """Kill what runs on *host* and remove it (its address is not given out again)."""
        problems = self._close_host(host)
        self._claim.save()
        if problems:
            raise AssertionError("; ".join(problems))

    def _close_host(self, host: Host) -> list[str]:
        problems = host.close()
        self.hosts.remove(host)
        if host.namespace is not None and not problems:
            self._claim.hosts.pop(host.namespace, None)
        return problems

    def connect(self, address: tuple[str, int], timeout: float) -> socket.socket:
        """A TCP connection from the root namespace (source ``.1``) to one of this network's addresses."""
        self._check_target(address[0])
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.bind((self.root_address, 0))
            s.connect(address)
        except BaseException:
            s.close()
            raise
        return s

    def accepts(self, address: tuple[str, int]) -> bool:
        """Whether a connect to *address* succeeds right now."""
        try:
            self.connect(address, timeout=1.0).close()
            return True
        except OSError:
            return False

    def wait_connectable(self, address: tuple[str, int], process: Optional[HostProcess] = None, within: float = READY_WITHIN) -> None:
        """Return once a connect to *address* succeeds; fail early, with its log, if *process* exits first."""

        def ready() -> bool:
            if process is not None and not process.running:
                raise RuntimeError(f"{process.argv[0]} exited with {process.popen.returncode}: {process.log_text()}")
            return self.accepts(address)

        try:
            wait_until(ready, f"a connect to {address[0]}:{address[1]}", within=within)
        except AssertionError as e:
            log = process.log_text() if process is not None else ""
            raise AssertionError(f"{e}\n{log}") from None

    def http_get(self, address: tuple[str, int], path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
        """One HTTP/1.1 GET from the root namespace: the status and body."""
        self._check_target(address[0])
        conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout, source_address=(self.root_address, 0))
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _check_target(self, host: str) -> None:
        if not (self.owns(host) or ipaddress.ip_address(host).is_loopback):
            raise ValueError(f"{host} is outside {self.subnet} and loopback: tests send nothing there")

    def close(self) -> None:
        """Kill every process on every host, remove every namespace, veth, bridge and route, free the slot."""
        if self._closed:
            return
        self._closed = True
        problems = self.root.close()
        for host in list(self.hosts):
            problems += self._close_host(host)
        if self.kind == "netns":
            problems += _destroy(self._claim)
        _release(self._claim)
        if problems:
            raise AssertionError("network teardown left: " + "; ".join(problems))


#: Why namespaces cannot be had in this process, once a first try found out.
_refused: Optional[str] = None
#: Whether a first network of this process has proven that the kernel takes a namespace and a veth.
_proven = False


def _why_no_netns() -> Optional[str]:
    """A reason the kernel will refuse namespaces that can be seen without trying, or None."""
    if not os.path.exists("/proc/self/ns/net"):
        return "this kernel has no network namespaces"
    if _IP_FOUND is None:
        return "the ip command (Debian's iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (the tests run as uid %d)" % os.geteuid()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
                if not caps & (1 << 12):
                    return "no CAP_NET_ADMIN"
                if not caps & (1 << 21):
                    return "no CAP_SYS_ADMIN (ip netns add mounts the namespace)"
    return None


def _open_netns() -> Network:
    global _refused, _proven
    if _refused is not None:
        raise NetnsRefused(_refused)
    reason = _why_no_netns()
    if reason is not None:
        _refused = reason
        raise NetnsRefused(reason)
    claim = _claim_slot("netns")
    network = Network(claim)
    try:
        network._open()
        if not _proven:
            # Found out here, at the fixture, rather than half-way through a test.
            network.remove_host(network.add_host("probe"))
            network._next_index = 2  # the probe never spoke, so no neighbour remembers its address
            _proven = True
    except RuntimeError as e:
        with contextlib.suppress(AssertionError):
            network.close()
        if "not installed" in str(e):
            raise
        _refused = f"the kernel refused: {e}"
        raise NetnsRefused(_refused) from None
    except BaseException:
        with contextlib.suppress(AssertionError):
            network.close()
        raise
    return network


def require_netns() -> None:
    """Skip the calling test, with the kernel's reason, where namespaces cannot be made (tried once per process)."""
    _ensure_ip()
    if not _proven:
        try:
            _open_netns().close()
        except NetnsRefused:
            pass
    if _refused is not None:
        pytest.skip(f"network namespaces unavailable: {_refused}")


@contextlib.contextmanager
def open_network(kind: str = "auto") -> Iterator[Network]:
    """A network of *kind* (``netns``, ``loopback``, or ``auto``: netns where allowed), closed on the way out whatever happened."""
    if kind not in ("auto", "netns", "loopback"):
        raise ValueError(f"network kind {kind!r}: auto, netns or loopback")
    if kind == "loopback":
        network = Network(_claim_slot("loopback"))
    else:
        try:
            network = _open_netns()
        except NetnsRefused as e:
            if kind == "netns":
                raise
            network = Network(_claim_slot("loopback"), fallback_reason=str(e))
            warnings.warn(f"network namespaces unavailable ({e}); simulated hosts are loopback addresses")
    try:
        yield network
    finally:
        network.close()


def _ensure_ip() -> None:
    # The ip command is something to install (CI must have it), not a kernel refusal.
    require_binary(_IP_FOUND, "ip (Debian's iproute2)")


@pytest.fixture
def network() -> Iterator[Network]:
    """Namespaces where the kernel allows them, else loopback addresses (``network.fallback_reason`` says why)."""
    if os.environ.get("CI"):
        _ensure_ip()  # CI must prove the namespaces, not fall back for want of a package
    with open_network("auto") as net:
        yield net


@pytest.fixture
def netns_network() -> Iterator[Network]:
    """A network of namespaces; skips with the kernel's reason where it refuses."""
    require_netns()
    net = _open_netns()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def loopback_network() -> Iterator[Network]:
    """A network of 127.18.x.y addresses, processes in the root namespace."""
    with open_network("loopback") as net:
        yield net


# -- php-fpm hosts -----------------------------------------------------------------------------


class FPMHost:
    """A real php-fpm listening on TCP at its host's address, from a config rendered by fephp's own render_config.

    States: not started, running, frozen (SIGSTOPped: connects queue in the
    kernel, nothing answers), killed or stopped (restart() starts it again
    on the same address and port).
    """

    def __init__(
        self,
        host: Host,
        workdir: Path,
        *,
        binary: str,
        port: int = 9000,
        children: int = 4,
        max_requests: int = 0,
        ini: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.host = host
        self.workdir = workdir
        self.binary = binary
        self.port = port
        self.children = children
        self.pool_name = f"{host.name}_{secrets.token_hex(3)}"  # names its children in ps, unique per test
        self.process: Optional[HostProcess] = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "php-fpm.conf"
        self.log = workdir / "php-fpm.log"
        pool = PoolSpec(self.pool_name, self.listen, children, max_requests, php_admin_values=dict(ini or {}))
        self.config.write_text(render_config([pool], pid_file=str(workdir / "php-fpm.pid"), error_log=str(self.log)))

    def __repr__(self) -> str:
        return f"<FPMHost {self.listen} on {self.host.name}>"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host.address, self.port)

    @property
    def listen(self) -> str:
        """``ADDRESS:PORT``, as php-fpm's ``listen`` and fephp's ``php.fpm_socket`` spell it."""
        return f"{self.host.address}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The address as a Twisted client endpoint string."""
        return f"tcp:host={self.host.address}:port={self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self) -> "FPMHost":
        """Start php-fpm and return once a connect from the root namespace succeeds and every child is forked."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        process = self.process = self.host.spawn(php_fpm_argv(self.binary, str(self.config)), log=self.workdir / "stderr.log")
        try:
            self.host.network.wait_connectable(self.address, process)
            # The master listens before it forks its children: a connect alone does not mean they are there.
            wait_until(lambda: len(process.members()) >= 1 + self.children, f"{self.children} php-fpm children")
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL the master and its children, as a crash would; returns once all are gone."""
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        """SIGTERM (php-fpm ends its children), SIGKILL after the grace period."""
        if self.process is not None:
            self.process.stop()

    def freeze(self) -> None:
        """SIGSTOP master and children: a host that hangs."""
        assert self.process is not None, "not started"
        self.process.freeze()

    def thaw(self) -> None:
        assert self.process is not None, "not started"
        self.process.thaw()

    def restart(self) -> "FPMHost":
        """Kill it if it runs, then start it again on the same address."""
        self.kill()
        return self.start()

    def log_text(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.log, self.workdir / "stderr.log") if p.exists()]
        return "\n".join(parts)


@pytest.fixture
def start_fpm(tmp_path: Path) -> Iterator[Callable[..., FPMHost]]:
    """A factory: ``start_fpm(host, children=4)`` starts php-fpm on *host* (any network's) and returns it ready."""
    binary = require_binary(find_php("php-fpm"), "php-fpm")
    started: list[FPMHost] = []

    def make(host: Host, **options: Any) -> FPMHost:
        fpm = FPMHost(host, tmp_path / f"fpm-{host.name}-{len(started)}", binary=binary, **options)
        started.append(fpm)
        return fpm.start()

    yield make
    for fpm in started:
        fpm.kill()  # the network kills them anyway; this reaps them first
