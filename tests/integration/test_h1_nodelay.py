"""fephp's HTTP/1.x connections send without Nagle's algorithm (TCP_NODELAY), as nginx's tcp_nodelay: the last segment of a large answer does not wait for the client's delayed ACK."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from tests.support.example_app import example_config
from tests.support.inprocess import InProcessFront, pool

pytestmark = pytest.mark.php


@pytest.fixture
def front(php_fpm: Any, tmp_path: Path) -> Iterator[InProcessFront]:
    """The example app as etc/fephp.yaml serves it, on a TCP port of its own."""
    configured = InProcessFront.configured(example_config(tmp_path), pool(php_fpm.unix_endpoint))
    f = pytest_twisted.blockon(defer.ensureDeferred(configured.start()))
    yield f
    pytest_twisted.blockon(defer.ensureDeferred(f.stop()))


def _keep_alive_get(port: int) -> "tuple[socket.socket, bytes]":
    """A GET of a static file on a kept connection, its answer's head; the connection stays open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /static/app.js HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(65536)
        assert chunk, head
        head += chunk
    return s, head


@pytest_twisted.ensureDeferred
async def test_a_client_connection_has_tcp_nodelay(front: InProcessFront) -> None:
    """The server's side of an HTTP/1.1 connection has TCP_NODELAY set once it has answered a request."""
    client, head = await deferToThread(_keep_alive_get, front.port)
    try:
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        channels = list(front.site._channels)
        flags = [c.transport.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0 for c in channels]
        assert flags == [True]
    finally:
        client.close()
