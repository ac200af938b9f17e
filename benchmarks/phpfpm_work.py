"""php-fpm's own cost per request behind fephp and behind nginx: more work, or the same work slower.

Both fronts talk to one php-fpm pool (its config from fephp's
``render_config``, OPcache on, as ``benchmarks/compare.py`` starts it), taking
turns, with a pause between turns so that neither starts with a child pinned
by the other's kept connection.  Two measurements:

``--mode callgrind``
    php-fpm runs under ``valgrind --tool=callgrind`` with one child and
    ``pm.max_requests = N``: a child serves exactly N requests and exits,
    writing its counters (valgrind's gdbserver does not follow a fork, so
    ``callgrind_control`` cannot reach a child).  For each turn
    ``h2load --h1 -n N -c 1`` sends N sequential hello.php requests through
    one front, and the file of the child that served them gives its
    user-space instructions over its whole life: its start (the same for
    every front) plus the N requests, whatever else the machine runs.
``--mode cpu``
    php-fpm runs natively (``--children`` children); each turn is
    ``h2load --h1 -c C -D S`` (or a fixed rate with ``--rps``), and the CPU
    time (utime + stime) of php-fpm's master and children per completed
    request is read from /proc, with its voluntary and involuntary context
    switches; ``--pin`` puts the front on CPU 0 and php-fpm on CPU 1 (the
    load generator on CPU 0 with the front).
``--mode strace``
    php-fpm runs natively with one child; ``strace -c`` on that child counts
    its system calls over N sequential requests through each front.

Run as root from the repository: ``python3 benchmarks/phpfpm_work.py --mode
callgrind``; ``--help`` for every option.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402  (benchmarks/compare.py: the same php-fpm, fephp and nginx setup)

#: Bound on one load run beyond its own length.
TOOL_SLACK = 120.0


def children_of(pid: int) -> list[int]:
    """The live children of *pid* (php-fpm's master -> its children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rindex(b")") + 2:].split()
        if int(rest[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def cpu_and_switches(pids: list[int]) -> tuple[float, int, int]:
    """CPU seconds (utime + stime), voluntary and involuntary context switches of *pids*, summed."""
    cpu = 0.0
    voluntary = involuntary = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            continue
        rest = raw[raw.rindex(b")") + 2:].split()
        cpu += (int(rest[11]) + int(rest[12])) / compare.CLK_TCK
        voluntary += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
        involuntary += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    return cpu, voluntary, involuntary


def h2load(argv: list[str], timeout: float) -> int:
    """Run h2load; the number of 2xx responses it counted."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    out = done.stdout + done.stderr
    match = re.search(r"status codes: (\d+) 2xx", out)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{out[-2000:]}")
    failed = re.search(r"(\d+) failed", out)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"{' '.join(argv)}: {failed.group(1)} requests failed:\n{out[-2000:]}")
    return int(match.group(1))


def callgrind_total(pid: int, out_dir: str) -> int:
    """The total instructions (Ir) in the callgrind file *pid* writes as it exits."""
    path = os.path.join(out_dir, f"cg.{pid}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                text = f.read()
            match = re.search(r"^(?:totals|summary):\s+(\d+)", text, re.M)
            if match:
                return int(match.group(1))
        time.sleep(0.1)
    raise RuntimeError(f"no callgrind file from {pid} within 120 s")


def start_fpm_under_callgrind(bench: Any, procs: Any, tmp: str, max_requests: int) -> Any:
    """php-fpm with one child that exits after *max_requests*, under callgrind; its master process."""
    binary = compare.find_php("php-fpm")
    if binary is None:
        raise RuntimeError("php-fpm not found (apt-get install php8.2-fpm)")
    log = os.path.join(tmp, "php-fpm.log")
    conf = os.path.join(tmp, "php-fpm.conf")
    pool = compare.PoolSpec(name="bench", listen=bench.sock, max_children=1, max_requests=max_requests)
    with open(conf, "w") as f:
        f.write(compare.render_config([pool], pid_file=os.path.join(tmp, "php-fpm.pid"), error_log=log))
    valgrind = ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={tmp}/cg.%p"]
    opcache = ["-d", "opcache.enable=1", "-d", "opcache.memory_consumption=64", "-d", "opcache.validate_timestamps=0"]
    fpm = procs.start("php-fpm", valgrind + compare.php_fpm_argv(binary, conf) + opcache, log=log)
    compare.wait_for_unix_socket(bench.sock, fpm, log)
    bench.fpm = fpm
    return fpm


def wait_for_child(master: int, not_pid: int) -> int:
    """The one child of *master* that is not *not_pid* (the one that just exited), once forked."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = [k for k in children_of(master) if k != not_pid]
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise RuntimeError("php-fpm forked no new child within 60 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("callgrind", "cpu", "strace"), default="callgrind")
    parser.add_argument("--fronts", default="fephp,nginx", help="comma-separated: fephp, nginx, fephp-pypy")
    parser.add_argument("--pypy", metavar="PYTHON", help="the interpreter of fephp-pypy")
    parser.add_argument("--path", default="/hello.php")
    parser.add_argument("--requests", type=int, default=2000, help="callgrind: requests per turn (default 2000)")
    parser.add_argument("--children", type=int, default=None, help="php-fpm children (callgrind: 1; cpu: 8)")
    parser.add_argument("--connections", type=int, default=10, help="cpu: h2load clients (default 10)")
    parser.add_argument("--duration", type=float, default=5.0, help="cpu: seconds per turn (default 5)")
    parser.add_argument("--rps", type=int, default=0, help="cpu: requests per second per client (default: as fast as it goes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pin", action="store_true", help="cpu: front and h2load on CPU 0, php-fpm on CPU 1")
    parser.add_argument("--pause", type=float, default=2.0)
    args = parser.parse_args(argv)
    children = args.children or (8 if args.mode == "cpu" else 1)
    if not (1 <= args.rounds <= 20 and 1 <= args.requests <= 1_000_000 and 1 <= args.duration <= 600):
        parser.error("rounds 1..20, requests 1..1000000, duration 1..600 s")
    for tool in ("h2load", "nginx") + (("valgrind",) if args.mode == "callgrind" else ()):
        if shutil.which(tool) is None:
            print(f"phpfpm_work: {tool} not found", file=sys.stderr)
            return 2
    fronts = [f.strip() for f in args.fronts.split(",") if f.strip()]
    tmp = tempfile.mkdtemp(prefix="fephp-fpmwork-")
    procs = compare.Processes()
    bench_args = argparse.Namespace(children=children, pin=False, nginx_workers="1")
    bench = compare.Bench(bench_args, tmp, procs)
    results: dict[str, list[float]] = {f: [] for f in fronts}
    extra: dict[str, list[str]] = {f: [] for f in fronts}
    try:
        pin_php = ["taskset", "-c", "1"] if args.pin else []
        pin_front = ["taskset", "-c", "0"] if args.pin else []
        if args.mode == "callgrind":
            start_fpm_under_callgrind(bench, procs, tmp, args.requests)
        else:
            bench.server_prefix = pin_php
            bench.start_fpm()
        assert bench.fpm is not None
        bench.server_prefix = pin_front
        for name in fronts:
            if name == "nginx":
                bench.start_nginx()
            elif name == "fephp-pypy":
                bench.start_fephp(name, use_fpm=True, python=os.path.abspath(args.pypy))
            else:
                bench.start_fephp(name, use_fpm=True)
        kids = children_of(bench.fpm.pid)
        if len(kids) != children:
            raise RuntimeError(f"php-fpm has {len(kids)} children, expected {children}")
        if args.mode == "callgrind":
            # The children's lives line up with the turns: warm up with a
            # whole life per front (OPcache, PyPy's JIT), each child's file unread.
            for name in fronts:
                time.sleep(args.pause)
                h2load(["h2load", "--h1", "-n", str(args.requests), "-c", "1", bench.fronts[name].url + args.path],
                       TOOL_SLACK + args.requests / 50)
                callgrind_total(kids[0], tmp)
                kids = [wait_for_child(bench.fpm.pid, kids[0])]
        else:
            for name in fronts:  # warm-up: OPcache, PyPy's JIT
                h2load(["h2load", "--h1", "-n", "2000", "-c", "1", bench.fronts[name].url + args.path], TOOL_SLACK)
        load_prefix = pin_front
        for round_no in range(1, args.rounds + 1):
            for name in fronts:
                time.sleep(args.pause)
                url = bench.fronts[name].url + args.path
                if args.mode == "callgrind":
                    child = kids[0]
                    n = h2load(["h2load", "--h1", "-n", str(args.requests), "-c", "1", url], TOOL_SLACK + args.requests / 50)
                    total = callgrind_total(child, tmp)
                    kids = [wait_for_child(bench.fpm.pid, child)]
                    per = total / n
                    results[name].append(per)
                    print(f"round {round_no} {name:<10} {n} requests: {per:,.0f} instructions per request in the child",
                          file=sys.stderr, flush=True)
                elif args.mode == "strace":
                    out = os.path.join(tmp, f"strace-{name}-{round_no}")
                    tracer = subprocess.Popen(["strace", "-c", "-o", out, "-p", str(kids[0])],
                                              stderr=subprocess.DEVNULL, start_new_session=True)
                    time.sleep(0.5)  # strace attaches asynchronously; only its start is waited for, not a result
                    n = h2load(["h2load", "--h1", "-n", str(args.requests), "-c", "1", url], TOOL_SLACK + args.requests / 50)
                    tracer.terminate()
                    tracer.wait(timeout=30)
                    with open(out) as f:
                        table = f.read()
                    calls = {m.group(2): int(m.group(1)) for m in
                             re.finditer(r"^\s*[0-9.]+\s+[0-9.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", table, re.M)
                             if m.group(2) != "total"}
                    total = sum(calls.values())
                    results[name].append(total / n)
                    line = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]))
                    extra[name].append(line)
                    print(f"round {round_no} {name:<10} {total / n:.2f} calls/req ({line})", file=sys.stderr, flush=True)
                else:
                    group = [bench.fpm.pid] + kids
                    front_pid = bench.fronts[name].proc.pid
                    front0 = compare.group_cpu(front_pid, compare._proc_stats())[0]
                    cpu0, vol0, inv0 = cpu_and_switches(group)
                    started = time.monotonic()
                    load = ["h2load", "--h1", "-c", str(args.connections), "-D", str(int(args.duration))]
                    if args.rps:
                        load += ["--rps", str(args.rps)]
                    n = h2load(load_prefix + load + [url], args.duration + TOOL_SLACK)
                    elapsed = time.monotonic() - started
                    cpu1, vol1, inv1 = cpu_and_switches(group)
                    front1 = compare.group_cpu(front_pid, compare._proc_stats())[0]
                    per = (cpu1 - cpu0) / n * 1e6
                    results[name].append(per)
                    line = (f"{n / elapsed:8.0f} req/s, front {(front1 - front0) / n * 1e6:6.1f} us/req, "
                            f"php-fpm {per:5.1f} us/req, "
                            f"{(vol1 - vol0) / n:.2f} voluntary + {(inv1 - inv0) / n:.2f} involuntary switches/req")
                    extra[name].append(line)
                    print(f"round {round_no} {name:<10} {line}", file=sys.stderr, flush=True)
    except RuntimeError as e:
        print(f"phpfpm_work: error: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    unit = {"callgrind": "instructions per request in the php-fpm child", "cpu": "php-fpm CPU us per request",
            "strace": "system calls per request in the php-fpm child"}[args.mode]
    base = statistics.median(results[fronts[-1]]) if results[fronts[-1]] else 0
    for name in fronts:
        med = statistics.median(results[name])
        ratio = f" ({med / base:.3f}x {fronts[-1]})" if base else ""
        print(f"{name:<10} median {med:,.1f} {unit}{ratio}; rounds: {', '.join(f'{v:,.1f}' for v in results[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
