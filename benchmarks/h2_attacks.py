"""The HTTP/2 attacks of issue 22 against fephp and nginx side by side, each over TLS (ALPN h2) with its own php-fpm pool: a script, not a test.

    .venv/bin/python benchmarks/h2_attacks.py                  # both servers
    .venv/bin/python benchmarks/h2_attacks.py --only nginx     # or fephp
    .venv/bin/python benchmarks/h2_attacks.py --python .venv-pypy/bin/python   # fephp on PyPy (a PyPy venv, as .ci/run makes)

Per attack and server it prints: the PHP runs the attack caused, the
server's RSS growth (fephp's process, nginx's one worker), the CPU seconds
it spent, a fresh client's p50/p99 during the attack (GETs of a static file
on a connection of its own; PHP GETs for the zero-window attack), and what
the attacking connections saw (GOAWAY codes, closes).  Both servers have
3 s client timeouts (client_body, client_send, keepalive; nginx's
client_header/body_timeout, send_timeout, keepalive_timeout), fephp 4
FastCGI connections, each php-fpm 8 children.  Everything runs on
127.0.0.1 and is bounded (tests.support.h2attacks).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fephp.process.binaries import find_php  # noqa: E402
from tests.support.docroot import make_docroot  # noqa: E402
from tests.support.h2attacks import (  # noqa: E402
    CONTROL_FLOODS,
    Flood,
    Prober,
    continuation_flood,
    control_flood,
    oversized_data,
    php_runs,
    rapid_reset,
    settle_php,
)
from tests.support.h2raw import SETTINGS_INITIAL_WINDOW_SIZE, RawH2, headers  # noqa: E402
from tests.support.h2target import FephpH2, NginxH2  # noqa: E402
from tests.support.php_fpm import PHPFPM  # noqa: E402

#: The fresh client's pace (20 ms: 50 requests a second, the same small
#: load on both servers, so that CPU seconds are the attack's) and the least
#: time it probes from an attack's start.
PACE = 0.020
WINDOW = 3.0

Attack = Callable[[Any, Path], tuple[str, list[Flood]]]


def _summary(floods: list[Flood]) -> str:
    """GOAWAY codes and closes of the attacking connections, counted: "8x GOAWAY 0xb+close"."""
    kinds = collections.Counter(
        ("GOAWAY 0x%x" % f.goaway if f.goaway is not None else "no GOAWAY") + ("+close" if f.closed else "") for f in floods
    )
    return ", ".join(f"{n}x {kind}" for kind, n in kinds.most_common())


def _in_parallel(count: int, job: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        results[i] = job()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def attacks(connections: int, streams: int) -> dict[str, tuple[str, Attack]]:
    """Each attack by name: the prober's path and the attack, which returns the tag prefix PHP would log and what its connections saw."""
    table: dict[str, tuple[str, Attack]] = {
        f"rapid reset {connections}x{streams}": (
            "/static/hello.txt",
            lambda s, root: ("rr", rapid_reset(s.port, connections=connections, streams=streams, tag="rr")),
        ),
        "CONTINUATION flood x4": (
            "/static/hello.txt",
            lambda s, root: ("cont", _in_parallel(4, lambda: continuation_flood(s.port))),
        ),
        "empty CONTINUATION flood": (
            "/static/hello.txt",
            lambda s, root: ("cont", [continuation_flood(s.port, empty=True)]),
        ),
        "16 MiB DATA frames x4": (
            "/static/hello.txt",
            lambda s, root: ("oversized", _in_parallel(4, lambda: oversized_data(s.port))),
        ),
    }
    for kind in sorted(CONTROL_FLOODS):
        table[f"{kind} flood x2"] = ("/static/hello.txt", _control(kind))
    table["zero window, 8 PHP streams"] = ("/once.php?tag=zprobe", _zero_window)
    table["stalled uploads x100"] = ("/static/hello.txt", _stalled)
    return table


def _control(kind: str) -> Attack:
    def attack(server: Any, root: Path) -> tuple[str, list[Flood]]:
        return "emptydata", _in_parallel(2, lambda: control_flood(server.port, kind, within=5.0))

    return attack


def _zero_window(server: Any, root: Path) -> tuple[str, list[Flood]]:
    """Eight 256 KiB PHP answers to a client that opens no window, held 5 s (past the 3 s client timeouts), then dropped."""
    client = RawH2(server.port, initial_settings={SETTINGS_INITIAL_WINDOW_SIZE: 0}, auto_window=False)
    client.send(b"".join(headers(2 * i + 1, client.block(f"/big.php?n=262144&z={i}")) for i in range(8)))
    started = time.monotonic()
    client.read_until(lambda c: c.closed, 5.0)
    resets = sum(1 for s in client.streams.values() if s.reset is not None)
    flood = Flood(client.goaway, client.closed, client.bytes_sent, resets, time.monotonic() - started)
    client.close()
    return "", [flood]  # big.php logs nothing: PHP runs 8 times, as asked


