"""The load generator's own ceiling: wrk against ``fephp bench --rps 0`` on one core each, same nginx.

nginx (one worker) serves a 13-byte static file on one core; each generator
runs alone on the other core (``taskset``), ten kept-alive connections, in
interleaved rounds: wrk, fephp bench on this Python, fephp bench on PyPy
(``--pypy``), wrk, ...  Before each measurement it waits (bounded) for the
machine to be quiet.  For every run it reads the generator's CPU time and
the nginx worker's, so the table says which side was the limit: a
generator near 100% of its core is measuring itself, an nginx near 100%
is measuring nginx.

Run as root from a clone: ``python3 benchmarks/loadgen.py`` (defaults:
3 rounds of 10 s), ``--pypy .venv-pypy/bin/python`` to add PyPy,
``--baseline DIR`` to add the fephp bench of another checkout (before and
after a change).  Every
process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from compare import CLK_TCK, Processes, busy_cpu_s, parse_wrk, start_nginx, wait_for_http  # noqa: E402
from tests.support.ports import bound_listener  # noqa: E402

#: The issue's target: a 13-byte static file.
BODY = b"Hello, world!"
#: fephp bench's warmup before it measures (PyPy's JIT needs a few seconds).
WARMUP_S = 2.0
#: A measurement waits at most this long for both cores to be below QUIET_SHARE busy.
QUIET_WAIT_S = 60.0
QUIET_SHARE = 0.10
TOOL_SLACK_S = 60.0


def nginx_conf(tmp: str, port: int) -> str:
    # open_file_cache spares the worker an open() and fstat() per request,
    # so that it has headroom over a generator on the other core.
    return f"""\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    open_file_cache max=16;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
    }}
}}
"""


def worker_ticks(master: int) -> int:
    """CPU clock ticks of the nginx worker(s) under *master*."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == master:
            total += int(rest[11]) + int(rest[12])
    return total


def wait_quiet() -> float:
    """Wait until both cores were less than QUIET_SHARE busy over one second; the last share seen."""
    deadline = time.monotonic() + QUIET_WAIT_S
    share = 1.0
    while time.monotonic() < deadline:
        busy0, t0 = busy_cpu_s(), time.monotonic()
        time.sleep(1.0)
        share = (busy_cpu_s() - busy0) / (time.monotonic() - t0) / (os.cpu_count() or 1)
        if share < QUIET_SHARE:
            break
    return share


