"""fephp's HTTP/2 layer alone, in this process: instructions, time and a profile per h2 request, no socket, TLS or PHP.

fephp's :class:`~fephp.web.http2.H2Connection` runs on a StringTransport with
the site the server builds from ``benchmarks/docroot`` (static files through
the memory cache, as configured by default); PHP is a canned backend that
answers hello.php's output at once, so what is counted is the h2 codec,
fephp's streams and exchanges, the PHP handler's response path and the
static file path, not FastCGI.  The client is an h2 connection whose bytes
are all made before the count: *streams* requests per read (h2load's
``-m``), each read followed by reactor turns until the server is quiet.

    python3 benchmarks/h2_layer.py --path /hello.php              # us per request, medians
    python3 benchmarks/h2_layer.py --path /static.txt --profile   # cProfile's top functions
    python3 benchmarks/h2_layer.py --callgrind                    # instructions per request

``--callgrind`` runs this script twice under ``valgrind --tool=callgrind``
(*small* and *large* request counts) and prints (large - small) / (the
difference in requests): one request's instructions, start-up cancelled out.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

DOCROOT = os.path.join(HERE, "docroot")
#: What php-fpm sends for hello.php (PHP 8.2's default headers).
HELLO_OUTPUT = b"Content-type: text/html; charset=UTF-8\r\n\r\nHello, world!\n"
#: Bound on one callgrind run.
RUN_TIMEOUT = 600.0


class CannedBackend:
    """A Backend that answers every request at once with hello.php's output (fephp.backend.interface)."""

    def request(self, params: Any, body: Any, sink: Any) -> Any:
        from twisted.internet.defer import succeed

        sink.response_started(self)
        sink.stdout_received(HELLO_OUTPUT)
        sink.flush()
        return succeed(0)

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def close(self) -> Any:
        from twisted.internet.defer import succeed

        return succeed(None)


class Rig:
    """fephp's H2Connection over a StringTransport, the real site around it, and the client's bytes made in advance."""

    def __init__(self, path: str, streams: int) -> None:
        import h2.config
        import h2.connection
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from fephp.server.build import build_app, build_front_site
        from fephp.server.config import config_from_dict
        from fephp.web.http2 import H2Connection

        config = config_from_dict({
            "server": {"listen": ["tcp:0"], "root": DOCROOT, "index": ["index.php"], "server_software": "fephp"},
            "php": {"use_fpm": False},
            "logging": {"access_log": None, "level": "warn"},
        })
        self.clock = Clock()
        app = build_app(config, self.clock, CannedBackend())  # type: ignore[arg-type]
        self.site = build_front_site(config, self.clock, app)
        self.server = H2Connection(self.site, clock=self.clock, max_header_size=self.site.max_header_size,
                                   max_line_length=16384)
        self.transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 443),
                                         peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        self.server.makeConnection(self.transport)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        # A window no response fills: the client never needs to send WINDOW_UPDATE.
        self.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.client.increment_flow_control_window(2**31 - 1 - 65535)
        self.path = path.encode()
        self.streams = streams
        first = self.client.data_to_send()
        self.server.dataReceived(first)
        self.turn()
        self.client.receive_data(self.transport.value())
        self.transport.clear()
        self.server.dataReceived(self.client.data_to_send())  # the SETTINGS ACK
        self.turn()
        self.transport.clear()

    def batches(self, requests: int, forget: bool = True) -> "list[bytes]":
        """The client's reads: *streams* GETs each, enough for *requests* (the client forgets its streams unless not *forget*)."""
        headers = [(b":method", b"GET"), (b":path", self.path), (b":scheme", b"https"),
                   (b":authority", b"127.0.0.1"), (b"user-agent", b"h2load nghttp2/1.52.0"), (b"accept", b"*/*")]
        out = []
        client = self.client
        for _ in range(0, requests, self.streams):
            for _ in range(self.streams):
                client.send_headers(client.get_next_available_stream_id(), headers, end_stream=True)
            out.append(client.data_to_send())
            if forget:
                client.streams.clear()  # their answers are never read here: only the HPACK state carries on
        return out

    def turn(self) -> None:
        """Reactor turns until nothing is scheduled."""
        clock = self.clock
        for _ in range(100):
            if not clock.getDelayedCalls() or all(c.getTime() > clock.seconds() for c in clock.getDelayedCalls()):
                return
            clock.advance(0)

    def run(self, batches: "list[bytes]") -> int:
        """Feed each read, turn the reactor, drop the output; the bytes sent."""
        server = self.server
        transport = self.transport
        sent = 0
        for data in batches:
            server.dataReceived(data)
            self.turn()
            sent += len(transport.value())
            transport.clear()
        return sent


