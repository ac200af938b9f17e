"""Listening ports for tests and benchmarks, from the side of the process that starts servers: port 0 and reading back.

Nothing here but the standard library, so that benchmarks/ can use it too.
A child that can bind port 0 itself (fephp: ``tcp:0``) is asked which port
it got through /proc (:func:`listening_ports`); one that refuses port 0
(nginx, php-fpm, HAProxy) gets a socket bound here (:func:`bound_listener`)
as an inherited descriptor.  Either way no port is ever free between being
chosen and being listened on, as with a bind-close-rebind "free port".
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator

__all__ = ["alive", "bound_listener", "listening_ports", "refusing_port", "wait_listening"]


def alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening_ports(pid: int) -> list[tuple[str, int]]:
    """The TCP addresses *pid* listens on, as (address, port), lowest descriptor first (the order it bound them).

    How a test learns the port a child bound on port 0 (or received bound):
    the socket inodes among /proc/PID/fd matched with the LISTEN rows of
    /proc/PID/net/tcp and tcp6, which show the child's own network namespace.
    """
    inodes: dict[str, int] = {}
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes[target[len("socket:["):-1]] = int(name)
    except OSError:
        return []
    found: list[tuple[int, str, int]] = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # sl local_address rem_address st ... inode (field 9); st 0A is LISTEN.
            if fields[3] != _TCP_LISTEN or fields[9] not in inodes:
                continue
            address, port = fields[1].split(":")
            found.append((inodes[fields[9]], _address(address, family), int(port, 16)))
    return [(address, port) for _, address, port in sorted(found)]


_TCP_LISTEN = "0A"


def _address(hex_address: str, family: int) -> str:
    """An address of /proc/net/tcp{,6}: 32-bit words in hex, each in the host's (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, words)


def wait_listening(pid: int, count: int = 1, within: float = 20.0) -> list[tuple[str, int]]:
    """:func:`listening_ports` of *pid* once it listens on at least *count* ports; fails after *within* seconds or if *pid* dies."""
    deadline = time.monotonic() + within
    while True:
        ports = listening_ports(pid)
        if len(ports) >= count:
            return ports
        if not alive(pid):
            raise AssertionError(f"process {pid} exited before listening on {count} port(s)")
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} listens on {ports} after {within} s, not on {count} port(s)")
        time.sleep(0.02)  # polling an outside process's state, bounded by the deadline


def bound_listener(address: str = "127.0.0.1", backlog: int = 511) -> socket.socket:
    """A TCP socket listening on a port of *address* (IPv4) that the kernel chose, for a child to inherit (nginx, php-fpm, HAProxy).

    The caller passes its descriptor to the child and closes its own copy
    once the child runs; the port is never free in between, so nothing else
    can take it.  511 is the default backlog of php-fpm and nginx.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx and php-fpm set on their own sockets
        s.bind((address, 0))
        s.listen(backlog)
    except BaseException:
        s.close()
        raise
    s.set_inheritable(True)
    return s


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port of 127.0.0.1 where connects are refused: held bound but not listening, so no one else takes it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
