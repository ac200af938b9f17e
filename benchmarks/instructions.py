"""Instructions per request of the whole fephp process, counted by callgrind: repeatable on a busy machine.

fephp runs under ``valgrind --tool=callgrind`` in front of its own php-fpm
and serves *small* then *large* sequential GETs of ``/hello.php`` over one
kept-alive connection; (instructions(large) - instructions(small)) /
(large - small) is what one request costs, start-up and shutdown cancelled
out.  Each variant is a configuration: ``--variant NAME=YAML-SNIPPET``
(default: without and with an admin listener, to price the metrics).
User-space instructions only: the kernel's work is not in them.

    python3 benchmarks/instructions.py                      # metrics off and on
    python3 benchmarks/instructions.py --small 100 --large 1100 --rounds 2
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fephp.process.binaries import find_php  # noqa: E402
from fephp.process.fpmconfig import PoolSpec, php_fpm_argv, render_config  # noqa: E402
from tests.support.ports import wait_listening  # noqa: E402

DOCROOT = REPO / "benchmarks" / "docroot"
VARIANTS = {
    "metrics off": "",
    # Port 0 as the public listener, spelled otherwise: the config refuses an admin listener string that is also a public one.
    "metrics on": 'admin:\n  listen: ["tcp:port=0:interface=127.0.0.1"]\n',
}
_runs = itertools.count(1)


def run_once(workdir: Path, fpm_socket: str, extra: str, requests: int) -> int:
    """Total instructions of one fephp process that served *requests* GETs."""
    run = next(_runs)
    config = workdir / f"fephp-{run}.yaml"
    config.write_text(
        f"server:\n  listen: [\"tcp:0:interface=127.0.0.1\"]\n  root: {DOCROOT}\n"
        f"php:\n  fpm_socket: unix:path={fpm_socket}\n  worker_pool_size: 2\n"
        f"logging:\n  level: warn\n" + extra
    )
    out = workdir / f"callgrind-{run}.out"
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
         "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "fephp", "--config", str(config)],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        # valgrind starts Python slowly; the public listener is bound first, the admin one after.
        port = wait_listening(process.pid, 2 if extra else 1, within=900.0)[0][1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(requests):
            conn.request("GET", "/hello.php")
            response = conn.getresponse()
            assert response.status == 200 and response.read().strip() == b"Hello, world!", response.status
        conn.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=300)
    match = re.search(rb"Collected : (\d+)", err)
    if match is None:
        text = out.read_text()
        match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)  # type: ignore[assignment]
    assert match is not None, err[-2000:]
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1100)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    binary = find_php("php-fpm")
    if binary is None:
        raise SystemExit("php-fpm is not installed")
    with tempfile.TemporaryDirectory(prefix="fephp-instr-") as tmp:
        workdir = Path(tmp)
        fpm_socket = str(workdir / "fpm.sock")
        (workdir / "fpm.conf").write_text(render_config(
            [PoolSpec("bench", fpm_socket, max_children=4)], pid_file=str(workdir / "fpm.pid"), error_log=str(workdir / "fpm.log")
        ))
        fpm = subprocess.Popen(php_fpm_argv(binary, str(workdir / "fpm.conf")), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 15
            while not os.path.exists(fpm_socket):
                if time.monotonic() > deadline:
                    raise SystemExit("php-fpm did not start")
                time.sleep(0.05)
            results: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(args.rounds):
                for name, extra in VARIANTS.items():  # interleaved
                    small = run_once(workdir, fpm_socket, extra, args.small)
                    large = run_once(workdir, fpm_socket, extra, args.large)
                    per = (large - small) / (args.large - args.small)
                    results[name].append(per)
                    print(f"{name}: {small} and {large} instructions -> {per:,.0f} per request", flush=True)
            base = min(results["metrics off"])
            for name, values in results.items():
                best = min(values)
                print(f"{name}: {best:,.0f} instructions per request ({best / base:.3f}x metrics off)")
        finally:
            os.killpg(fpm.pid, signal.SIGTERM)
            fpm.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