def _stalled(server: Any, root: Path) -> tuple[str, list[Flood]]:
    """100 POSTs promising 100 bytes that never come, on one connection, watched 5 s: how many were ended by the server."""
    client = RawH2(server.port)
    ids = [2 * i + 1 for i in range(100)]
    blocks = [client.block(f"/once.php?tag=stall{s}", "POST", [("content-length", "100")]) for s in ids]
    client.send(b"".join(headers(s, b, end_stream=False) for s, b in zip(ids, blocks)))
    started = time.monotonic()
    client.read_until(lambda c: all(c.stream(s).done for s in ids), 5.0)
    ended = sum(1 for s in ids if client.stream(s).done)
    flood = Flood(client.goaway, client.closed, client.bytes_sent, ended, time.monotonic() - started)
    client.close()
    return "stall", [flood]


def _probe(port: int, path: str, stop: Any, results: Any) -> None:
    """The fresh client's process: probe until *stop* is set, then put (latencies, failures) on *results*."""
    prober = Prober(port, path).run(5000, 60.0, stop, PACE)
    results.put((prober.latencies, prober.failures))


def measure(server: Any, root: Path, name: str, probe_path: str, attack: Attack) -> dict[str, Any]:
    """One attack against *server*, a prober beside it; the row of the table."""
    settle_php(server.port, 1)
    rss, cpu = server.rss_mib(), server.cpu_seconds()
    # The fresh client runs in a process of its own: beside the attack's
    # threads in this one, it would wait for the GIL, not for the server.
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    results: Any = context.Queue()
    beside = context.Process(target=_probe, args=(server.port, probe_path, stop, results))
    beside.start()
    started = time.monotonic()
    prefix, floods = attack(server, root)
    seconds = time.monotonic() - started
    # An attack closed in milliseconds leaves the prober too few samples: it
    # runs on to WINDOW seconds after the attack's start (during and after).
    time.sleep(max(0.0, WINDOW - seconds))
    stop.set()
    prober = Prober(server.port, probe_path)
    prober.latencies, prober.failures = results.get(timeout=70)
    beside.join(timeout=10)
    settle_php(server.port, 4)
    return {
        "attack": name,
        "server": server.name,
        "php": php_runs(root, prefix) if prefix else "-",
        "rss": server.rss_mib() - rss,
        "cpu": server.cpu_seconds() - cpu,
        "seconds": seconds,
        "p50": prober.quantile(0.5) * 1000,
        "p99": prober.quantile(0.99) * 1000,
        "probes": len(prober.latencies),
        "failed": prober.failures,
        "seen": _summary(floods) + (f" ({sum(f.frames_sent for f in floods)} streams ended)" if prefix in ("", "stall") else ""),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("fephp", "nginx"), help="attack one server only")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs fephp (PyPy's, say)")
    parser.add_argument("--connections", type=int, default=100, help="rapid reset: connections at once")
    parser.add_argument("--streams", type=int, default=100, help="rapid reset: streams opened and reset per connection")
    parser.add_argument("--attack", action="append", help="run only the attacks whose names contain this (repeatable)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="h2-attacks-"))
    binary = find_php("php-fpm")
    if binary is None:
        parser.error("no php-fpm found")
    rows = []
    try:
        for name in ("fephp", "nginx"):
            if args.only and args.only != name:
                continue
            fpm = PHPFPM(tmp / name / "fpm", children=8, binary=binary).start()
            root = make_docroot(tmp / name)
            server: Any = (
                FephpH2(tmp / name / "server", root, fpm.unix_path, python=args.python)
                if name == "fephp" else NginxH2(tmp / name / "server", root, fpm.unix_path)
            ).start()
            try:
                for attack_name, (path, attack) in attacks(args.connections, args.streams).items():
                    if args.attack and not any(a in attack_name for a in args.attack):
                        continue
                    row = measure(server, root, attack_name, path, attack)
                    rows.append(row)
                    print(_line(row), flush=True)
                if name == "fephp":
                    problems = server.problems()
                    print(f"fephp's log: {len(problems)} unhandled errors" + ("".join("\n  " + p for p in problems[:4])))
            finally:
                server.stop()
                fpm.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| attack | server | PHP runs | RSS +MiB | CPU s | fresh p50 ms | fresh p99 ms | probes | attacking connections saw |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in sorted(rows, key=lambda r: (list(attacks(args.connections, args.streams)).index(r["attack"]), r["server"])):
        print(
            f"| {row['attack']} | {row['server']} | {row['php']} | {row['rss']:.1f} | {row['cpu']:.2f} | "
            f"{row['p50']:.1f} | {row['p99']:.1f} | {row['probes']} | {row['seen']} |"
        )
    return 0


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['server']:6} {row['attack']:28} php={row['php']!s:<5} rss=+{row['rss']:.1f} MiB cpu={row['cpu']:.2f} s "
        f"p50={row['p50']:.1f} p99={row['p99']:.1f} ms ({row['probes']} probes, {row['failed']} failed) {row['seen']}"
    )


if __name__ == "__main__":
    sys.exit(main())
