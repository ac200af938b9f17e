"""A Symfony app served three ways, on loopback: nginx + php-fpm, fephp + php-fpm, fephp's PHP worker mode.

Issue 21's benchmark row.  The app is examples/symfony-bench (FrameworkBundle's
micro kernel, TwigBundle, autowired services), in production mode with its
cache warmed first (bin/warmup.php into the run's temp folder).  The three
candidates run the same number of PHP processes (``--php``): php-fpm's
static children, shared by nginx and fephp as benchmarks/compare.py shares
them, and fephp's ``php.worker.count`` workers.  OPcache is on for both
(``opcache.enable`` for php-fpm, ``opcache.enable_cli`` for the workers, no
timestamp checks).

Each page (a small JSON page, a small HTML page rendered by Twig) is measured
with wrk, candidates interleaved round by round; the table gives the
median req/s, p50 and p99 over ``--rounds`` rounds, the PHP processes' CPU
per request, and req/s against nginx.  nginx and fephp share php-fpm's
children, and each keeps its idle FastCGI connections (and so the children
behind them) for 1 s after its turn: a php-fpm front measured right after the
other would find every child taken and its first requests would wait ~1 s in
php-fpm's backlog, which wrk's latency correction spreads over its p90 and
p99.  So such a front waits ``--pause`` seconds first.

    .venv/bin/python benchmarks/symfony_worker.py                # 3 rounds of 10 s
    .venv/bin/python benchmarks/symfony_worker.py --duration 3 --rounds 1
    .venv/bin/python benchmarks/symfony_worker.py --pypy /path/to/pypy-venv/bin/python   # and fephp on PyPy

Needs php8.2-fpm, php8.2-cli, nginx, wrk and Debian's Symfony packages
(README.md's test command installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from compare import (
    PARAMS,
    PYPY_GC_MIN,
    PYPY_GC_NURSERY,
    READY_TIMEOUT,
    REPO,
    Processes,
    _proc_stats,
    bound_listener,
    fephp_port,
    group_cpu,
    http_get,
    median,
    nginx_conf,
    parse_wrk,
    start_nginx,
    twistd_argv,
    wait_for_unix_socket,
)

from fephp.process.binaries import find_php
from fephp.process.fpmconfig import PoolSpec, php_fpm_argv, render_config

APP = os.path.join(REPO, "examples", "symfony-bench")
PUBLIC = os.path.join(APP, "public")
PAGES = {"json": "/api/catalog?name=bench", "html": "/catalog?name=bench"}
#: The same OPcache settings for php-fpm's children and the workers.
OPCACHE = {"opcache.memory_consumption": "64", "opcache.validate_timestamps": "0"}


def fephp_yaml(port: int, sock: str, php: int, cache: str, worker: bool) -> str:
    server = (
        f'server: {{listen: ["tcp:{port}:interface=127.0.0.1"], root: "{PUBLIC}", index: [index.php], '
        "front_controller: /index.php, deny: [], server_software: fephp, shutdown_grace: 1}\n"
    )
    if worker:
        ini = ", ".join(f'"{k}": "{v}"' for k, v in {"opcache.enable_cli": "1", **OPCACHE}.items())
        php_section = (
            f'php: {{worker: {{script: "{os.path.join(APP, "worker.php")}", count: {php}, '
            f'env: {{APP_CACHE_DIR: "{cache}"}}}}, ini: {{{ini}}}, queue_size: 1024}}\n'
        )
    else:
        php_section = f'php: {{use_fpm: true, fpm_socket: "unix:path={sock}", worker_pool_size: {php}, queue_size: 1024}}\n'
    return (
        server + php_section
        + "timeouts: {connect: 5, response: 60, idle: 1, queue: 30}\n"
        + "logging: {access_log: null, level: warn}\n"
    )


def uses_fpm(front: str) -> bool:
    """Whether *front* runs PHP on the shared php-fpm children (not fephp's worker mode)."""
    return not front.endswith("worker mode")


def waits_for_children(previous: str | None, front: str) -> bool:
    """Whether *front* must wait before it is measured until *previous*'s idle connections have let php-fpm's children go."""
    return previous is not None and previous != front and uses_fpm(previous) and uses_fpm(front)


class Run:
    """The servers of one run, in *tmp*, each started by *procs*."""

    def __init__(self, args: argparse.Namespace, tmp: str, procs: Processes) -> None:
        self.args = args
        self.tmp = tmp
        self.procs = procs
        self.sock = os.path.join(tmp, "fpm.sock")
        self.cache = os.path.join(tmp, "symfony-cache")
        self.fronts: dict[str, tuple[str, subprocess.Popen[bytes], str]] = {}
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = REPO + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        self.fpm: subprocess.Popen[bytes] | None = None

    def warm_cache(self) -> None:
        """bin/warmup.php: the container compiled, routes and Twig templates cached, as a deployment does."""
        php = find_php("php") or "php"
        subprocess.run([php, os.path.join(APP, "bin", "warmup.php")], check=True, timeout=READY_TIMEOUT,
                       env=dict(os.environ, APP_CACHE_DIR=self.cache), stdout=subprocess.DEVNULL)

    def start_fpm(self) -> None:
        binary = find_php("php-fpm")
        if binary is None:
            raise RuntimeError("php-fpm not found (apt-get install php8.2-fpm)")
        log = os.path.join(self.tmp, "php-fpm.log")
        conf = os.path.join(self.tmp, "php-fpm.conf")
        pool = PoolSpec(name="symfony", listen=self.sock, max_children=self.args.php)
        with open(conf, "w") as f:
            # The pool is the file's last section: its env[] line joins it (php-fpm's clear_env keeps the rest out).
            f.write(render_config([pool], pid_file=os.path.join(self.tmp, "php-fpm.pid"), error_log=log))
            f.write(f"env[APP_CACHE_DIR] = {self.cache}\n")
        ini = ["-d", "opcache.enable=1"] + [arg for k, v in OPCACHE.items() for arg in ("-d", f"{k}={v}")]
        self.fpm = self.procs.start("php-fpm", php_fpm_argv(binary, conf) + ini, log=log)
        wait_for_unix_socket(self.sock, self.fpm, log)

    def start_nginx(self) -> None:
        listener = bound_listener()
        port = listener.getsockname()[1]
        with open(os.path.join(self.tmp, "fastcgi_params"), "w") as f:
            f.write(PARAMS)
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            text = nginx_conf(self.tmp, port, self.sock, self.args.php, "1")
            f.write(text.replace(f"root {os.path.join(HERE, 'docroot')};", f"root {PUBLIC};"))
        log = os.path.join(self.tmp, "nginx.log")
        argv = ["nginx", "-p", self.tmp + "/", "-c", conf, "-e", os.path.join(self.tmp, "nginx-error.log"),
                "-g", "daemon off;"]
        proc = start_nginx(self.procs, "nginx", argv, listener, log=log)
        self.fronts["nginx + php-fpm"] = (f"http://127.0.0.1:{port}", proc, log)

    def start_fephp(self, name: str, worker: bool, python: str | None = None) -> None:
        conf = os.path.join(self.tmp, f"{name}.yaml")
        with open(conf, "w") as f:
            f.write(fephp_yaml(0, self.sock, self.args.php, self.cache, worker))
        log = os.path.join(self.tmp, f"{name}.log")
        argv = twistd_argv(python) + ["-n", "--pidfile", os.path.join(self.tmp, f"{name}.pid"), "fephp", "--config", conf]
        env = self.env
        if python is not None:  # as benchmarks/compare.py runs fephp-pypy
            env = dict({"PYPY_GC_NURSERY": PYPY_GC_NURSERY, "PYPY_GC_MIN": PYPY_GC_MIN}, **env)
        proc = self.procs.start(name, argv, log=log, env=env, cwd=self.tmp)
        label = ("fephp-pypy" if python else "fephp") + (" worker mode" if worker else " + php-fpm")
        self.fronts[label] = (f"http://127.0.0.1:{fephp_port(proc)}", proc, log)

    def php_root(self, front: str) -> int:
        """The process whose group holds the PHP processes serving *front*."""
        if front.endswith("worker mode"):
            return self.fronts[front][1].pid
        assert self.fpm is not None
        return self.fpm.pid

    def check(self) -> None:
        """Every front answers every page with 200 and the same body, and /api/pid with the SAPI it should."""
        deadline = time.monotonic() + READY_TIMEOUT
        for front, (url, proc, log) in self.fronts.items():
            while True:
                try:
                    status, body = http_get(url + "/api/pid", timeout=5.0)
                    if status == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{front} does not answer; see {log}")
                time.sleep(0.1)  # polling a server that is starting, bounded by READY_TIMEOUT
            sapi = json.loads(body)["sapi"]
            expected = "cli" if front.endswith("worker mode") else "fpm-fcgi"
            if sapi != expected:
                raise RuntimeError(f"{front} ran PHP as {sapi}, not {expected}")
        for page, path in PAGES.items():
            bodies = {front: http_get(url + path)[1] for front, (url, _, _) in self.fronts.items()}
            if len(set(bodies.values())) != 1:
                raise RuntimeError(f"the fronts answer {page} differently: {bodies}")

    def measure(self, front: str, path: str) -> dict[str, Any]:
        url = self.fronts[front][0]
        root = self.php_root(front)
        before = _proc_stats()
        argv = ["wrk", "-t1", f"-c{self.args.connections}", f"-d{self.args.duration}s", "--latency", url + path]
        out = subprocess.run(argv, capture_output=True, text=True, check=True,
                             timeout=self.args.duration + 60).stdout
        after = _proc_stats()
        result = parse_wrk(out)
        php_cpu = sum(group_cpu(root, after)) - sum(group_cpu(root, before))
        if front.endswith("worker mode"):
            # The workers are fephp's children: its own CPU is the front's, not PHP's.
            php_cpu -= (after[root][1] - before[root][1]) / os.sysconf("SC_CLK_TCK")
        result["php_us_per_req"] = php_cpu / max(1, result["requests"]) * 1e6
        front_root = self.fronts[front][1].pid
        if front.endswith("worker mode"):
            front_cpu = (after[front_root][1] - before[front_root][1]) / os.sysconf("SC_CLK_TCK")
        else:
            front_cpu = sum(group_cpu(front_root, after)) - sum(group_cpu(front_root, before))
        result["front_us_per_req"] = front_cpu / max(1, result["requests"]) * 1e6
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--php", type=int, default=4, help="PHP processes: php-fpm children and workers (4)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, candidates interleaved (3)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load per front and page before (3)")
    parser.add_argument("--pause", type=float, default=2.0,
                        help="seconds a php-fpm front waits after the other one, for its idle FastCGI connections "
                        "to close (nginx's keepalive_timeout and fephp's timeouts.idle are 1 s; default 2)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--pypy", metavar="PYTHON", help="also fephp's worker mode on this PyPy (a venv with fephp)")
    args = parser.parse_args()
    procs = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="fephp-symfony-bench-") as tmp:
            run = Run(args, tmp, procs)
            run.warm_cache()
            run.start_fpm()
            run.start_nginx()
            run.start_fephp("fephp-fpm", worker=False)
            run.start_fephp("fephp-worker", worker=True)
            if args.pypy:
                run.start_fephp("fephp-pypy-worker", worker=True, python=args.pypy)
            run.check()
            for front in run.fronts:  # warm up: OPcache filled, every worker and child has served, PyPy's JIT done
                for path in PAGES.values():
                    subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.warmup}s", run.fronts[front][0] + path],
                                   capture_output=True, check=True, timeout=args.warmup + 60)
            results: dict[tuple[str, str], list[dict[str, Any]]] = {}
            load_before = os.getloadavg()
            previous = list(run.fronts)[-1] if run.fronts else None  # the last one warmed up
            for round_no in range(args.rounds):
                for page, path in PAGES.items():
                    for front in run.fronts:
                        if waits_for_children(previous, front):
                            time.sleep(args.pause)  # nothing to await: php-fpm tells no one when a child is free
                        previous = front
                        r = run.measure(front, path)
                        results.setdefault((page, front), []).append(r)
                        print(f"round {round_no + 1} {page:4} {front:18} {r['rps']:8.1f} req/s  "
                              f"p99 {r['p99_ms']:.2f} ms  errors {r['errors'] + r['non_2xx']}", file=sys.stderr)
            rows = []
            for page in PAGES:
                nginx = median([r["rps"] for r in results[(page, "nginx + php-fpm")]])
                for front in run.fronts:
                    runs = results[(page, front)]
                    rps = median([r["rps"] for r in runs])
                    rows.append({
                        "page": page, "front": front, "rps": rps, "rps_each": [round(r["rps"], 1) for r in runs],
                        "p50_ms": median([r["p50_ms"] for r in runs]), "p99_ms": median([r["p99_ms"] for r in runs]),
                        "php_us_per_req": median([r["php_us_per_req"] for r in runs]),
                        "front_us_per_req": median([r["front_us_per_req"] for r in runs]),
                        "errors": sum(r["errors"] + r["non_2xx"] for r in runs), "vs_nginx": rps / nginx,
                    })
            print("| page | front | req/s | p50 ms | p99 ms | front CPU µs/req | PHP CPU µs/req | vs nginx | errors"
                  " | rounds (req/s) |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for row in rows:
                print(f"| {row['page']} | {row['front']} | {row['rps']:.1f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                      f"| {row['front_us_per_req']:.0f} | {row['php_us_per_req']:.0f} | {row['vs_nginx']:.2f} | {row['errors']} "
                      f"| {' '.join(str(v) for v in row['rps_each'])} |")
            print(f"load average before and after: {load_before} / {os.getloadavg()}")
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
