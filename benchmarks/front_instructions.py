"""fephp's user-space instructions per request, counted by callgrind: repeatable on a busy machine.

Starts one php-fpm pool (as ``benchmarks/compare.py`` does) and one or more
fephp processes under ``valgrind --tool=callgrind`` with instrumentation off.
For each turn, a front's counters are zeroed and switched on
(``callgrind_control``), ``h2load --h1 -n N -c C`` sends N requests, and the
dump gives the instructions the whole fephp process ran for them (Python,
Twisted, the C library; not the kernel).  Variants are given as
``NAME=YAML`` (extra top-level config merged into the benchmark's) and run
interleaved, so their ratio holds whatever else the machine does.
``--floor`` adds issue 18's floor (``benchmarks/floor.py``, on the same
interpreter) as one more variant, so that fephp is counted against it.
``--syscalls`` counts system calls per request instead: the fronts run
without valgrind, and ``strace -c`` is attached to every thread of a front
for the turn only (its summary, by name, divided by the requests).
``--callgrind-out DIR`` keeps each variant's last dump there, for
``callgrind_annotate``.

    python3 benchmarks/front_instructions.py --path /hello.php
    python3 benchmarks/front_instructions.py --path /static.txt \\
        --variant 'cache=' --variant 'nocache=static: {memory_cache_size: 0}'
    python3 benchmarks/front_instructions.py --path /hello.php --floor
    python3 benchmarks/front_instructions.py --path /hello.php --floor --syscalls
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402

#: Bound on one callgrind_control call and one dump.
CONTROL_TIMEOUT = 120.0


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=CONTROL_TIMEOUT)


def dump_total(pid: int, out_dir: str, keep: str | None = None) -> int:
    """Dump *pid*'s counters; the total instructions (Ir) of that dump (copied to *keep* if given)."""
    before = set(glob.glob(os.path.join(out_dir, f"cg.{pid}*")))
    control("--dump", str(pid))
    deadline = time.monotonic() + CONTROL_TIMEOUT
    while time.monotonic() < deadline:
        for path in set(glob.glob(os.path.join(out_dir, f"cg.{pid}*"))) - before:
            with open(path, errors="replace") as f:
                match = re.search(r"^(?:totals|summary):\s+(\d+)", f.read(), re.M)
            if match:
                if keep:
                    shutil.copyfile(path, keep)
                return int(match.group(1))
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump from {pid}")


def strace_turn(pid: int, out: str, run: Callable[[], int]) -> tuple[int, dict[str, int]]:
    """Run *run* with ``strace -c`` on every thread of *pid*: its result and the calls by syscall name."""
    tids = [f"-p{tid}" for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int)]
    tracer = subprocess.Popen(["strace", "-f", "-c", "-U", "name,calls", "-o", out, *tids],
                              stderr=subprocess.PIPE, text=True)
    assert tracer.stderr is not None
    attached = 0
    while attached < len(tids):  # strace says "Process N attached" once per thread it traces
        line = tracer.stderr.readline()
        if not line:
            raise RuntimeError(f"strace on {pid} ended before attaching")
        attached += "attached" in line
    try:
        n = run()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.communicate(timeout=CONTROL_TIMEOUT)
    with open(out) as f:
        return n, strace_summary(f.read())


def strace_summary(text: str) -> dict[str, int]:
    """The calls by syscall name in ``strace -c -U name,calls`` output (its "total" row left out)."""
    calls: dict[str, int] = collections.Counter()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit() and fields[0] != "total":
            calls[fields[0]] += int(fields[1])
    return dict(calls)


def merged_yaml(base: str, extra: str) -> str:
    """*base* (one top-level key a line) with *extra* added; a key *extra* sets replaces base's line for it."""
    keys = {line.split(":", 1)[0] for line in extra.splitlines() if line[:1].isalpha()}
    kept = [line for line in base.splitlines(keepends=True) if line.split(":", 1)[0] not in keys]
    return "".join(kept) + (extra + "\n" if extra else "")


