"""``fephp bench``'s own Python cost per request, with no sockets: where the microseconds go.

A closed-loop run (``--rps 0``, one connection) on Twisted's fake reactor:
each time an nginx-like 13-byte response is fed to the connection, the
runner parses it, records its latency and writes the next request to an
in-memory transport.  That is every line of ``fephp bench`` and of Twisted's
protocol glue that a request runs, minus the reactor's poll loop and the
kernel.  Prints the best time per request over several runs (robust on a
busy machine), and with ``--profile`` the functions that take the most time.

Run with the interpreter to measure: ``python3 benchmarks/bench_path.py``,
``pypy3 benchmarks/bench_path.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.testing import MemoryReactorClock  # noqa: E402

from fephp.bench.runner import BenchConfig, BenchRun  # noqa: E402

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 20:28:29 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nLast-Modified: Tue, 01 Dec 2026 20:14:25 GMT\r\n"
    b'Connection: keep-alive\r\nETag: "6b0f2aa1-d"\r\nAccept-Ranges: bytes\r\n\r\nHello, world!'
)


class _NullTransport:
    """Takes writes and drops them, as a socket with room would."""

    disconnecting = False
    connected = True

    def write(self, data: bytes) -> None:
        pass

    def abortConnection(self) -> None:  # noqa: N802
        pass

    def loseConnection(self) -> None:  # noqa: N802
        pass


def loop(requests: int) -> float:
    """Seconds per request over *requests* answered requests."""
    clock = [0.0]
    config = BenchConfig(urls=("http://127.0.0.1:8080/hello.txt",), rps=0, concurrency=1, duration=1e9, timeout=1e9)
    reactor = MemoryReactorClock()
    run = BenchRun(config, reactor, now=lambda: clock[0])
    run.run()
    _, _, factory, _, _ = reactor.tcpClients[0]
    protocol: Any = factory.buildProtocol(None)
    protocol.makeConnection(_NullTransport())
    feed = protocol.dataReceived
    started = time.perf_counter()
    for _ in range(requests):
        clock[0] += 0.0001
        feed(RESPONSE)
    return (time.perf_counter() - started) / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="requests per run (default 100000)")
    parser.add_argument("--runs", type=int, default=7, help="runs; the best is printed (default 7)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one run")
    args = parser.parse_args()
    loop(min(args.requests, 20_000))  # warm up (PyPy's JIT)
    best = min(loop(args.requests) for _ in range(args.runs))
    print(f"{sys.implementation.name} {sys.version.split()[0]}: {best * 1e6:.2f} µs per request "
          f"(best of {args.runs} runs of {args.requests})")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(loop, args.requests)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
