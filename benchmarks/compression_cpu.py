"""fephp's CPU per PHP request with compression off and on, side by side, with no sockets.

The same in-memory path as ``benchmarks/request_path.py`` (a real
FrontSite, the pool, a canned php-fpm answer), built once per variant: the
site without compression, with it but a client that sends no
Accept-Encoding (the plain path's cost of the decision), and with it for
each coding this interpreter has; for hello-world (under ``min_size``, so
only the decision runs) and a 60 KB HTML page (benchmarks/docroot/page.php's
bytes, from php-fpm in 4 KiB records).  The variants run interleaved, batch
by batch, for ``--seconds``; each one's figure is its best batch's process
CPU time per request (``time.process_time``), which another process's load
on a shared machine does not inflate the way wall time would.

Run with the interpreter to measure: ``python3 benchmarks/compression_cpu.py``,
``pypy3 benchmarks/compression_cpu.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from request_path import HELLO, build, html_page  # noqa: E402

from fephp.web.compress import AVAILABLE  # noqa: E402

#: Requests per timed batch: enough to dwarf the clock's resolution.
BATCH = {"hello": 200, "60 KB page": 20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run the interleaved batches (default 60)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "hello.php").write_text("<?php echo 'Hello, world!';\n")
        root = os.path.realpath(folder)
        variants = []
        for page, body in (("hello", HELLO), ("60 KB page", html_page(60))):
            variants.append((page, "compression off", build(root, body, b"", False)))
            variants.append((page, "on, no Accept-Encoding", build(root, body, b"", True)))
            for coding in AVAILABLE:
                variants.append((page, f"on, {coding}", build(root, body, coding.encode(), True)))
        for page, _, one in variants * 3:  # warm-up (PyPy's JIT needs it)
            for _ in range(BATCH[page]):
                one()
        best: dict[tuple[str, str], float] = {}
        rounds = 0
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            rounds += 1
            for page, mode, one in variants:
                n = BATCH[page]
                started = time.process_time()
                for _ in range(n):
                    one()
                per = (time.process_time() - started) / n
                best[(page, mode)] = min(best.get((page, mode), per), per)
    print(f"{sys.implementation.name} {sys.version.split()[0]}: CPU per request, best batch of {rounds} interleaved rounds")
    for (page, mode), seconds in best.items():
        base = best[(page, "compression off")]
        print(f"  {page:11s} {mode:24s} {seconds * 1e6:8.1f} us  ({seconds / base:4.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
