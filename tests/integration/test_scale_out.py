"""Several php-fpm hosts behind one fephp, and several fephp behind HAProxy, on a simulated network of hosts."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.front import Front
from tests.support.haproxy import Backend, Frontend, HAProxy, Server
from tests.support.load import HTTPLoad, Outcome
from tests.support.netns import FPMHost, Network, wait_until

pytestmark = pytest.mark.php

#: php-fpm's ping.path in the pools the fixtures write (fephp.process.fpmconfig).
PING = "/fephp-fpm-ping"


def start_hosts(network: Network, start_fpm: Callable[..., FPMHost], tmp_path: Path, *children: int) -> list[FPMHost]:
    """One php-fpm host per entry of *children*, each with its own session folder."""
    hosts = []
    for i, count in enumerate(children, 1):
        sessions = tmp_path / f"sessions{i}"
        sessions.mkdir()
        hosts.append(start_fpm(network.add_host(f"php{i}"), children=count, ini={"session.save_path": str(sessions)}))
    return hosts


def by_host(outcomes: list[Outcome], hosts: list[FPMHost], pids: dict[int, str]) -> Counter:
    """How many answered requests each host served, by the pid in the answer."""
    return Counter(pids.get(int(o.body.split()[0]), "?") for o in outcomes if o.ok)


def host_pids(hosts: list[FPMHost]) -> dict[int, str]:
    found = {}
    for fpm in hosts:
        assert fpm.process is not None
        for pid in fpm.process.members():
            found[pid] = fpm.host.name
    return found


def test_requests_split_by_capacity_between_4_and_8_children(network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """Under load, backends of 4 and 8 children (pools of 4 and 8) serve about 1 and 2 shares of a 50 ms script."""
    hosts = start_hosts(network, start_fpm, tmp_path, 4, 8)
    front = Front(network.root, tmp_path / "front", php={
        "backends": [{"address": hosts[0].listen, "pool_size": 4}, {"address": hosts[1].listen, "pool_size": 8}],
    }).start()
    load = HTTPLoad(network, front.address, "/who.php?ms=50", total=600, concurrency=16, timeout=10, within=60, keep_alive=True).start()
    outcomes = load.wait()
    assert [o for o in outcomes if not o.ok] == []
    counts = by_host(outcomes, hosts, host_pids(hosts))
    ratio = counts["php2"] / counts["php1"]
    print(f"split 4:8 children: {counts['php1']}:{counts['php2']} = 1:{ratio:.2f}")
    assert set(counts) == {"php1", "php2"}
    assert 1.6 < ratio < 2.5, counts


def answered_by(outcomes: list[Outcome], pids: set[int], after: float = 0.0) -> list[Outcome]:
    """The answered requests that started after *after* and were served by one of *pids*."""
    return [o for o in outcomes if o.ok and o.started > after and int(o.body.split()[0]) in pids]


def test_killed_host_under_load_fails_only_its_requests_in_flight_and_rejoins(network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """Killing one of three php-fpm hosts under load hangs nothing, fails at most its requests in flight, and restarted it rejoins by itself."""
    hosts = start_hosts(network, start_fpm, tmp_path, 2, 2, 2)
    front = Front(network.root, tmp_path / "front", php={"fpm_socket": [h.listen for h in hosts], "worker_pool_size": 2},
                  timeouts={"connect": 1, "response": 10}).start()
    load = HTTPLoad(network, front.address, "/who.php?ms=20", total=50000, concurrency=6, timeout=15, within=120,
                    keep_alive=True).start()
    wait_until(lambda: load.completed >= 60, "60 answers before the kill")
    victim = hosts[1]
    old_pids = {pid for pid, name in host_pids(hosts).items() if name == victim.host.name}
    killed_at = time.monotonic()
    victim.kill()
    front.wait_log("taken out of service")
    out_after = time.monotonic() - killed_at
    done = load.completed
    wait_until(lambda: load.completed >= done + 60, "60 answers with the host dead")
    restarted_at = time.monotonic()
    victim.start()
    assert victim.process is not None
    new_pids = set(victim.process.members())
    back = wait_until(lambda: answered_by(load.outcomes(), new_pids, restarted_at), "an answer from the restarted host", within=30)
    back_after = min(o.ended for o in back) - restarted_at
    done = load.completed
    wait_until(lambda: load.completed >= done + 30, "30 more answers")
    load.stop()
    outcomes = load.wait()
    failed = [o for o in outcomes if not o.ok]
    print(f"kill: {len(outcomes)} requests, {len(failed)} failed {[o.status or o.error for o in failed]},"
          f" {sum(o.hung for o in outcomes)} hung; out after {out_after:.2f} s, back {back_after:.2f} s after restart")
    assert len(outcomes) == load.started and [o for o in outcomes if o.hung] == []
    assert len(failed) <= 2 and all(o.status == 502 for o in failed)  # at most the victim's two requests in flight
    assert answered_by(outcomes, old_pids, killed_at + out_after) == []
    counts = by_host([o for o in outcomes if o.started > killed_at + out_after and o.ended < restarted_at], hosts,
                     host_pids([h for h in hosts if h is not victim]))
    assert set(counts) == {"php1", "php3"}


def test_frozen_host_is_found_by_its_ping_and_thawed_rejoins(network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """A SIGSTOPped php-fpm host is taken out by a ping that goes unanswered; only its requests in flight fail (504), none hang; thawed, it rejoins."""
    hosts = start_hosts(network, start_fpm, tmp_path, 2, 2)
    front = Front(network.root, tmp_path / "front",
                  php={"fpm_socket": [h.listen for h in hosts], "worker_pool_size": 2, "ping_path": PING, "ping_interval": 0.5},
                  timeouts={"connect": 1, "response": 3, "ping": 0.5}).start()
    load = HTTPLoad(network, front.address, "/who.php?ms=20", total=50000, concurrency=3, timeout=8, within=120,
                    keep_alive=True).start()
    wait_until(lambda: load.completed >= 60, "60 answers before the freeze")
    victim = hosts[0]
    frozen_pids = {pid for pid, name in host_pids(hosts).items() if name == victim.host.name}
    frozen_at = time.monotonic()
    victim.freeze()
    front.wait_log("taken out of service")
    out_after = time.monotonic() - frozen_at
    done = load.completed
    wait_until(lambda: load.completed >= done + 60, "60 answers with the host frozen")
    thawed_at = time.monotonic()
    victim.thaw()
    back = wait_until(lambda: answered_by(load.outcomes(), frozen_pids, thawed_at), "an answer from the thawed host", within=30)
    back_after = min(o.ended for o in back) - thawed_at
    load.stop()
    outcomes = load.wait()
    failed = [o for o in outcomes if not o.ok]
    print(f"freeze: {len(outcomes)} requests, {len(failed)} failed {[o.status or o.error for o in failed]},"
          f" {sum(o.hung for o in outcomes)} hung; out after {out_after:.2f} s, back {back_after:.2f} s after thaw")
    assert len(outcomes) == load.started and [o for o in outcomes if o.hung] == []
    assert len(failed) <= 2 and all(o.status == 504 for o in failed)
    during = [o for o in outcomes if frozen_at + out_after < o.started and o.ended < thawed_at]
    assert during and all(o.ok for o in during)


def get_with_cookies(network: Network, address: tuple[str, int], path: str, jar: dict[str, str]) -> tuple[int, bytes]:
    """One GET from the root namespace carrying *jar*'s cookies; the cookies the answer sets go into *jar*."""
    network._check_target(address[0])
    conn = http.client.HTTPConnection(address[0], address[1], timeout=10, source_address=(network.root_address, 0))
    try:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]
        return response.status, response.read()
    finally:
        conn.close()


