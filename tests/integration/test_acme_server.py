"""Automatic HTTPS in fephp's server against Debian's Pebble: a site with tls.acme obtains its certificate by HTTP-01
or TLS-ALPN-01 through fephp's own listeners, serves it by SNI, redirects plain HTTP, and reuses it after a restart.

Pebble validates on fixed ports it is told at start, and fephp's listeners
bind port 0: two relays on 127.0.0.1 (port 0 too) stand between them,
started first, pointed at fephp's ports once it has bound them.
"""

from __future__ import annotations

import dataclasses
import datetime
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Optional

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.threads import deferToThread
from twisted.protocols.portforward import ProxyFactory, ProxyServer
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from fephp.acme import Storage
from fephp.server.acme import storage_folder
from fephp.server.config import config_from_dict
from fephp.server.metrics import registry_for
from fephp.server.running import SingleServer
from fephp.web.site import FrontSite
from tests.support.acme_fakes import issued
from tests.support.pebble import Pebble, acme_site_config, start_pebble
from tests.support.reference_http1 import reference_http1
from tests.support.tls import https_get, served_certificate

NAME = "shop.example.test"


class GatedProxyServer(ProxyServer):
    """A relayed connection that waits, unread, while its factory's gate is shut, then relays as ProxyServer does."""

    factory: GatedProxyFactory

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        gate = self.factory.gate
        if gate is None:
            ProxyServer.connectionMade(self)
            return
        self.transport.pauseProducing()  # type: ignore[attr-defined]

        def open_(result: object) -> object:
            ProxyServer.connectionMade(self)
            return result

        gate.addCallback(open_)


class GatedProxyFactory(ProxyFactory):
    """ProxyFactory with a gate: while *gate* is a Deferred not yet fired, new connections wait for it."""

    protocol = GatedProxyServer
    gate: Optional[Deferred[None]] = None


class Relays:
    """Two TCP relays on 127.0.0.1 (Pebble's httpPort and tlsPort), pointed at fephp's listeners later."""

    def __init__(self) -> None:
        self.http = GatedProxyFactory("127.0.0.1", 0)
        self.tls = GatedProxyFactory("127.0.0.1", 0)
        self.ports: list[IListeningPort] = [
            reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined, arg-type]
            for factory in (self.http, self.tls)
        ]

    def port(self, i: int) -> int:
        return int(self.ports[i].getHost().port)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def relays() -> Iterator[Relays]:
    relays = Relays()
    try:
        yield relays
    finally:
        for port in relays.ports:
            pytest_twisted.blockon(port.stopListening())


@pytest.fixture(scope="module")
def pebble(relays: Relays, tmp_path_factory: pytest.TempPathFactory) -> Generator[Pebble, None, None]:
    yield from start_pebble(tmp_path_factory.mktemp("pebble"), relays.port(0), relays.port(1))


def config(tmp_path: Path, pebble: Pebble, challenges: list[str], engine: str) -> Any:
    """One site, NAME, with tls.acme at *pebble* answering *challenges*; a plain and an ssl: listener on port 0
    (server.tls_engine *engine*)."""
    settings = acme_site_config(tmp_path, pebble, NAME, challenges)
    settings["server"]["tls_engine"] = engine
    return config_from_dict(settings, base_dir=str(tmp_path))


async def started(tmp_path: Path, pebble: Pebble, relays: Relays, challenges: list[str], engine: str) -> SingleServer:
    """A SingleServer for config(), its listeners bound, the relays pointed at them, then started; once its ACME
    services have settled."""
    server = SingleServer(config(tmp_path, pebble, challenges, engine), None, reactor)
    server.privilegedStartService()
    relays.http.port = plain_port(server)
    relays.tls.port = tls_port(server)
    server.startService()
    await DeferredList([acme.idle() for acme in server.acme])
    return server


def plain_port(server: SingleServer) -> int:
    return int(server.front.listeners[0].port.getHost().port)  # type: ignore[attr-defined]


def tls_port(server: SingleServer) -> int:
    return int(server.front.listeners[1].port.getHost().port)  # type: ignore[attr-defined]


