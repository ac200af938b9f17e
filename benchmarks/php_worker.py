"""Microseconds per request round trip to one PHP worker over its pipes: fephp's PSR-7 library beside the bare protocol.

One worker process, one request at a time, driven by fephp.roadrunner's
client over blocking pipes (no reactor, no HTTP): what a request costs in
the worker and the pipe, the floor under the worker backend to come.

- ``library``: examples/worker/app.php's ``/hello`` (php/fephp-worker.php:
  the context to a nyholm ServerRequest, a JSON response back);
- ``bare``: tests/php/roadrunner/worker.php's ``/hello`` (frames in plain
  PHP, no PSR-7): the protocol's own cost.

Each figure is the median of ``--rounds`` rounds of ``--number`` requests,
rounds interleaved.  Needs php8.2-cli and php-nyholm-psr7.

    .venv/bin/python benchmarks/php_worker.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fephp.roadrunner import ResponseEnd, encode_request_context  # noqa: E402
from tests.support import PHP_DIR, REPO  # noqa: E402
from tests.support.worker_pipes import PipeWorker  # noqa: E402

WORKERS = {
    "library": REPO / "examples" / "worker" / "app.php",
    "bare": PHP_DIR / "roadrunner" / "worker.php",
}


def round_trips(worker: PipeWorker, number: int) -> float:
    """Microseconds per request over *number* GET /hello round trips."""
    context = encode_request_context(
        method="GET",
        uri="http://bench.test/hello?name=x",
        headers=[(b"accept", b"application/json"), (b"cookie", b"sid=abc")],
        remote_addr="127.0.0.1",
        raw_query="name=x",
        cookies={"sid": "abc"},
    )
    start = time.perf_counter()
    for _ in range(number):
        events = worker.exchange(context)
        assert events[-1] == ResponseEnd(), events
    return (time.perf_counter() - start) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="requests per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per worker (default 5)")
    args = parser.parse_args()
    workers = {name: PipeWorker(script) for name, script in WORKERS.items()}
    try:
        for worker in workers.values():
            worker.handshake()
            round_trips(worker, 100)  # warm up: opcodes compiled, autoloaded classes loaded
        results: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(args.rounds):
            for name, worker in workers.items():
                results[name].append(round_trips(worker, args.number))
        for name, values in results.items():
            median = statistics.median(values)
            print(f"{name:8} {median:8.1f} us/request  ({1e6 / median:7.0f} req/s)  rounds: "
                  + " ".join(f"{v:.1f}" for v in values))
    finally:
        for worker in workers.values():
            worker.send(worker.client.stop())
            status, stderr = worker.wait_exit()
            if status != 0 or stderr:
                print(f"worker exited {status}: {stderr!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
