"""fephp's memory: RSS idle, with many idle keep-alive clients, and over a long load.

Starts the same php-fpm pool and fephp as ``benchmarks/run`` (its helpers,
its docroot), then prints one table:

1. RSS idle after a short warm-up;
2. RSS with ``--idle-clients`` (default 1,000) keep-alive connections open,
   each having made one request, and again after they closed;
3. RSS after ``--cache-files`` (default 3,072) static files of 8 KiB, 24 MiB
   in all, were each read twice: more than the static memory cache holds
   (16 MiB by default), so the cache is full and evicting;
4. RSS every ``--sample`` seconds through ``--minutes`` (default 5) of
   ``wrk -c64`` on hello.php: the first and the last minute's median and
   the maximum, to show whether it grows.

Run as root from a clone, after ``benchmarks/run`` has installed what it
needs: ``python3 benchmarks/memory.py`` (``--python .venv-pypy/bin/python``
for fephp on PyPy).  Every load is bounded in time; every process it starts
is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare import DOCROOT, Bench, Processes, parse_args, rss_kib  # noqa: E402

REQUEST = b"GET /hello.php HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

#: Size of each file of the cache phase (the cache takes files up to 128 KiB).
CACHE_FILE_SIZE = 8192


def open_idle_clients(port: int, count: int, deadline: float) -> list[socket.socket]:
    """*count* connections that each made one keep-alive request and wait."""
    clients = []
    for _ in range(count):
        if time.monotonic() > deadline:
            raise RuntimeError("opening the idle clients took too long")
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        exchange(s, REQUEST)
        clients.append(s)
    return clients


def exchange(s: socket.socket, request: bytes) -> bytes:
    """*request* sent on the kept connection *s*, and its whole answer."""
    s.sendall(request)
    answer = b""
    while not _complete(answer):
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed a keep-alive connection")
        answer += chunk
    return answer


def make_docroot(tmp: str, files: int) -> str:
    """benchmarks/docroot copied into *tmp*, plus *files* static files under /cache/."""
    root = os.path.join(tmp, "docroot")
    shutil.copytree(DOCROOT, root)
    os.mkdir(os.path.join(root, "cache"))
    for i in range(files):
        with open(os.path.join(root, "cache", f"f{i}.txt"), "wb") as f:
            f.write(os.urandom(CACHE_FILE_SIZE // 2).hex().encode())
    return root


def read_cache_files(port: int, files: int, rounds: int, deadline: float) -> None:
    """Each of the cache phase's files fetched *rounds* times over one keep-alive connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for _ in range(rounds):
            for i in range(files):
                if time.monotonic() > deadline:
                    raise RuntimeError("reading the cache files took too long")
                answer = exchange(s, f"GET /cache/f{i}.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                if not answer.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"/cache/f{i}.txt: {answer[:40]!r}")


def _complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    if b"transfer-encoding: chunked" in head.lower():
        return body.endswith(b"0\r\n\r\n")
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    return len(body) >= length


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB ({kib} KiB)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-clients", type=int, default=1000)
    parser.add_argument("--cache-files", type=int, default=3072, help="static files of 8 KiB read twice each")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples under load")
    parser.add_argument("--python", help="run fephp on this interpreter (e.g. .venv-pypy/bin/python)")
    own = parser.parse_args()
    if not (1 <= own.idle_clients <= 10000 and 0 <= own.cache_files <= 20000 and 0.1 <= own.minutes <= 60
            and 0.5 <= own.sample <= 60):
        parser.error("--idle-clients 1..10000, --cache-files 0..20000, --minutes 0.1..60, --sample 0.5..60")

    tmp = tempfile.mkdtemp(prefix="fephp-mem-")
    procs = Processes()
    bench = Bench(parse_args([]), tmp, procs)
    rows: list[tuple[str, str]] = []
    try:
        bench.start_fpm()
        root = make_docroot(tmp, own.cache_files)
        bench.start_fephp("fephp", use_fpm=True, python=os.path.abspath(own.python) if own.python else None,
                          root=root)
        front = bench.fronts["fephp"]
        pid = front.proc.pid
        port = int(front.url.rsplit(":", 1)[1])
        bench.run_wrk(front.url + "/hello.php", 8, 2.0)
        time.sleep(2)
        rows.append(("idle, after a 2 s warm-up", mib(rss_kib(pid) or 0)))

        clients = open_idle_clients(port, own.idle_clients, time.monotonic() + 120)
        time.sleep(1)
        rows.append((f"{len(clients)} idle keep-alive clients", mib(rss_kib(pid) or 0)))
        for s in clients:
            s.close()
        time.sleep(2)
        rows.append(("after they closed", mib(rss_kib(pid) or 0)))

        if own.cache_files:
            read_cache_files(port, own.cache_files, 2, time.monotonic() + 300)
            time.sleep(1)
            total = own.cache_files * CACHE_FILE_SIZE / 2**20
            rows.append((f"after {own.cache_files} static files ({total:.0f} MiB) read twice each", mib(rss_kib(pid) or 0)))

        duration = own.minutes * 60
        samples: list[tuple[float, int]] = []
        load = procs.start("wrk", ["wrk", "-t1", "-c64", f"-d{round(duration)}s", front.url + "/hello.php"],
                           log=os.path.join(tmp, "wrk.log"))
        started = time.monotonic()
        while load.poll() is None and time.monotonic() - started < duration + 60:
            time.sleep(own.sample)
            kib = rss_kib(pid)
            if kib is not None and load.poll() is None:
                samples.append((time.monotonic() - started, kib))
        load.wait(timeout=60)
        first = [k for t, k in samples if t <= 60]
        last = [k for t, k in samples if t >= duration - 60]
        with open(os.path.join(tmp, "wrk.log")) as f:
            requests = next((line.split()[0] for line in f if "requests in" in line), "?")
        rows.append((f"under wrk -c64, first minute (median of {len(first)})", mib(int(statistics.median(first)))))
        rows.append((f"under wrk -c64, last minute (median of {len(last)})", mib(int(statistics.median(last)))))
        rows.append((f"under wrk -c64, maximum over {own.minutes:g} min, {requests} requests", mib(max(k for _, k in samples))))
        time.sleep(2)
        rows.append(("idle after the load", mib(rss_kib(pid) or 0)))
    finally:
        procs.stop_all()
    print("| when | fephp RSS |\n|---|---:|")
    for when, value in rows:
        print(f"| {when} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
