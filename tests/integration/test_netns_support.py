"""The simulated-network test support itself: namespaces, php-fpm hosts, HAProxy and teardown, through real processes."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from fephp.process.binaries import find_php
from tests.support.echo_http import start_echo
from tests.support.haproxy import Backend, Frontend, HAProxy, Server, render_config
from tests.support.load import HTTPLoad
from tests.support.netns import FPMHost, Host, HostProcess, Network, namespace_pids, open_network, require_netns, wait_until
from tests.support.php_fpm import fastcgi_get as php_fastcgi_get
from tests.support.processes import require_binary

#: Bound on one request in these tests; a frozen host must make a request fail within about this.
REQUEST_TIMEOUT = 1.0
#: Slack on top of REQUEST_TIMEOUT for a noisy two-core machine.
TIMEOUT_SLACK = 2.0

SCRIPT = """<?php
header('Content-Type: text/plain');
echo $_SERVER['REMOTE_ADDR'], ' ', $_SERVER['SERVER_ADDR'], ' ', getmypid();
"""


@pytest.fixture(params=["netns", "loopback"])
def each_network(request: pytest.FixtureRequest) -> Network:
    """The test on namespaces (skipped where the kernel refuses) and again on the loopback fallback."""
    return request.getfixturevalue(f"{request.param}_network")


def fastcgi_get(net: Network, address: tuple[str, int], script: Path, *, timeout: float = REQUEST_TIMEOUT,
                while_connected: Callable[[socket.socket], None] = lambda s: None) -> bytes:
    """One FastCGI request from the root namespace, REMOTE_ADDR being the source address the kernel gave it: the body."""
    with net.connect(address, timeout=timeout) as s:
        local, local_port = s.getsockname()
        while_connected(s)
        extra = {
            b"REMOTE_ADDR": local.encode(),
            b"REMOTE_PORT": str(local_port).encode(),
            b"SERVER_ADDR": address[0].encode(),
            b"SERVER_PORT": str(address[1]).encode(),
        }
        stdout, _, end = php_fastcgi_get(s, str(script), "/" + script.name, extra)
        assert (end.app_status, end.protocol_status) == (0, 0)
        return stdout.split(b"\r\n\r\n", 1)[1]


def established(pid: int, port: int) -> list[tuple[str, str]]:
    """(local, remote) of the ESTABLISHED IPv4 connections to *port* in the network namespace of process *pid*."""

    def decode(field: str) -> str:
        address, hex_port = field.split(":")
        return f"{socket.inet_ntoa(struct.pack('<I', int(address, 16)))}:{int(hex_port, 16)}"

    found = []
    with open(f"/proc/{pid}/net/tcp") as f:  # /proc/PID/net is PID's namespace's view
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
                found.append((decode(fields[1]), decode(fields[2])))
    return found


def test_fastcgi_across_hosts(each_network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """A FastCGI request from the root namespace reaches php-fpm on a host's own address, from an address of our range."""
    net = each_network
    script = tmp_path / "remote.php"
    script.write_text(SCRIPT)
    fpm: FPMHost = start_fpm(net.add_host("php1"), children=2)
    assert fpm.process is not None and net.owns(fpm.host.address)
    pid = fpm.process.pid
    ours: list[str] = []
    seen: list[tuple[str, str]] = []

    def look(s: socket.socket) -> None:
        ours.append("%s:%d" % s.getsockname())
        seen.extend(established(pid, fpm.port))

    remote, server, _ = fastcgi_get(net, fpm.address, script, while_connected=look).decode().split(" ")
    assert (remote, server) == (net.root_address, fpm.host.address)
    assert ipaddress.ip_address(remote) in net.subnet
    # The connection as php-fpm's own namespace sees it: to its listen address, from ours.
    assert (fpm.listen, ours[0]) in seen
    if net.kind == "netns":
        assert fpm.process.pid in namespace_pids(fpm.host.namespace or "")
        assert fpm.host.namespace is not None and fpm.host.namespace in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def test_hosts_reach_each_other(each_network: Network, tmp_path: Path) -> None:
    """A process on one host reaches a server on another at its address; in namespaces it arrives from its own host's address."""
    net = each_network
    server, client = net.add_host("srv"), net.add_host("cli")
    start_echo(server, 8000, "srv", log=tmp_path / "echo.log")
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://{server.address}:8000/x', timeout=5).read().decode())"
    answer = json.loads(client.run([sys.executable, "-c", fetch], timeout=30).stdout)
    # Loopback hosts share the root namespace, where the kernel picks 127.0.0.1 as the source.
    expected = client.address if net.kind == "netns" else "127.0.0.1"
    assert (answer["name"], answer["client"], answer["path"]) == ("srv", expected, "/x")