def h2load(url: str, requests: int, clients: int) -> int:
    argv = ["h2load", "--h1", "-n", str(requests), "-c", str(clients), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CONTROL_TIMEOUT + requests / 20)
    match = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if done.returncode != 0 or match is None or int(match.group(1)) != requests:
        raise RuntimeError(f"{' '.join(argv)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default="/hello.php")
    parser.add_argument("--requests", type=int, default=1000, help="requests per turn (default 1000)")
    parser.add_argument("--clients", type=int, default=1, help="h2load clients (default 1: sequential)")
    parser.add_argument("--warmup", type=int, default=300, help="requests before counting (default 300)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", help="fephp's interpreter (default: this one)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=YAML",
                        help="a fephp to compare: extra config merged into the benchmark's (default: one, 'fephp=')")
    parser.add_argument("--env", action="append", default=[], metavar="NAME:VAR=VALUE",
                        help="an environment variable for one variant's fephp (PYPY_GC_NURSERY=32MB...)")
    parser.add_argument("--floor", action="store_true",
                        help="also count benchmarks/floor.py, as the variant 'floor' (it serves PHP scripts only)")
    parser.add_argument("--syscalls", action="store_true",
                        help="count system calls per request (strace -c on the front's threads), not instructions")
    parser.add_argument("--callgrind-out", metavar="DIR",
                        help="keep each variant's last callgrind dump in DIR as NAME.callgrind (callgrind_annotate)")
    args = parser.parse_args(argv)
    if not (1 <= args.requests <= 100_000 and 1 <= args.rounds <= 20 and 0 <= args.warmup <= 100_000):
        parser.error("requests 1..100000, rounds 1..20, warmup 0..100000")
    variants = [v.split("=", 1) for v in (args.variant or ["fephp="])]
    if args.floor:
        variants.append(["floor", ""])
    for tool in ("strace", "h2load") if args.syscalls else ("valgrind", "callgrind_control", "h2load"):
        if shutil.which(tool) is None:
            print(f"front_instructions: {tool} not found", file=sys.stderr)
            return 2
    tmp = tempfile.mkdtemp(prefix="fephp-cg-")
    procs = compare.Processes()
    bench = compare.Bench(argparse.Namespace(children=8, pin=False, nginx_workers="1"), tmp, procs)
    counts: dict[str, list[float]] = {name: [] for name, _ in variants}
    syscalls: dict[str, list[dict[str, int]]] = {name: [] for name, _ in variants}
    try:
        bench.start_fpm()
        python = os.path.abspath(args.python) if args.python else None
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
                    "--smc-check=all-non-file", "--trace-children=yes", f"--callgrind-out-file={tmp}/cg.%p"]
        if args.syscalls:
            valgrind = []
        for name, extra in variants:
            conf = os.path.join(tmp, f"{name}.yaml")
            with open(conf, "w") as f:
                f.write(merged_yaml(compare.fephp_yaml(0, bench.sock, 8, True), extra))
            log = os.path.join(tmp, f"{name}.log")
            argv_ = valgrind + compare.twistd_argv(python) + ["-n", "--pidfile", "", "fephp", "--config", conf]
            if argv_[len(valgrind)].endswith("twistd") and not python:
                argv_[len(valgrind):len(valgrind) + 1] = [sys.executable, argv_[len(valgrind)]]
            if args.floor and name == "floor":
                argv_ = valgrind + [python or sys.executable, os.path.join(HERE, "floor.py"), "--fpm",
                                    f"unix:{bench.sock}", "--root", compare.DOCROOT, "--port", "0", "--pool", "8"]
            env = dict(bench.env)
            for item in args.env:
                owner, _, assignment = item.partition(":")
                if owner == name:
                    var, _, value = assignment.partition("=")
                    env[var] = value
            proc = procs.start(name, argv_, log=log, env=env, cwd=tmp)
            bench.fronts[name] = compare.Front(name, "", proc, log)
        for name, _ in variants:
            front = bench.fronts[name]
            # valgrind starts Python slowly; fephp, on tcp:0, says its port through /proc.
            front.url = f"http://127.0.0.1:{compare.wait_listening(front.proc.pid, within=300)[0][1]}"
            deadline = time.monotonic() + 300
            while True:
                try:
                    if compare.http_get(front.url + args.path, timeout=10)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or front.proc.poll() is not None:
                    raise RuntimeError(f"{name} did not answer; see {front.log}:\n{compare.tail(front.log)}")
                time.sleep(0.5)
            if args.warmup:
                h2load(front.url + args.path, args.warmup, args.clients)
        for round_no in range(1, args.rounds + 1):
            for name, _ in variants:
                front = bench.fronts[name]
                if args.syscalls:
                    n, calls = strace_turn(front.proc.pid, os.path.join(tmp, f"{name}.strace"),
                                           functools.partial(h2load, front.url + args.path, args.requests, args.clients))
                    syscalls[name].append(calls)
                    counts[name].append(sum(calls.values()) / n)
                    print(f"round {round_no} {name:<12} {counts[name][-1]:.2f} syscalls per request",
                          file=sys.stderr, flush=True)
                    continue
                pid = str(front.proc.pid)
                control("-z", pid)
                control("--instr=on", pid)
                n = h2load(front.url + args.path, args.requests, args.clients)
                per = dump_total(front.proc.pid, tmp, keep=args.callgrind_out and os.path.join(
                    args.callgrind_out, f"{name}.callgrind")) / n  # before switching off, which drops the counts
                control("--instr=off", pid)
                counts[name].append(per)
                print(f"round {round_no} {name:<12} {per:,.0f} instructions per request", file=sys.stderr, flush=True)
    except (RuntimeError, subprocess.SubprocessError) as e:
        print(f"front_instructions: error: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    first = statistics.median(counts[variants[0][0]])
    if args.syscalls:
        for name, _ in variants:
            med = statistics.median(counts[name])
            names = sorted({call for turn in syscalls[name] for call in turn})
            per_call = {call: statistics.median(turn.get(call, 0) for turn in syscalls[name]) / args.requests
                        for call in names}
            listed = ", ".join(f"{call} {per:.2f}" for call, per in sorted(per_call.items(), key=lambda kv: -kv[1])
                               if per >= 0.005)
            print(f"{name:<12} median {med:.2f} syscalls per request ({med / first:.3f}x {variants[0][0]}): {listed}")
        return 0
    for name, _ in variants:
        med = statistics.median(counts[name])
        print(f"{name:<12} median {med:,.0f} instructions per request ({med / first:.3f}x {variants[0][0]}); "
              f"rounds {', '.join(f'{v:,.0f}' for v in counts[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