def run_one(procs: Processes, tmp: str, argv: list[str], seconds: float, cwd: str = REPO) -> tuple[str, float, float]:
    """Run a generator to its end: its output, its CPU seconds, its wall seconds."""
    log = os.path.join(tmp, "tool.out")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = procs.start(argv[0], argv, log=log, cwd=cwd, env=dict(os.environ, PYTHONPATH=cwd))
    try:
        proc.wait(timeout=seconds + TOOL_SLACK_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(argv)} ran past {seconds + TOOL_SLACK_S:.0f} s")
    finally:
        procs.stop(proc)
        procs.started.remove((argv[0], proc))
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, errors="replace") as f:
        out = f.read()
    os.unlink(log)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{out[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return out, cpu, wall


def measure(args: argparse.Namespace, procs: Processes, tmp: str, name: str, url: str, master: int) -> dict[str, Any]:
    pin = ["taskset", "-c", "1"]
    quiet = wait_quiet()
    ticks0 = worker_ticks(master)
    busy0 = busy_cpu_s()
    if name == "wrk":
        argv = pin + ["wrk", "-t1", f"-c{args.connections}", f"-d{round(args.duration)}s", "--latency", url]
        out, cpu, wall = run_one(procs, tmp, argv, args.duration)
        rps = parse_wrk(out)["rps"]
        busy_s = args.duration
        tool_share = cpu / busy_s
    else:
        python = args.pypy if name == "fephp-bench-pypy" else sys.executable
        report_path = os.path.join(tmp, "bench.json")
        argv = pin + [
            python, "-m", "fephp.cli", "bench", "--url", url, "--rps", "0", "-c", str(args.connections),
            "-d", str(args.duration), "--warmup", str(WARMUP_S), "--quiet", "--json", report_path,
        ]
        # The baseline is another checkout of fephp, run from there.
        _, cpu, wall = run_one(procs, tmp, argv, args.duration + WARMUP_S,
                               cwd=args.baseline if name == "fephp-bench-baseline" else REPO)
        with open(report_path) as f:
            report = json.load(f)
        os.unlink(report_path)
        if report["error_count"]:
            raise RuntimeError(f"{name}: {report['error_count']} errors: {report['errors']}")
        rps = report["achieved_rps"]
        busy_s = args.duration + WARMUP_S
        # The run's own share (warmup and measurement), without the start-up imports.
        tool_share = report["cpu_fraction"]
    nginx_cpu = (worker_ticks(master) - ticks0) / CLK_TCK
    nginx_share = nginx_cpu / busy_s
    # What the machine spent beyond the generator and nginx: other people's work.
    other = max(0.0, busy_cpu_s() - busy0 - cpu - nginx_cpu) / wall
    return {
        "tool": name,
        "rps": rps,
        "tool_core_share": tool_share,
        "tool_us_per_req": tool_share / rps * 1e6 if rps else float("nan"),
        "nginx_core_share": nginx_share,
        "quiet_before": quiet,
        "other_cores": other,
        "wall_s": wall,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/loadgen.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--connections", type=int, default=10, help="kept-alive connections (default 10)")
    parser.add_argument("--pypy", metavar="PYTHON", help="also run fephp bench on this interpreter (a PyPy venv)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run the fephp bench of another checkout (e.g. an older commit's), on this Python")
    parser.add_argument("--out", help="write results.json here")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 20 and 1 <= args.duration <= 600 and 1 <= args.connections <= 1000):
        parser.error("--rounds 1..20, --duration 1..600, --connections 1..1000")
    if args.pypy:
        args.pypy = os.path.abspath(args.pypy)
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"loadgen: {tool} not found (benchmarks/run installs it)", file=sys.stderr)
            return 2
    tmp = tempfile.mkdtemp(prefix="fephp-loadgen-")
    os.chmod(tmp, 0o755)  # nginx's worker runs as an unprivileged user
    os.makedirs(os.path.join(tmp, "www"))
    with open(os.path.join(tmp, "www", "hello.txt"), "wb") as f:
        f.write(BODY)
    procs = Processes()
    candidates = (["wrk"] + (["fephp-bench-baseline"] if args.baseline else []) + ["fephp-bench"]
                  + (["fephp-bench-pypy"] if args.pypy else []))
    runs: list[dict[str, Any]] = []
    try:
        listener = bound_listener()
        port = listener.getsockname()[1]
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(tmp, port))
        nginx = start_nginx(procs, "nginx", ["taskset", "-c", "0", "nginx", "-p", tmp + "/", "-c", conf], listener,
                            log=os.path.join(tmp, "nginx.log"))
        url = f"http://127.0.0.1:{port}/hello.txt"
        wait_for_http(url, nginx, "nginx", os.path.join(tmp, "nginx.log"))
        # taskset execs nginx, so the master is the process started.
        for round_no in range(1, args.rounds + 1):
            for name in candidates:
                result = measure(args, procs, tmp, name, url, nginx.pid)
                result["round"] = round_no
                runs.append(result)
                print(f"round {round_no} {name:<17} {result['rps']:9.0f} req/s  generator {result['tool_core_share']:4.0%} "
                      f"of its core ({result['tool_us_per_req']:5.1f} µs/req)  nginx {result['nginx_core_share']:4.0%}  "
                      f"other load {result['other_cores']:.2f} cores (machine {result['quiet_before']:.0%} busy before)",
                      file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return 130
    except RuntimeError as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    wrk_rps = statistics.median(r["rps"] for r in runs if r["tool"] == "wrk")
    print("| generator | req/s (median) | each round | generator CPU, share of its core | µs/req | nginx worker CPU "
          "| other load (cores) | vs wrk |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    table = []
    for name in candidates:
        mine = [r for r in runs if r["tool"] == name]
        row = {
            "tool": name,
            "rps": statistics.median(r["rps"] for r in mine),
            "rps_each": [round(r["rps"]) for r in mine],
            "tool_core_share": statistics.median(r["tool_core_share"] for r in mine),
            "tool_us_per_req": statistics.median(r["tool_us_per_req"] for r in mine),
            "nginx_core_share": statistics.median(r["nginx_core_share"] for r in mine),
            "other_cores": statistics.median(r["other_cores"] for r in mine),
        }
        row["vs_wrk"] = row["rps"] / wrk_rps
        table.append(row)
        print(f"| {name} | {row['rps']:.0f} | {', '.join(map(str, row['rps_each']))} | {row['tool_core_share']:.0%} | "
              f"{row['tool_us_per_req']:.1f} | {row['nginx_core_share']:.0%} | {row['other_cores']:.2f} | {row['vs_wrk']:.2f} |")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"command": "benchmarks/loadgen.py " + " ".join(sys.argv[1:] if argv is None else argv),
                       "table": table, "runs": runs}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
