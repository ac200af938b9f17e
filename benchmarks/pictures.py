"""Latency pictures of fephp beside nginx: ``fephp bench --plot`` on the same php-fpm pool, fronts interleaved.

Starts the php-fpm pool, fephp and nginx (one worker) as ``benchmarks/run``
does (its helpers, its docroot; ``--pypy PYTHON`` adds fephp on PyPy), then
for each scenario and front runs ``fephp bench --rps R -c C -d S --plot
OUT/<scenario>-<front>.svg --hdr-out OUT/<scenario>-<front>.hgrm`` at a fixed
rate (open loop, latency from each request's intended time) and prints one
line per run.  The rates are those a real site would run at, below every
front's maximum, so the pictures compare latency, not throughput.

    python3 benchmarks/pictures.py --out docs/img --pypy .venv-pypy/bin/python

Needs matplotlib in the interpreter that runs ``fephp bench`` (``pip install
'fephp[plot]'``).  Every run is bounded in time; every process it starts is
stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare import Bench, Processes, parse_args  # noqa: E402

#: (name, path, requests per second, connections).
SCENARIOS = (
    ("hello-500rps", "/hello.php", 500, 10),
    ("static-1000rps", "/static.txt", 1000, 10),
)
#: Bound on one fephp bench run beyond its own duration and warm-up.
RUN_SLACK_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the SVG and .hgrm files")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--pypy", metavar="PYTHON", help="also fephp on this interpreter")
    own = parser.parse_args()
    if not 1 <= own.duration <= 600:
        parser.error("--duration must be between 1 and 600")
    os.makedirs(own.out, exist_ok=True)

    tmp = tempfile.mkdtemp(prefix="fephp-pictures-")
    procs = Processes()
    bench = Bench(parse_args([]), tmp, procs)
    try:
        bench.start_fpm()
        bench.start_fephp("fephp", use_fpm=True)
        if own.pypy:
            bench.start_fephp("fephp-pypy", use_fpm=True, python=os.path.abspath(own.pypy))
        bench.start_nginx()
        bench.check()
        bench.warm_up()
        for name, path, rps, connections in SCENARIOS:
            for front in bench.fronts.values():
                stem = os.path.join(own.out, f"{name}-{front.name}")
                summary = os.path.join(tmp, f"{name}-{front.name}.json")
                argv = [sys.executable, "-m", "fephp.cli", "bench", "--url", front.url + path, "--rps", str(rps),
                        "-c", str(connections), "-d", str(own.duration), "--warmup", "2", "-q",
                        "--plot", stem + ".svg", "--hdr-out", stem + ".hgrm", "--json", summary]
                subprocess.run(argv, check=True, timeout=own.duration + RUN_SLACK_S)
                with open(summary) as f:
                    result = json.load(f)
                print(f"{name:16} {front.name:11} {line(result)}", flush=True)
    finally:
        procs.stop_all()
    return 0


def line(result: dict) -> str:
    """req/s, errors and p50/p99/p99.9/max in ms from fephp bench's --json summary."""
    latency = result["latency_ms"]["intended"]
    return (f"{result['achieved_rps']:8.1f} req/s  errors {result['error_count']}  p50 {latency['p50_ms']:.2f}  "
            f"p99 {latency['p99_ms']:.2f}  p99.9 {latency['p99_9_ms']:.2f}  max {latency['max_ms']:.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
