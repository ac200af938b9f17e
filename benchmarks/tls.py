"""TLS engines side by side: fephp's CPU per https/1.1 and h2 request with Twisted's TLS (pyOpenSSL) and the standard library's.

Starts one php-fpm pool (as ``benchmarks/compare.py`` does), then one
fephp per interpreter and ``server.tls_engine`` (``pyopenssl``, ``stdlib``)
on an ``ssl:`` listener, and nginx over TLS as the yardstick.  Each round
sends every front, interleaved, a fixed number of requests for hello.php
with h2load: HTTP/1.1 over TLS (``--h1``, keep-alive) and HTTP/2 (``-m``
streams per connection).  A front's CPU (user + system, its whole process
group, from /proc) over the requests gives the microseconds per request;
medians of the rounds are printed.

On a busy machine CPU time wanders; ``--callgrind`` counts instructions
instead, as ``benchmarks/front_instructions.py`` does: the fephp fronts
run under ``valgrind --tool=callgrind`` with instrumentation off, switched
on for each front's turn only (nginx is left out; the C library, OpenSSL,
Python and Twisted are in, the kernel is not).

    python3 benchmarks/tls.py
    python3 benchmarks/tls.py --pypy ../.venv-pypy/bin/python --requests 5000 --rounds 3
    python3 benchmarks/tls.py --callgrind --requests 1000 --warmup 300

``--layer`` times the TLS layer alone, in this process, with no socket, no
PHP and no HTTP: a stdlib client over memory BIOs sends a 100-byte request,
the server's wrapped protocol answers 300 bytes in two writes, the clock
turns, and only the server side's calls are timed (each engine's wrapper,
OpenSSL, and Twisted's clock), per request, on one kept connection.

    python3 benchmarks/tls.py --layer --requests 20000
    ../.venv-pypy/bin/python benchmarks/tls.py --layer --requests 20000
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
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402
import front_instructions  # noqa: E402

#: The two engines of server.tls_engine.
ENGINES = ("pyopenssl", "stdlib")
#: Bound on one h2load run.
RUN_TIMEOUT = 300.0


def h2load(url: str, requests: int, clients: int, streams: int, h1: bool) -> float:
    """Send *requests* for *url* with h2load; its req/s.  Raises unless every one was a 2xx."""
    argv = ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), "-t1",
            *(["--h1"] if h1 else []), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    rps = re.search(r"^finished in [0-9.]+m?s, ([0-9.]+) req/s", done.stdout, re.M)
    codes = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if done.returncode != 0 or rps is None or codes is None or int(codes.group(1)) != requests:
        raise RuntimeError(f"{' '.join(argv)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return float(rps.group(1))


def cpu_s(pid: int) -> float:
    """CPU seconds of *pid* and its descendants (nginx's workers), reaped ones included."""
    own, reaped = compare.group_cpu(pid, compare._proc_stats())
    return own + reaped


def layer(requests: int, rounds: int) -> int:
    """The --layer measurement: microseconds of the server's TLS layer per request, each engine, this interpreter."""
    import platform
    import ssl
    import time

    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.ssl import CertificateOptions
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.protocols.tls import TLSMemoryBIOFactory

    sys.path.insert(0, os.path.dirname(HERE))
    from fephp.server.tls import TLSServerFactory, server_context

    request = b"GET /hello.php HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: h2load\r\nAccept: */*\r\n" + b"x" * 22 + b"\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nServer: fephp\r\nContent-Type: text/html\r\n" + b"X-Pad: " + b"p" * 160 + b"\r\n\r\n"
    body = b"Hello, world! " * 5

    class Answer(Protocol):
        transport: Any

        def dataReceived(self, data: bytes) -> None:  # noqa: N802
            self.transport.write(head)
            self.transport.write(body)

    tmp = tempfile.mkdtemp(prefix="fephp-tls-layer-")
    try:
        key, cert = compare.self_signed(tmp)
        results: dict[str, list[float]] = {}
        for engine in ENGINES:
            results[engine] = []
            for _ in range(rounds):
                clock = Clock()
                if engine == "stdlib":
                    factory: Any = TLSServerFactory(server_context(cert, key), Factory.forProtocol(Answer), clock)
                else:
                    from OpenSSL import crypto

                    with open(key, "rb") as f:
                        pkey = crypto.load_privatekey(crypto.FILETYPE_PEM, f.read())
                    with open(cert, "rb") as f:
                        x509 = crypto.load_certificate(crypto.FILETYPE_PEM, f.read())
                    factory = TLSMemoryBIOFactory(CertificateOptions(privateKey=pkey, certificate=x509), False,
                                                  Factory.forProtocol(Answer), clock=clock)
                server = factory.buildProtocol(None)
                transport = StringTransport()
                server.makeConnection(transport)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                client = context.wrap_bio(incoming, outgoing)
                for _ in range(5):
                    try:
                        client.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        server.dataReceived(outgoing.read())
                        incoming.write(transport.value())
                        transport.clear()
                server.dataReceived(outgoing.read())  # the client's Finished
                spent = 0.0
                for i in range(requests + requests // 5):  # the first sixth warms up (PyPy's JIT)
                    client.write(request)
                    wire = outgoing.read()
                    start = time.perf_counter()
                    server.dataReceived(wire)
                    clock.advance(0)
                    took = time.perf_counter() - start
                    if i >= requests // 5:
                        spent += took
                    incoming.write(transport.value())
                    transport.clear()
                    assert client.read(65536) == head + body
                results[engine].append(spent / requests * 1e6)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"TLS layer alone, {platform.python_implementation()} {platform.python_version()}, {requests} requests"
          f" x {rounds} rounds on one connection: server side, us per request (median; rounds)")
    for engine in ENGINES:
        values = results[engine]
        print(f"{engine:<10} {statistics.median(values):6.2f}  ({', '.join(f'{v:.2f}' for v in values)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default="/hello.php")
    parser.add_argument("--requests", type=int, default=5000, help="requests per front, scenario and round (default 5000)")
    parser.add_argument("--clients", type=int, default=10, help="h2load connections (default 10)")
    parser.add_argument("--streams", type=int, default=10, help="HTTP/2 streams per connection (default 10)")
    parser.add_argument("--warmup", type=int, default=3000, help="requests of each scenario before counting (default 3000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pypy", help="a PyPy with fephp's dependencies: its fronts too")
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    parser.add_argument("--engine", action="append", choices=ENGINES, help="only this engine (repeatable; default both)")
    parser.add_argument("--plain", action="store_true",
                        help="also each interpreter's fephp on tcp: (https/1.1 only, as plain HTTP/1.1): what TLS adds")
    parser.add_argument("--layer", action="store_true",
                        help="time the TLS layer alone in this process (no socket, PHP or HTTP), each engine")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions per request under callgrind instead of CPU time (no nginx)")
    args = parser.parse_args(argv)
    if args.layer:
        return layer(args.requests, args.rounds)
    if args.callgrind:
        args.no_nginx = True
    if not (1 <= args.requests <= 100_000 and 1 <= args.rounds <= 20 and 0 <= args.warmup <= 100_000
            and 1 <= args.clients <= 256 and 1 <= args.streams <= 100):
        parser.error("requests 1..100000, rounds 1..20, warmup 0..100000, clients 1..256, streams 1..100")
    needed = ("h2load",) + (() if args.no_nginx else ("nginx",)) + (("valgrind", "callgrind_control") if args.callgrind else ())
    for tool in needed:
        if shutil.which(tool) is None:
            print(f"tls: {tool} not found", file=sys.stderr)
            return 2
    tmp = tempfile.mkdtemp(prefix="fephp-tls-")
    procs = compare.Processes()
    bench = compare.Bench(argparse.Namespace(children=8, pin=False, nginx_workers="1"), tmp, procs)
    pythons: list[tuple[str, str | None]] = [("cpython", None)]
    if args.pypy:
        pythons.append(("pypy", os.path.abspath(args.pypy)))
    scenarios = [("https/1.1", True), ("h2", False)]
    unit = "k instructions" if args.callgrind else "us CPU"
    fronts: list[str] = []
    cpu: dict[tuple[str, str], list[float]] = {}
    rps: dict[tuple[str, str], list[float]] = {}
    try:
        bench.start_fpm()
        key, cert = compare.self_signed(tmp)
        for label, python in pythons:
            for engine in (args.engine or list(ENGINES)) + (["tcp"] if args.plain else []):
                name = f"{label}-{engine}"
                conf = os.path.join(tmp, f"{name}.yaml")
                with open(conf, "w") as f:
                    if engine == "tcp":
                        f.write(compare.fephp_yaml(0, bench.sock, 8, True))
                    else:
                        f.write(compare.fephp_yaml(0, bench.sock, 8, True)
                                .replace('"tcp:0:interface=127.0.0.1"',
                                         f'"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"')
                                .replace("shutdown_grace: 1}", f"shutdown_grace: 1, tls_engine: {engine}}}"))
                log = os.path.join(tmp, f"{name}.log")
                env = dict(bench.env)
                if python is not None:  # as etc/fephp-pypy.service runs it
                    env.update(PYPY_GC_NURSERY=compare.PYPY_GC_NURSERY, PYPY_GC_MIN=compare.PYPY_GC_MIN)
                run = compare.twistd_argv(python) + ["-n", "--pidfile", "", "fephp", "--config", conf]
                if args.callgrind:
                    if python is None and not run[0].startswith(sys.executable):
                        run = [sys.executable] + run  # valgrind follows the interpreter, not a script's #!
                    run = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
                           "--smc-check=all-non-file", f"--callgrind-out-file={tmp}/cg.%p"] + run
                proc = procs.start(name, run, log=log, env=env, cwd=tmp)
                # valgrind starts Python slowly; fephp says its port through /proc.
                port = compare.wait_listening(proc.pid, within=600)[0][1] if args.callgrind else compare.fephp_port(proc)
                bench.add_front(name, port, proc, log, scheme="http" if engine == "tcp" else "https")
                fronts.append(name)
        if not args.no_nginx:
            listener = compare.bound_listener()
            port = listener.getsockname()[1]
            with open(os.path.join(tmp, "fastcgi_params"), "w") as f:
                f.write(compare.PARAMS)
            conf = os.path.join(tmp, "nginx-tls.conf")
            with open(conf, "w") as f:
                f.write(compare.nginx_tls_conf(tmp, port, bench.sock, 8, "1", key, cert))
            log = os.path.join(tmp, "nginx-tls.log")
            nginx = ["nginx", "-p", tmp + "/", "-c", conf, "-e", os.path.join(tmp, "nginx-tls-error.log"),
                     "-g", "daemon off;"]
            proc = compare.start_nginx(procs, "nginx-tls", nginx, listener, log=log)
            bench.add_front("nginx-tls", port, proc, log, scheme="https")
            fronts.append("nginx-tls")
        def runs(name: str) -> list[tuple[str, bool]]:
            # No cleartext HTTP/2 (h2c): a tcp: front is measured over HTTP/1.1 only.
            return scenarios[:1] if name.endswith("-tcp") else scenarios

        for name in fronts:
            for scenario, h1 in runs(name):
                if args.warmup:
                    h2load(bench.fronts[name].url + args.path, args.warmup, args.clients, args.streams, h1)
                cpu[name, scenario] = []
                rps[name, scenario] = []
        for round_no in range(1, args.rounds + 1):
            for scenario, h1 in scenarios:
                for name in fronts:
                    if (scenario, h1) not in runs(name):
                        continue
                    front = bench.fronts[name]
                    if args.callgrind:
                        pid = str(front.proc.pid)
                        front_instructions.control("-z", pid)
                        front_instructions.control("--instr=on", pid)
                        rate = h2load(front.url + args.path, args.requests, args.clients, args.streams, h1)
                        # Dumped before switching off, which drops the counts.
                        per = front_instructions.dump_total(front.proc.pid, tmp) / args.requests / 1000
                        front_instructions.control("--instr=off", pid)
                    else:
                        before = cpu_s(front.proc.pid)
                        rate = h2load(front.url + args.path, args.requests, args.clients, args.streams, h1)
                        per = (cpu_s(front.proc.pid) - before) / args.requests * 1e6
                    cpu[name, scenario].append(per)
                    rps[name, scenario].append(rate)
                    print(f"round {round_no} {scenario:<9} {name:<18} {per:7.1f} {unit}/request {rate:9.0f} req/s",
                          file=sys.stderr, flush=True)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"tls: error: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    what = "instructions (thousands) of the front per request" if args.callgrind else "CPU of the front's processes per request"
    print(f"{args.path}, {args.requests} requests x {args.rounds} rounds, c={args.clients}"
          f" (h2: m={args.streams}); medians, {what}")
    print(f"| front | {' | '.join(f'{s} {unit}/req | {s} req/s' for s, _ in scenarios)} |")
    print("|---" * (1 + 2 * len(scenarios)) + "|")
    for name in fronts:
        cells = []
        for scenario, _ in scenarios:
            if not cpu.get((name, scenario)):
                cells += ["", ""]
                continue
            cells.append(f"{statistics.median(cpu[name, scenario]):.1f}")
            cells.append(f"{statistics.median(rps[name, scenario]):.0f}")
        print(f"| {name} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