def measure(path: str, requests: int, streams: int, rounds: int) -> "list[float]":
    """Microseconds per request, each round (after a warm-up of *requests*)."""
    rig = Rig(path, streams)
    rig.run(rig.batches(requests))
    results = []
    for _ in range(rounds):
        batches = rig.batches(requests)
        start = time.perf_counter()
        rig.run(batches)
        results.append((time.perf_counter() - start) / requests * 1e6)
    return results


def check(path: str) -> None:
    """One request, decoded by the client: a 200 whose body is the expected one."""
    import h2.events

    rig = Rig(path, 1)
    rig.server.dataReceived(rig.batches(1, forget=False)[0])
    rig.turn()
    events = rig.client.receive_data(rig.transport.value())
    heads = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    status = dict(heads[0].headers)[b":status"] if heads else None
    expected = b"Hello, world!\n" if path.endswith(".php") else None
    if status != b"200" or (expected is not None and body != expected) or not any(
            isinstance(e, h2.events.StreamEnded) for e in events):
        raise SystemExit(f"h2_layer: unexpected answer to {path}: {status!r} {body[:80]!r}")


def callgrind(args: argparse.Namespace) -> int:
    """Instructions per request: two runs under callgrind, their difference."""
    totals = []
    with tempfile.TemporaryDirectory(prefix="fephp-h2-layer-") as tmp:
        for count in (args.small, args.large):
            out = os.path.join(tmp, f"cg.{count}")
            # Both runs make the client's bytes for *large* requests (that work cancels out) and feed *count*.
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                    "--path", args.path, "--streams", str(args.streams), "--once", str(count), "--large", str(args.large)]
            env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict and set layouts in both runs
            subprocess.run(argv, check=True, capture_output=True, timeout=RUN_TIMEOUT, env=env)
            with open(out, errors="replace") as f:
                match = re.search(r"^(?:totals|summary):\s+(\d+)", f.read(), re.M)
            assert match is not None
            totals.append(int(match.group(1)))
    per = (totals[1] - totals[0]) / (args.large - args.small)
    print(f"{args.path} over h2 (m={args.streams}), fephp's layer alone: {per / 1000:.1f}k instructions per request"
          f" ({args.large} - {args.small} requests under callgrind)")
    return 0


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default="/hello.php")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one round; the top functions by own time")
    parser.add_argument("--sort", default="tottime", help="--profile's order (cProfile's: tottime, cumulative...)")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request under callgrind")
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--once", type=int, help=argparse.SUPPRESS)  # one run of N requests (under callgrind)
    args = parser.parse_args(argv)
    if not (1 <= args.requests <= 1_000_000 and 1 <= args.streams <= 100 and 1 <= args.rounds <= 50
            and 0 <= args.small < args.large <= 1_000_000):
        parser.error("requests 1..1000000, streams 1..100, rounds 1..50, 0 <= small < large")
    check(args.path)
    if args.once is not None:
        rig = Rig(args.path, args.streams)
        batches = rig.batches(args.large)
        # What start-up made is left out of the collector's full passes, whose
        # number would otherwise differ between the two runs by chance.
        gc.collect()
        gc.freeze()
        rig.run(batches[:args.once // args.streams])
        return 0
    if args.callgrind:
        return callgrind(args)
    if args.profile:
        import cProfile
        import pstats

        rig = Rig(args.path, args.streams)
        rig.run(rig.batches(args.requests))
        batches = rig.batches(args.requests)
        profile = cProfile.Profile()
        profile.enable()
        rig.run(batches)
        profile.disable()
        pstats.Stats(profile).sort_stats(args.sort).print_stats(40)
        return 0
    values = measure(args.path, args.requests, args.streams, args.rounds)
    print(f"{args.path} over h2 (m={args.streams}), fephp's layer alone: {statistics.median(values):.2f} us per request"
          f" (median; rounds {', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