def test_frozen_fpm_times_out_and_thawed_answers(each_network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """A SIGSTOPped php-fpm makes a request time out within its bound, not refuse it; thawed, it answers again."""
    net = each_network
    script = tmp_path / "remote.php"
    script.write_text(SCRIPT)
    fpm: FPMHost = start_fpm(net.add_host("php1"), children=2)
    fpm.freeze()
    # The event is the timeout itself (a refusal would raise ConnectionRefusedError,
    # an answer return); how long it took is the socket's business, not a window to assert.
    with pytest.raises(socket.timeout):
        fastcgi_get(net, fpm.address, script)
    fpm.thaw()
    assert fastcgi_get(net, fpm.address, script, timeout=10).startswith(net.root_address.encode() + b" ")


def test_killed_fpm_refuses_and_restarts(each_network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """A SIGKILLed php-fpm leaves no child behind and refuses connects; restarted, it serves on the same address."""
    net = each_network
    script = tmp_path / "remote.php"
    script.write_text(SCRIPT)
    fpm: FPMHost = start_fpm(net.add_host("php1"), children=2)
    assert fpm.process is not None and len(fpm.process.members()) == 3  # master and two children
    old = fpm.process
    fpm.kill()
    assert old.members() == []
    with pytest.raises(ConnectionRefusedError):
        fastcgi_get(net, fpm.address, script)
    fpm.restart()
    assert fpm.process is not old
    assert fastcgi_get(net, fpm.address, script).startswith(net.root_address.encode() + b" ")


def _two_echoes_behind_haproxy(net: Network, start_haproxy: Any, tmp_path: Path) -> tuple[HostProcess, HAProxy, Host]:
    """Echo servers "a" and "b" on hosts of their own behind HAProxy on host "lb" (port 8080), both UP: a's process, HAProxy, lb's host."""
    a, b, lb_host = net.add_host("a"), net.add_host("b"), net.add_host("lb")
    echo_a = start_echo(a, 8000, "a", log=tmp_path / "a.log")
    start_echo(b, 8000, "b", log=tmp_path / "b.log")
    lb: HAProxy = start_haproxy(
        net,
        [Frontend("web", lb_host.address, 8080, "app")],
        [Backend("app", (Server("a", a.address, 8000), Server("b", b.address, 8000)))],
        host=lb_host,
    )
    lb.wait_server("app", "a", "UP")
    lb.wait_server("app", "b", "UP")
    return echo_a, lb, lb_host


def test_haproxy_moves_traffic_off_a_killed_server(each_network: Network, start_haproxy: Any, tmp_path: Path) -> None:
    """HAProxy spreads requests over two hosts; one killed, its stats socket shows it DOWN, then every request goes to the other."""
    net = each_network
    echo_a, lb, lb_host = _two_echoes_behind_haproxy(net, start_haproxy, tmp_path)
    names = [json.loads(net.http_get((lb_host.address, 8080), f"/{i}")[1])["name"] for i in range(6)]
    assert sorted(set(names)) == ["a", "b"]
    echo_a.kill()
    down = lb.wait_server("app", "a", "DOWN")
    assert down.check_status.startswith("L4")  # the connect itself failed: nothing listens any more
    answers = [net.http_get((lb_host.address, 8080), f"/{i}") for i in range(20)]
    assert [(status, json.loads(body)["name"]) for status, body in answers] == [(200, "b")] * 20
    assert lb.server("app", "b").state == "UP"


def test_load_through_a_kill_accounts_for_every_request(each_network: Network, start_haproxy: Any, tmp_path: Path) -> None:
    """A bounded load through HAProxy while one server is killed: every request ends, none hangs, and the last ones all reach the survivor."""
    net = each_network
    echo_a, lb, lb_host = _two_echoes_behind_haproxy(net, start_haproxy, tmp_path)
    load = HTTPLoad(net, (lb_host.address, 8080), "/", total=20000, concurrency=4, timeout=REQUEST_TIMEOUT + TIMEOUT_SLACK, within=60).start()
    wait_until(lambda: load.completed >= 30, "the first 30 answers")
    echo_a.kill()
    lb.wait_server("app", "a", "DOWN")
    down_at = time.monotonic()
    done_at_down = load.completed
    wait_until(lambda: load.completed >= done_at_down + 30, "30 answers after a was marked DOWN")
    load.stop()
    outcomes = load.wait()
    assert len(outcomes) == load.started and [o for o in outcomes if o.hung] == []
    assert [o for o in outcomes if not o.ok and o.status not in (502, 503)] == []  # HAProxy's answers for a dead server
    after = [json.loads(o.body)["name"] for o in outcomes if o.started > down_at]
    assert after and set(after) == {"b"}


def test_proxy_protocol_v2_shows_the_real_client(each_network: Network, start_haproxy: Any, tmp_path: Path) -> None:
    """Behind HAProxy's send-proxy-v2, a Twisted haproxy: endpoint sees the client's address, not HAProxy's."""
    net = each_network
    app, lb_host = net.add_host("app"), net.add_host("lb")
    start_echo(app, 8000, "app", proxy_protocol=True, log=tmp_path / "app.log")
    lb: HAProxy = start_haproxy(
        net,
        [Frontend("web", lb_host.address, 8080, "app")],
        [Backend("app", (Server("app", app.address, 8000, proxy_protocol="v2"),))],
        host=lb_host,
    )
    lb.wait_server("app", "app", "UP")  # the health checks speak PROXY v2 too
    status, body = net.http_get((lb_host.address, 8080), "/who")
    answer = json.loads(body)
    assert (status, answer["name"], answer["client"]) == (200, "app", net.root_address)
    assert answer["client"] != lb_host.address
    assert "send-proxy-v2" in lb.config.read_text()
    assert lb.operational_states() == {("app", "app"): 2}  # show servers state: SRV_ST_RUNNING


def _identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time) while *pid* lives and is not a zombie: tells a process from a later one that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else (pid, fields[19])


def _ip_lines(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10).stdout


@pytest.mark.parametrize("kind", ["netns", "loopback"])
def test_teardown_leaves_nothing_even_when_the_test_fails(kind: str, tmp_path: Path) -> None:
    """A network closed by a failing test leaves no namespace, veth, bridge, route, claim or process, frozen or stubborn ones included."""
    if kind == "netns":
        require_netns()
    binary = require_binary(find_php("php-fpm"), "php-fpm")
    made: dict[str, Any] = {}

    class TestFailed(Exception):
        pass

    with pytest.raises(TestFailed):
        with open_network(kind) as net:
            made["network"] = net
            host = net.add_host("a")
            fpm = FPMHost(host, tmp_path / "fpm", binary=binary, children=2).start()
            fpm.freeze()
            stubborn = host.spawn([sys.executable, "-c",
                                   "import signal, sys, time\n"
                                   "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                   "time.sleep(600)  # hangs, as a stuck process would"])
            beside = net.root.spawn([sys.executable, "-c", "import time; time.sleep(600)"])
            expected = {fpm.process.pid, stubborn.pid, beside.pid}  # type: ignore[union-attr]
            if kind == "netns":
                # One that left its process group: only the namespace still knows it.
                escaped = host.spawn(["sh", "-c", "setsid sleep 600 & wait"])
                expected.add(escaped.pid)
                known = set(fpm.process.members()) | {stubborn.pid}  # type: ignore[union-attr]
                wait_until(lambda: set(namespace_pids(host.namespace or "")) - known - set(escaped.members()),
                           "a process in the namespace outside every group we started")
                made["namespace"], made["veth"] = host.namespace, host.veth
                made["bridge"], made["route"] = net._claim.bridge, net._claim.route
            pids = set(host.pids()) | set(fpm.process.members()) | set(net.root.pids())  # type: ignore[union-attr]
            assert expected <= pids
            made["processes"] = [i for i in map(_identity, pids) if i is not None]
            made["claim"] = net._claim.path
            assert made["claim"].exists()
            raise TestFailed()
    assert [i for i in made["processes"] if _identity(i[0]) == i] == []
    assert not made["claim"].exists()
    if kind == "netns":
        assert made["namespace"] not in _ip_lines("netns", "list")
        links = _ip_lines("-o", "link", "show")
        assert made["veth"] not in links and made["bridge"] not in links
        assert made["route"] not in _ip_lines("-4", "route", "show")


def test_a_dead_sessions_network_is_swept_by_the_next(netns_network: Network, tmp_path: Path) -> None:
    """What a session killed before its teardown left (namespace, processes, slot) is removed when another network opens."""
    net = netns_network
    host = net.add_host("a")
    orphan = host.spawn([sys.executable, "-c", "import time; time.sleep(600)"])
    # Until ip netns exec has entered the namespace, only the group (which a sweep does not know) finds it.
    wait_until(lambda: orphan.pid in namespace_pids(host.namespace or ""), "the process to enter its namespace")
    claim = net._claim
    claim.owner_start = "0"  # as if its session had died: no live process started then
    claim.save()
    with open_network("netns"):
        pass
    assert _identity(orphan.pid) is None  # killed (at most a zombie until we reap it)
    assert host.namespace is not None and host.namespace not in _ip_lines("netns", "list")
    assert not claim.path.exists()


def test_targets_outside_the_network_are_refused(network: Network) -> None:
    """The helpers refuse to send to any address outside the network and loopback."""
    with pytest.raises(ValueError, match="outside"):
        network.connect(("192.0.2.1", 80), timeout=1)
    with pytest.raises(ValueError, match="outside"):
        network.http_get(("10.1.2.3", 80))
    with pytest.raises(ValueError, match="outside"):
        HAProxy(network, [], [Backend("x", (Server("s", "203.0.113.9", 80),))], Path("/nonexistent"), binary="haproxy")


def test_render_config_names_checks_and_proxy_protocol() -> None:
    """The generated haproxy.cfg has the httpchk path, short check intervals and the PROXY keyword asked for."""
    text = render_config(
        [Frontend("web", "198.18.0.2", 8080, "app")],
        [Backend("app", (Server("a", "198.18.0.3", 8000), Server("b", "198.18.0.4", 8000, weight=2, proxy_protocol="v1")),
                 inter_ms=50, fall=3, rise=1)],
        stats_socket="/tmp/x.sock",
    )
    assert "    option httpchk GET /readyz\n" in text
    assert "    default-server inter 50ms fastinter 50ms downinter 50ms fall 3 rise 1\n" in text
    assert "    server a 198.18.0.3:8000 weight 1 check\n" in text
    assert "    server b 198.18.0.4:8000 weight 2 check send-proxy\n" in text
    assert "    bind 198.18.0.2:8080\n" in text
    with pytest.raises(ValueError, match="names backend 'nope'"):
        render_config([Frontend("web", "198.18.0.2", 80, "nope")], [], stats_socket="/tmp/x.sock")
    with pytest.raises(ValueError, match="proxy_protocol"):
        render_config([], [Backend("app", (Server("a", "198.18.0.3", 80, proxy_protocol="v3"),))], stats_socket="/s")
