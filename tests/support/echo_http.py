"""A tiny HTTP server for the simulated hosts, from the server's side: it tells each client who it is and who it saw.

Start it on a host with :func:`start_echo` (ready when it returns; killed
with the host), or run ``python echo_http.py --endpoint ENDPOINT --name NAME``.
ENDPOINT is a Twisted server endpoint string, so
``tcp:port=8000:interface=198.18.7.2`` serves plain HTTP and
``haproxy:tcp:port=8000:interface=198.18.7.2`` expects HAProxy's PROXY
protocol (v1 or v2) first.  ``GET /readyz`` answers 200 ``ready`` (for health
checks); any other path answers 200 with a JSON object::

    {"name": NAME, "client": "198.18.7.1", "client_port": 40312, "path": "/x"}

where ``client`` is the peer Twisted reports: the real client behind a
PROXY-protocol header, the TCP peer otherwise.  It exits when its stdin
closes (so it never outlives the test that started it), or on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from tests.support.netns import Host, HostProcess

__all__ = ["start_echo"]


def start_echo(host: "Host", port: int, name: str, *, proxy_protocol: bool = False, log: Optional[Path] = None) -> "HostProcess":
    """The echo server on *host* at *port*, answering as *name*; returns once a connect succeeds."""
    endpoint = f"tcp:port={port}:interface={host.address}"
    if proxy_protocol:
        endpoint = "haproxy:" + endpoint
    process = host.spawn(
        [sys.executable, str(Path(__file__).resolve()), "--endpoint", endpoint, "--name", name],
        log=log, stdin=subprocess.PIPE,
    )
    host.network.wait_connectable((host.address, port), process)
    return process


def main() -> None:
    # Twisted is imported here only: importing this module from a test must not install a reactor.
    from twisted.internet import reactor as installed
    from twisted.internet import stdio
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.protocol import Protocol
    from twisted.web.resource import Resource
    from twisted.web.server import Request, Site

    reactor: Any = installed

    class Echo(Resource):
        isLeaf = True

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def render_GET(self, request: Request) -> bytes:  # noqa: N802 - Twisted's name
            if request.path == b"/readyz":
                request.setHeader(b"content-type", b"text/plain")
                return b"ready\n"
            peer: Any = request.getClientAddress()
            request.setHeader(b"content-type", b"application/json")
            answer = {
                "name": self.name,
                "client": getattr(peer, "host", str(peer)),
                "client_port": getattr(peer, "port", None),
                "path": request.path.decode("latin-1"),
            }
            return json.dumps(answer).encode()

    class StdinWatch(Protocol):
        def connectionLost(self, reason: object = None) -> None:  # noqa: N802 - Twisted's name
            if reactor.running:
                reactor.stop()

    def failed(failure: Any) -> None:
        print(f"cannot listen: {failure.getErrorMessage()}", flush=True)
        reactor.stop()

    parser = argparse.ArgumentParser(description="A tiny HTTP server that tells each client who it is and who it saw.")
    parser.add_argument("--endpoint", required=True, help="a Twisted server endpoint string")
    parser.add_argument("--name", required=True, help="the name it answers with")
    args = parser.parse_args()
    site = Site(Echo(args.name))
    site.noisy = False
    serverFromString(reactor, args.endpoint).listen(site).addErrback(failed)
    stdio.StandardIO(StdinWatch())
    reactor.run()


if __name__ == "__main__":
    main()
