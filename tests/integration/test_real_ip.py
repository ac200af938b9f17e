"""The client's own address behind a real HAProxy: the PROXY protocol (haproxy: listeners) and trusted X-Forwarded-For."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread

from fephp.cgi.realip import RealIP, parse_trusted
from tests.support.docroot import make_docroot
from tests.support.haproxy import Backend, Frontend, Server
from tests.support.inprocess import InProcessFront, pool

pytestmark = pytest.mark.php


@pytest.fixture
def fronts(php_fpm, tmp_path: Path):
    root = make_docroot(tmp_path)
    started: list[InProcessFront] = []

    async def make(listen: str, real_ip: Any = None) -> tuple[Path, int]:
        """A front started on *listen* (port 0); its access log and the port it got."""
        access_log = tmp_path / f"access-{len(started)}.log"
        front = InProcessFront.php(root, pool(php_fpm.unix_endpoint), access_log=str(access_log), real_ip=real_ip)
        started.append(await front.start(listen))
        return access_log, front.port

    yield make
    for front in started:
        pytest_twisted.blockon(defer.ensureDeferred(front.stop()))


async def _log_lines(path: Path, marker: str, within: float = 5.0) -> list[str]:
    """The access log's lines holding *marker*, once there are any (the log is written within a second); bounded."""
    deadline = time.monotonic() + within
    while True:
        lines = [line for line in path.read_text().splitlines() if marker in line] if path.exists() else []
        if lines or time.monotonic() > deadline:
            return lines
        await task.deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_proxy_protocol_v2_from_haproxy_gives_the_client_address(network, start_haproxy, fronts):
    """Behind HAProxy's send-proxy-v2, on a haproxy:tcp: listener, PHP and the access log see the client, not HAProxy."""
    access_log, port = await fronts("haproxy:tcp:0:interface=127.0.0.1")
    lb = await deferToThread(
        start_haproxy,
        network,
        [Frontend("web", network.root_address, 0, "app")],
        [Backend("app", (Server("fephp", "127.0.0.1", port, proxy_protocol="v2"),), check_path="/static/hello.txt")],
    )
    await deferToThread(lb.wait_server, "app", "fephp", "UP")
    status, body = await deferToThread(network.http_get, lb.frontend_address("web"), "/env.php?via=proxy-v2")
    env = json.loads(body)
    assert status == 200
    # HAProxy connects from 127.0.0.1; the client came from the network's root address.
    assert network.root_address != "127.0.0.1"
    assert env["REMOTE_ADDR"] == network.root_address
    assert env["REMOTE_PORT"].isdigit() and env["REMOTE_PORT"] != "0"
    assert env["SERVER_PORT"] == str(lb.frontend_address("web")[1])  # the address the client connected to
    lines = await _log_lines(access_log, "via=proxy-v2")
    assert len(lines) == 1 and lines[0].startswith(f'"{network.root_address}" ')


@pytest_twisted.ensureDeferred
async def test_x_forwarded_for_from_a_trusted_haproxy(network, start_haproxy, fronts):
    """HAProxy's X-Forwarded-For (option forwardfor) and X-Forwarded-Proto make REMOTE_ADDR, HTTPS and the log the client's."""
    real_ip = RealIP((parse_trusted("127.0.0.1"),))
    access_log, port = await fronts("tcp:0:interface=127.0.0.1", real_ip)
    frontend = Frontend(
        "web", network.root_address, 0, "app",
        # A client-sent X-Forwarded-For is kept and HAProxy appends the
        # address it saw: the forged part must not win.
        extra=("option forwardfor", "http-request set-header X-Forwarded-Proto https"),
    )
    lb = await deferToThread(
        start_haproxy, network, [frontend],
        [Backend("app", (Server("fephp", "127.0.0.1", port),), check_path="/static/hello.txt")],
    )
    await deferToThread(lb.wait_server, "app", "fephp", "UP")

    def forged_get() -> tuple[int, bytes]:
        import http.client

        host, lb_port = lb.frontend_address("web")
        conn = http.client.HTTPConnection(host, lb_port, timeout=5, source_address=(network.root_address, 0))
        try:
            conn.request("GET", "/env.php?via=xff", headers={"X-Forwarded-For": "6.6.6.6", "Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    status, body = await deferToThread(forged_get)
    env = json.loads(body)
    assert status == 200
    assert env["HTTP_X_FORWARDED_FOR"] == f"6.6.6.6, {network.root_address}"
    assert env["REMOTE_ADDR"] == network.root_address
    assert (env["HTTPS"], env["REQUEST_SCHEME"]) == ("on", "https")
    lines = await _log_lines(access_log, "via=xff")
    assert len(lines) == 1 and lines[0].startswith(f'"{network.root_address}" ')


@pytest_twisted.ensureDeferred
async def test_an_untrusted_peer_cannot_name_the_client(fronts):
    """A direct client's X-Forwarded-For and X-Forwarded-Proto change nothing when it is not a trusted proxy."""
    _, port = await fronts("tcp:0:interface=127.0.0.1", RealIP((parse_trusted("10.0.0.0/8"),)))

    def get() -> dict[str, str]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/env.php", headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    env = await deferToThread(get)
    assert (env["REMOTE_ADDR"], env.get("HTTPS"), env["REQUEST_SCHEME"]) == ("127.0.0.1", None, "http")
