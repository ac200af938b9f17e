"""Several php-fpm hosts behind one fephp, and several fephp behind HAProxy, on a simulated network of hosts."""

from __future__ import annotations

import http.client
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.front import Front
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