def http_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    ("challenge", "engine", "http1"),
    [("http-01", "pyopenssl", "twisted"), ("tls-alpn-01", "pyopenssl", "twisted"), ("http-01", "stdlib", "twisted"),
     ("http-01", "pyopenssl", "fephp")],
)
async def test_a_fresh_site_obtains_serves_redirects_and_reuses_after_a_restart(
    challenge: str, engine: str, http1: str, pebble: Pebble, relays: Relays, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Obtained by *challenge* through fephp's own listener, served by SNI (with either TLS engine, either HTTP/1.1
    protocol) to a client trusting Pebble's root, plain HTTP redirected with 308 (the challenge path not), the
    expiry in /metrics; a restart orders nothing."""
    if http1 == "twisted":
        # The tests' reference engine, for every FrontSite the server builds.
        monkeypatch.setattr(FrontSite, "http1_protocol", reference_http1)
    server = await started(tmp_path, pebble, relays, [challenge], engine)
    try:
        [acme] = server.acme
        [figures] = acme.figures()
        assert (figures["state"], figures["failures"], acme.client.orders) == ("valid", 0, 1), figures["last_error"]
        root = pebble.root_pem()
        answer, leaf = await deferToThread(https_get, tls_port(server), root, "/hello.txt", NAME)
        assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK"
        assert answer.endswith(b"\r\n\r\nhello over https\n")
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [NAME]
        plain = await deferToThread(http_get, plain_port(server), "/hello.txt?a=1")
        assert plain.split(b"\r\n", 1)[0] == b"HTTP/1.1 308 Permanent Redirect"
        assert f"\r\nLocation: https://{NAME}/hello.txt?a=1\r\n".encode() in plain
        challenge_path = await deferToThread(http_get, plain_port(server), "/.well-known/acme-challenge/gone")
        assert challenge_path.split(b"\r\n", 1)[0] == b"HTTP/1.1 404 Not Found"
        snapshot = await server.view.snapshot()
        expiry = registry_for(snapshot).get_sample_value("fephp_tls_certificate_expiry_seconds", {"name": NAME})
        assert expiry is not None and figures["expiry_seconds"] - 60 < expiry <= figures["expiry_seconds"]
        assert registry_for(snapshot).get_sample_value("fephp_tls_renewal_failures_total", {"name": NAME}) == 0
    finally:
        await server.stopService()

    again = await started(tmp_path, pebble, relays, [challenge], engine)
    try:
        [acme] = again.acme
        assert (acme.client.orders, acme.client.account_url, acme.figures()[0]["state"]) == (0, None, "valid")
        answer, reused = await deferToThread(https_get, tls_port(again), root, "/hello.txt", NAME)
        assert (answer.split(b"\r\n", 1)[0], reused) == (b"HTTP/1.1 200 OK", leaf)
    finally:
        await again.stopService()


def store_due(tmp_path: Path, directory: str) -> bytes:
    """A stored certificate for NAME (self-signed, from acme_fakes) 80 days into 90: due; its PEM chain."""
    storage = Storage(storage_folder(str(tmp_path / "acme"), directory))
    old = issued([NAME], datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=80))
    storage.save(old.names, old.key_pem, old.chain_pem)
    return old.chain_pem


#: The most requests the load below makes while it waits for the renewal (each on a new TLS connection).
LOAD_BOUND = 3000


def load(port: int, done: threading.Event, after: int, first: Callable[[], object]) -> list[tuple[str, bytes]]:
    """HTTPS GETs of /hello.txt, each on a new connection (so each handshake picks the certificate of that moment),
    until *after* more once *done* is set, at most LOAD_BOUND; the status line (or the error) and the leaf of each.
    *first* is called once the first answer is in."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    results: list[tuple[str, bytes]] = []
    left = after
    while len(results) < LOAD_BOUND and left > 0:
        if done.is_set():
            left -= 1
        else:
            # Paced while the renewal runs, so that LOAD_BOUND connections
            # outlast a renewal slowed by a loaded machine (15 s at least);
            # returns at once when the renewal is over.
            done.wait(0.005)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname=NAME) as tls:
                    tls.sendall(f"GET /hello.txt HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
                    answer = b""
                    while chunk := tls.recv(65536):
                        answer += chunk
                    leaf = tls.getpeercert(binary_form=True) or b""
            results.append((answer.split(b"\r\n", 1)[0].decode(), leaf))
        except OSError as e:
            results.append((repr(e), b""))
        if len(results) == 1:
            first()
    return results


@pytest_twisted.ensureDeferred
async def test_a_certificate_due_is_renewed_and_swapped_under_load_without_a_failed_request(
    pebble: Pebble, relays: Relays, tmp_path: Path
) -> None:
    """A stored certificate due for renewal serves at start; the new one from Pebble replaces it while a client
    makes requests on fresh connections: every one answered 200, the first ones with the old certificate, the
    last 20 (made once the renewal is over) with the new one."""
    old_chain = store_due(tmp_path, pebble.directory)
    server = SingleServer(config(tmp_path, pebble, ["http-01"], "pyopenssl"), None, reactor)
    server.privilegedStartService()
    relays.http.port = plain_port(server)
    relays.tls.port = tls_port(server)
    renewed = threading.Event()
    # Pebble's HTTP-01 validation waits at the relay until the load has its
    # first answer, so the renewal cannot end before that answer: on a loaded
    # machine the load's thread started late and its first handshake already
    # got the new certificate.
    gate: Deferred[None] = Deferred()
    relays.http.gate = gate

    def open_gate() -> None:
        if not gate.called:
            gate.callback(None)

    call_from_thread = reactor.callFromThread  # type: ignore[attr-defined]
    running = deferToThread(load, tls_port(server), renewed, 20, lambda: call_from_thread(open_gate))
    server.startService()
    try:
        await DeferredList([acme.idle() for acme in server.acme])
        renewed.set()
        results = await running
        [acme] = server.acme
        assert (acme.figures()[0]["state"], acme.client.orders) == ("valid", 1)
        _, new = await deferToThread(https_get, tls_port(server), pebble.root_pem(), "/hello.txt", NAME)
        old = x509.load_pem_x509_certificate(old_chain).public_bytes(Encoding.DER)
        failed = [status for status, _ in results if status != "HTTP/1.1 200 OK"]
        assert (failed, len(results) > 0) == ([], True)
        assert len(results) < LOAD_BOUND  # the renewal ended before the bound
        leaves = [leaf for _, leaf in results]
        assert leaves[0] == old and leaves[-20:] == [new.public_bytes(Encoding.DER)] * 20
    finally:
        relays.http.gate = None
        open_gate()
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_a_ca_that_cannot_be_reached_leaves_the_old_certificate_serving_and_says_so(
    pebble: Pebble, relays: Relays, tmp_path: Path
) -> None:
    """The directory on a port nothing listens on: the stored certificate keeps serving, the failure is in /status
    and /metrics."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    directory = f"https://localhost:{closed.getsockname()[1]}/dir"  # bound, never listening: refused
    data = config(tmp_path, pebble, ["http-01"], "pyopenssl")
    site = data.sites[0]
    old_chain = store_due(tmp_path, directory)
    folder = Storage(storage_folder(str(tmp_path / "acme"), directory)).folder_for([NAME])
    tls = dataclasses.replace(
        site.tls, acme=dataclasses.replace(site.tls.acme, directory=directory),
        certificate=str(folder / "chain.pem"), key=str(folder / "key.pem"),
    )
    data = dataclasses.replace(data, sites=(dataclasses.replace(site, tls=tls),))
    server = SingleServer(data, None, reactor)
    server.privilegedStartService()
    server.startService()
    try:
        await DeferredList([a.idle() for a in server.acme])
        snapshot = await server.view.snapshot()
        [certificate] = snapshot["certificates"]
        assert (certificate["state"], certificate["failures"]) == ("failed", 1)
        assert certificate["last_error"].startswith(f"ConnectionRefusedError with {directory}: ")
        registry = registry_for(snapshot)
        assert registry.get_sample_value("fephp_tls_renewal_failures_total", {"name": NAME}) == 1
        served = await deferToThread(served_certificate, tls_port(server), NAME)
        assert served == x509.load_pem_x509_certificate(old_chain)
    finally:
        await server.stopService()
        closed.close()


class Ask(Resource):
    """The operator's ask URL for on-demand TLS: 200 for ok.demand.example.test, 403 for any other domain."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        assert request.args is not None
        request.setResponseCode(200 if request.args[b"domain"] == [b"ok.demand.example.test"] else 403)
        return b""


@pytest_twisted.ensureDeferred
async def test_on_demand_obtains_an_approved_name_at_its_first_handshake_and_refuses_a_denied_one(
    pebble: Pebble, relays: Relays, tmp_path: Path
) -> None:
    """A site of *.demand.example.test with on_demand: the first handshake for an approved name gets the listener's
    own certificate and starts the order, the next ones get the name's certificate from Pebble; a name the ask URL
    denies is never ordered."""
    ask_port: IListeningPort = reactor.listenTCP(  # type: ignore[attr-defined]
        0, Site(Ask()), interface="127.0.0.1"  # type: ignore[arg-type]
    )
    data = config(tmp_path, pebble, ["http-01"], "pyopenssl")
    site = data.sites[0]
    ask = f"http://127.0.0.1:{ask_port.getHost().port}/ask"  # type: ignore[attr-defined]
    acme = dataclasses.replace(site.tls.acme, on_demand_ask=ask, on_demand_rate=5, on_demand_period=60.0)
    site = dataclasses.replace(site, name="demand", hosts=("*.demand.example.test",),
                               tls=dataclasses.replace(site.tls, acme=acme))
    server = SingleServer(dataclasses.replace(data, sites=(site,)), None, reactor)
    server.privilegedStartService()
    relays.http.port = plain_port(server)
    relays.tls.port = tls_port(server)
    server.startService()
    try:
        fallback = await deferToThread(served_certificate, tls_port(server), "ok.demand.example.test")
        assert fallback.subject.rfc4514_string() == "CN=127.0.0.1"
        demand = server.on_demand["demand"]
        await demand.settled["ok.demand.example.test"]
        _, leaf = await deferToThread(https_get, tls_port(server), pebble.root_pem(), "/hello.txt",
                                      "ok.demand.example.test")
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["ok.demand.example.test"]

        refused = await deferToThread(served_certificate, tls_port(server), "no.demand.example.test")
        await demand.settled["no.demand.example.test"]
        assert refused.subject.rfc4514_string() == "CN=127.0.0.1"
        assert {n: s.value for n, s in demand.names.items()} == {
            "ok.demand.example.test": "approved", "no.demand.example.test": "denied"}
        assert server.acme[0].client.orders == 1
        snapshot = await server.view.snapshot()
        assert snapshot["on_demand"] == {"demand": {
            "ask": ask, "names": {"asking": 0, "approved": 1, "denied": 1}, "refused_by_rate": 0}}
    finally:
        await server.stopService()
        await maybeDeferred(ask_port.stopListening)