def test_session_affinity_keeps_each_php_session_on_its_host(network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """With session_affinity, each client's PHP file session (one folder per host) counts 1 to 6 over six requests, sessions spread over the hosts."""
    hosts = start_hosts(network, start_fpm, tmp_path, 2, 2, 2)
    front = Front(network.root, tmp_path / "front",
                  php={"fpm_socket": [h.listen for h in hosts], "worker_pool_size": 2, "session_affinity": True}).start()
    pids = host_pids(hosts)
    jars: list[dict[str, str]] = [{} for _ in range(12)]
    counts: list[list[int]] = [[] for _ in jars]
    served: list[set[str]] = [set() for _ in jars]
    for _ in range(6):
        for jar, seen, where in zip(jars, counts, served):
            status, body = get_with_cookies(network, front.address, "/session.php", jar)
            pid, count = body.split()
            assert status == 200
            seen.append(int(count))
            where.add(pids[int(pid)])
    assert counts == [[1, 2, 3, 4, 5, 6]] * len(jars)
    assert all(len(where) == 1 for where in served)
    assert len(set().union(*served)) > 1
    pinned = sum(1 for jar in jars if "PHPSESSID_backend" in jar)
    print(f"affinity: {len(jars)} sessions on {sorted(set().union(*served))}, {pinned} pinned by PHPSESSID_backend")


def test_haproxy_in_front_of_two_fephp_with_the_proxy_protocol(network: Network, start_fpm: Any, start_haproxy: Any, tmp_path: Path) -> None:
    """HAProxy sends PROXY v2 to two fephp on hosts of their own (PHP sees the real client); one killed under load, its health check moves the traffic, nothing hangs."""
    hosts = start_hosts(network, start_fpm, tmp_path, 4, 4)
    php = {"fpm_socket": [h.listen for h in hosts], "worker_pool_size": 2}
    fe_hosts = [network.add_host("fe1"), network.add_host("fe2")]
    fronts = [Front(h, tmp_path / h.name, listen=f"haproxy:tcp:8080:interface={h.address}", php=php).start() for h in fe_hosts]
    lb_host = network.add_host("lb")
    lb: HAProxy = start_haproxy(
        network,
        [Frontend("web", lb_host.address, 8080, "fephp")],
        [Backend("fephp", tuple(Server(h.name, h.address, 8080, proxy_protocol="v2") for h in fe_hosts),
                 balance="leastconn", check_path="/health.txt")],
        host=lb_host,
    )
    for h in fe_hosts:
        lb.wait_server("fephp", h.name, "UP")  # its checks speak PROXY v2 too
    status, body = network.http_get(lb.frontend_address("web"), "/who.php")
    assert (status, body.split()[1].decode()) == (200, network.root_address)
    assert network.root_address != lb_host.address
    load = HTTPLoad(network, lb.frontend_address("web"), "/who.php?ms=20", total=50000, concurrency=4, timeout=10,
                    within=120, keep_alive=True).start()
    wait_until(lambda: load.completed >= 60, "60 answers through HAProxy")
    killed_at = time.monotonic()
    fronts[0].kill()
    lb.wait_server("fephp", "fe1", "DOWN")
    down_after = time.monotonic() - killed_at
    served_by_fe1 = lb.server("fephp", "fe1").sessions_total
    done = load.completed
    wait_until(lambda: load.completed >= done + 60, "60 answers after fe1 went DOWN")
    load.stop()
    outcomes = load.wait()
    failed = [o for o in outcomes if not o.ok]
    print(f"haproxy: {len(outcomes)} requests, {len(failed)} failed {[o.status or o.error for o in failed]},"
          f" {sum(o.hung for o in outcomes)} hung; fe1 DOWN after {down_after:.2f} s")
    assert len(outcomes) == load.started and [o for o in outcomes if o.hung] == []
    # At most those in flight on fe1, each answered 502 or cut by HAProxy at once.
    assert len(failed) <= 4 and all(o.status in (502, 503) or o.error == "reset" for o in failed)
    assert lb.server("fephp", "fe1").sessions_total == served_by_fe1
    assert {o.body.split()[1].decode() for o in outcomes if o.ok} == {network.root_address}


def test_ping_takes_out_a_frozen_host_before_any_request_waits_on_it(network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """With no request in flight, a frozen host's unanswered ping takes it out within ping_interval + timeouts.ping; then no request is sent to it."""
    hosts = start_hosts(network, start_fpm, tmp_path, 2, 2)
    front = Front(network.root, tmp_path / "front",
                  php={"fpm_socket": [h.listen for h in hosts], "worker_pool_size": 2, "ping_path": PING, "ping_interval": 0.5},
                  timeouts={"connect": 1, "response": 30, "ping": 0.5}).start()
    pids = host_pids(hosts)
    assert {pids[int(network.http_get(front.address, "/who.php")[1].split()[0])] for _ in range(10)} == {"php1", "php2"}
    frozen_at = time.monotonic()
    hosts[0].freeze()
    # The log line is the event: with no request in flight only the ping can
    # take the host out (the response timeout is 30 s), so no window is
    # asserted on how soon; wait_log's 10 s bounds it.
    front.wait_log("taken out of service", within=10)
    out_after = time.monotonic() - frozen_at
    outcomes = HTTPLoad(network, front.address, "/who.php", total=200, concurrency=4, timeout=5, within=60).start().wait()
    print(f"idle freeze: out after {out_after:.2f} s; then {sum(o.ok for o in outcomes)}/{len(outcomes)} answered")
    assert [o for o in outcomes if not o.ok] == []
    assert set(by_host(outcomes, hosts, pids)) == {"php2"}
    hosts[0].thaw()
    front.wait_log("back in service", within=10)


def test_workers_share_each_backends_pool(network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """With server.workers: 2, each worker keeps pool_size // 2 connections to each backend: never more than pool_size in all, and both serve."""
    hosts = start_hosts(network, start_fpm, tmp_path, 4, 4)
    front = Front(network.root, tmp_path / "front", server={"workers": 2},
                  php={"backends": [{"address": h.listen, "pool_size": 4} for h in hosts]}).start()
    seen: list[int] = []
    load = HTTPLoad(network, front.address, "/who.php?ms=30", total=400, concurrency=12, timeout=10, within=60).start()
    deadline = time.monotonic() + 60
    while load.completed < 300 and time.monotonic() < deadline:
        seen.append(max(len(established_to(h)) for h in hosts))
        time.sleep(0.05)  # sampling another process's sockets while the load runs, not waiting for an event
    outcomes = load.wait()
    assert [o for o in outcomes if not o.ok] == []
    assert set(by_host(outcomes, hosts, host_pids(hosts))) == {"php1", "php2"}
    assert 0 < max(seen) <= 4  # unshared, two workers would hold up to 8


def established_to(fpm: FPMHost) -> list[str]:
    """The remote ends of the ESTABLISHED connections to *fpm*'s port, as its own namespace sees them."""
    assert fpm.process is not None
    port = f"{fpm.port:04X}"
    found = []
    with open(f"/proc/{fpm.process.pid}/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local_address, local_port = fields[1].split(":")
            if fields[3] == "01" and local_port == port and local_address == _hex_address(fpm.host.address):
                found.append(fields[2])
    return found


def _hex_address(address: str) -> str:
    return "".join(f"{int(part):02X}" for part in reversed(address.split(".")))


def post(network: Network, address: tuple[str, int], path: str, body: bytes, timeout: float = 15.0) -> int:
    """One POST from the root namespace on a kept connection of its own: the status."""
    conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout, source_address=(network.root_address, 0))
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_post_php_was_running_is_not_sent_to_another_host_when_its_host_dies(network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """A POST whose php-fpm host is killed while the script runs gets 502, and the script ran once: no other host ran it again."""
    hosts = start_hosts(network, start_fpm, tmp_path, 1, 1)
    front = Front(network.root, tmp_path / "front",
                  php={"fpm_socket": [h.listen for h in hosts], "worker_pool_size": 1}, timeouts={"connect": 1}).start()
    pids = host_pids(hosts)
    # Both hosts' connections kept open first, so the POST runs on a kept one (where a stale-connection retry could happen).
    assert {pids[int(network.http_get(front.address, "/who.php")[1].split()[0])] for _ in range(6)} == {"php1", "php2"}
    log = tmp_path / "runs.log"
    log.touch()
    outcome: list[int] = []
    poster = threading.Thread(target=lambda: outcome.append(post(network, front.address, f"/mark.php?ms=3000&log={log}", b"x" * 1000)))
    poster.start()
    ran = wait_until(lambda: log.read_text().split(), "the script to start")
    victim = next(h for h in hosts if int(ran[0]) in host_pids([h]))
    victim.kill()
    poster.join(20)
    assert not poster.is_alive()
    assert outcome == [502]
    assert log.read_text().split() == ran  # once, on the host that died


def test_a_reload_adds_a_host_and_drains_one_under_load_without_a_failure(network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """SIGHUP with a third host added brings it traffic; SIGHUP with drain on the first sends it nothing new; no request fails."""
    hosts = start_hosts(network, start_fpm, tmp_path, 2, 2, 2)
    listed = [{"address": h.listen, "pool_size": 2} for h in hosts]
    front = Front(network.root, tmp_path / "front", php={"backends": listed[:2]}).start()
    load = HTTPLoad(network, front.address, "/who.php?ms=20", total=50000, concurrency=4, timeout=10, within=120,
                    keep_alive=True).start()
    wait_until(lambda: load.completed >= 40, "40 answers before the first reload")
    pids = host_pids(hosts)
    front.reload(php={"backends": listed})
    front.wait_log("reload: serving")
    added_at = time.monotonic()
    php3 = {pid for pid, name in pids.items() if name == "php3"}
    wait_until(lambda: answered_by(load.outcomes(), php3, added_at), "an answer from the added host")
    front.reload(php={"backends": [dict(listed[0], drain=True), *listed[1:]]})
    front.wait_log("reload: serving", count=2)
    drained_at = time.monotonic()
    done = load.completed
    wait_until(lambda: load.completed >= done + 60, "60 answers after the drain")
    load.stop()
    outcomes = load.wait()
    assert len(outcomes) == load.started and [o for o in outcomes if not o.ok] == []
    php1 = {pid for pid, name in pids.items() if name == "php1"}
    assert answered_by(outcomes, php1, drained_at) == []
    assert set(by_host([o for o in outcomes if o.started > drained_at], hosts, pids)) == {"php2", "php3"}
    assert "drains: its requests in flight finish" in front.log_text()  # the balancer was told, not rebuilt


def test_admin_status_names_every_backend_and_readyz_holds_while_one_answers(network: Network, start_fpm: Any, tmp_path: Path) -> None:
    """/status lists each php-fpm backend with its state; /readyz answers 200 while any backend answers its ping, 503 once none does."""
    hosts = start_hosts(network, start_fpm, tmp_path, 2, 2)
    admin_port = 9100
    front = Front(network.root, tmp_path / "front", php={"fpm_socket": [h.listen for h in hosts], "ping_path": PING},
                  extra={"admin": {"listen": [f"tcp:{admin_port}:interface={network.root_address}"]}}).start()
    admin = (network.root_address, admin_port)
    network.wait_connectable(admin)
    assert network.http_get(admin, "/readyz")[0] == 200
    for _ in range(4):
        assert network.http_get(front.address, "/who.php")[0] == 200
    status = json.loads(network.http_get(admin, "/status")[1])
    assert [b["name"] for b in status["backends"]] == [h.listen for h in hosts]
    hosts[0].kill()
    assert network.http_get(front.address, "/who.php")[0] == 200  # goes to the other
    assert network.http_get(admin, "/readyz")[0] == 200
    hosts[1].kill()
    wait_until(lambda: network.http_get(admin, "/readyz")[0] == 503, "/readyz to say 503 with no php-fpm answering", within=10)
