"""fephp's ACME client against a real ACME CA (Debian's pebble): registration, HTTP-01, TLS-ALPN-01, a certificate,
its storage."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path
from typing import Any, Iterator, Sequence, cast

import pytest
import pytest_twisted
from cryptography import x509
from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.interfaces import IHandshakeListener, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from fephp.acme import (
    AccountKey,
    AcmeClient,
    CAProblem,
    ChallengeFailed,
    ChallengeSolver,
    ChallengeTokens,
    ExternalAccount,
    Http01,
    KeyType,
    Storage,
    Stored,
    TlsAlpnResponder,
    load_or_obtain,
)
from fephp.acme.keys import key_from_pem, new_key, public_der
from fephp.acme.service import AcmeService, CertificateState
from tests.support.acme_fakes import issued
from tests.support.pebble import Pebble, start_pebble

NAMES = ["example.test", "www.example.test"]


class Responder(Resource):
    """An HTTP-01 responder on 127.0.0.1, answering from ChallengeTokens and noting each path Pebble fetched."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.tokens = ChallengeTokens()
        self.served: list[bytes] = []

    def render_GET(self, request: Request) -> bytes:
        answer = self.tokens.answer(request.path)
        if answer is None:
            request.setResponseCode(404)
            return b""
        self.served.append(request.path)
        request.setHeader(b"content-type", b"application/octet-stream")
        return answer


@pytest.fixture(scope="module")
def responder() -> Iterator[tuple[Responder, int]]:
    resource = Responder()
    site = Site(resource)
    port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined, arg-type]
    try:
        yield resource, port.getHost().port  # type: ignore[attr-defined]
    finally:
        pytest_twisted.blockon(port.stopListening())


@implementer(IHandshakeListener)
class Handshakes(Protocol):
    """Notes the SNI name and ALPN answer of each finished handshake, then closes (RFC 8737 3: nothing follows)."""

    def __init__(self, seen: list[tuple[bytes | None, bytes | None]]) -> None:
        self.seen = seen

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted's name
        connection = self.transport.getHandle()  # type: ignore[union-attr]
        self.seen.append((connection.get_servername(), self.transport.negotiatedProtocol))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class TlsListener:
    """A TLS listener on 127.0.0.1 with a site certificate of its own and a TlsAlpnResponder on its context."""

    def __init__(self) -> None:
        self.responder = TlsAlpnResponder(lambda: datetime.datetime.now(datetime.timezone.utc))
        self.seen: list[tuple[bytes | None, bytes | None]] = []
        site = issued(["default.test"], datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1))
        options = ssl.CertificateOptions(
            privateKey=ssl.PrivateCertificate.loadPEM(site.key_pem + site.chain_pem).privateKey.original,
            certificate=ssl.Certificate.loadPEM(site.chain_pem).original,
        )
        self.responder.install(options.getContext(), self._otherwise)
        self.port: IListeningPort = reactor.listenSSL(  # type: ignore[attr-defined]
            0, Factory.forProtocol(lambda: Handshakes(self.seen)), options, interface="127.0.0.1"
        )

    @staticmethod
    def _otherwise(connection: SSL.Connection, offered: Sequence[bytes]) -> bytes:
        return b"http/1.1" if b"http/1.1" in offered else b""


@pytest.fixture(scope="module")
def tls_listener() -> Iterator[TlsListener]:
    listener = TlsListener()
    try:
        yield listener
    finally:
        pytest_twisted.blockon(listener.port.stopListening())


@pytest.fixture(scope="module")
def pebble(
    responder: tuple[Responder, int], tls_listener: TlsListener, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pebble]:
    tls_port = tls_listener.port.getHost().port  # type: ignore[attr-defined]
    yield from start_pebble(tmp_path_factory.mktemp("pebble"), responder[1], tls_port)


def client_for(pebble: Pebble, key: AccountKey, directory: str | None = None) -> AcmeClient:
    """A client of *pebble* trusting only its HTTPS certificate, polling every 50 ms."""
    policy = BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(pebble.https_ca_pem))
    http = HTTPClient(Agent(reactor, contextFactory=policy))
    return AcmeClient(http, directory or pebble.directory, key, reactor, poll_interval=0.05)  # type: ignore[arg-type]


def eab(pebble: Pebble) -> ExternalAccount:
    return ExternalAccount(kid=pebble.eab_kid, hmac_key=pebble.eab_hmac_key)


@pytest_twisted.ensureDeferred
async def test_registration_without_the_required_binding_is_refused_with_the_cas_problem(pebble: Pebble) -> None:
    """A CA that requires External Account Binding refuses an account without it; the error carries its problem."""
    client = client_for(pebble, AccountKey(new_key(KeyType.ECDSA_P256)))
    with pytest.raises(CAProblem) as caught:
        await client.register("admin@example.test")
    assert caught.value.problem is not None
    assert (caught.value.problem.acme_type, caught.value.problem.status) == ("externalAccountRequired", 403)
    assert str(caught.value) == (
        f"the ACME CA refused the request: POST {pebble.directory.rsplit('/', 1)[0]}/sign-me-up answered 403"
        " (externalAccountRequired: ACME server policy requires newAccount requests must include a value for the"
        " 'externalAccountBinding' field)"
    )
    assert client.account_url is None


@pytest_twisted.ensureDeferred
async def test_a_certificate_by_http01_is_stored_0600_and_reused_without_a_new_order(
    pebble: Pebble, responder: tuple[Responder, int], tmp_path: Path
) -> None:
    """Register with EAB, obtain a certificate for two names through a real HTTP-01 responder, store it, reload it."""
    resource, _ = responder
    storage = Storage(tmp_path / "acme")
    account = AccountKey(storage.account_key())
    client = client_for(pebble, account)
    url = await client.register("admin@example.test", eab(pebble))
    assert url.startswith(pebble.directory.rsplit("/", 1)[0] + "/")
    now = datetime.datetime.now(datetime.timezone.utc)
    served_before = len(resource.served)

    http01 = [Http01(resource.tokens)]
    stored = await load_or_obtain(storage, NAMES, lambda names: client.obtain(names, http01), now, 0.0)

    assert client.orders == 1
    # Pebble fetched two tokens, one per name, from our responder (each more than once: it validates as from
    # several places), and the client took them down after.
    assert len(set(resource.served[served_before:])) == 2
    assert len(resource.tokens) == 0
    chain = x509.load_pem_x509_certificates(stored.chain_pem)
    leaf = chain[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == sorted(NAMES)
    assert public_der(leaf.public_key()) == public_der(key_from_pem(stored.key_path.read_bytes()))
    root = x509.load_pem_x509_certificate(pebble.root_pem())
    for child, parent in zip(chain, chain[1:] + [root]):
        child.verify_directly_issued_by(parent)  # the chain goes up to the root this Pebble issues from
    assert stored.chain_path.read_bytes() == stored.chain_pem
    files = sorted(p.relative_to(storage.folder).as_posix() for p in storage.folder.rglob("*") if p.is_file())
    assert files == ["account.key"] + [f"{stored.folder.relative_to(storage.folder).as_posix()}/{n}"
                                       for n in ("chain.pem", "key.pem", "meta.json")]
    assert {stat.S_IMODE(p.stat().st_mode) for p in storage.folder.rglob("*") if p.is_file()} == {0o600}

    # A restart: a new client with the stored account key finds the stored certificate and orders nothing.
    again = client_for(pebble, AccountKey(Storage(storage.folder).account_key()))
    assert await again.register("admin@example.test", eab(pebble)) == url
    reversed_names = list(reversed(NAMES))
    reloaded = await load_or_obtain(storage, reversed_names, lambda n: again.obtain(n, http01), now, 0.0)
    assert (again.orders, reloaded.chain_pem, reloaded.key_pem) == (0, stored.chain_pem, stored.key_pem)


class Silent:
    """A responder that puts nothing up (the CA finds no key authorization where it looks), noting the tokens asked."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def put(self, token: str, key_authorization: str) -> None:
        self.tokens.append(token)

    def remove(self, token: str) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_a_failed_validation_is_the_cas_problem_and_leaves_the_stored_certificate(
    pebble: Pebble, responder: tuple[Responder, int], tmp_path: Path
) -> None:
    """When Pebble gets a 404 for the token, obtain fails with its unauthorized problem and the stored files stay."""
    storage = Storage(tmp_path / "acme")
    client = client_for(pebble, AccountKey(storage.account_key()))
    await client.register(None, eab(pebble))
    old = issued(["fail.example.test"])
    stored = storage.save(old.names, old.key_pem, old.chain_pem)
    due = stored.not_after  # past two thirds of the lifetime: renewal is attempted
    silent = Silent()
    with pytest.raises(ChallengeFailed) as caught:
        await load_or_obtain(storage, old.names, lambda names: client.obtain(names, [Http01(silent)]), due, 0.0)
    assert caught.value.problem is not None
    assert (caught.value.problem.acme_type, client.orders, len(silent.tokens)) == ("unauthorized", 1, 1)
    assert caught.value.problem.detail == (
        f"Non-200 status code from HTTP: http://fail.example.test:{responder[1]}/.well-known/acme-challenge/"
        f"{silent.tokens[0]} returned 404"
    )
    assert storage.load(old.names) == stored


@pytest_twisted.ensureDeferred
async def test_a_certificate_by_tls_alpn01_through_a_real_tls_listener(
    pebble: Pebble, responder: tuple[Responder, int], tls_listener: TlsListener, tmp_path: Path
) -> None:
    """With TLS-ALPN-01 preferred, Pebble validates by handshakes offering acme-tls/1 and the HTTP responder rests."""
    resource, _ = responder
    storage = Storage(tmp_path / "acme")
    client = client_for(pebble, AccountKey(storage.account_key()))
    await client.register(None, eab(pebble))
    served_before, seen_before = len(resource.served), len(tls_listener.seen)

    issued_now = await client.obtain(["alpn.example.test"], [tls_listener.responder, Http01(resource.tokens)])

    leaf = x509.load_pem_x509_certificates(issued_now.chain_pem)[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["alpn.example.test"]
    assert public_der(leaf.public_key()) == public_der(key_from_pem(issued_now.key_pem))
    handshakes = set(tls_listener.seen[seen_before:])
    assert handshakes == {(b"alpn.example.test", b"acme-tls/1")}
    assert (len(resource.served), len(tls_listener.responder), client.orders) == (served_before, 0, 1)


def acme_service(
    pebble: Pebble, storage: Storage, names: list[str], solver: ChallengeSolver, installed: list[Stored],
    events: list[dict[str, Any]], directory: str | None = None,
) -> AcmeService:
    """An AcmeService for one name set at *pebble* (or at *directory*), with the account key in *storage*."""
    client = client_for(pebble, AccountKey(storage.account_key()), directory)
    service = AcmeService(
        client=client, storage=storage, name_sets=[names], solvers=[solver], installed=installed.append,
        clock=reactor, email="admin@example.test", eab=eab(pebble),  # type: ignore[arg-type]
    )
    service.log = Logger(observer=cast(ILogObserver, events.append))
    return service


@pytest_twisted.ensureDeferred
async def test_the_service_obtains_installs_and_after_a_restart_reuses_without_a_word_to_the_ca(
    pebble: Pebble, responder: tuple[Responder, int], tmp_path: Path
) -> None:
    """First start: one order, the certificate installed and stored; second start: installed again, no order, and
    not even a registration."""
    storage = Storage(tmp_path / "acme")
    installed: list[Stored] = []
    first = acme_service(pebble, storage, ["svc.example.test"], Http01(responder[0].tokens), installed, [])
    first.startService()
    await first.idle()
    await first.stopService()
    [stored] = installed
    assert (first.client.orders, first.managed[0].state, storage.load(["svc.example.test"])) == (
        1, CertificateState.VALID, stored)
    x509.load_pem_x509_certificate(stored.chain_pem).verify_directly_issued_by(
        x509.load_pem_x509_certificates(stored.chain_pem)[1])

    again = acme_service(pebble, storage, ["svc.example.test"], Http01(responder[0].tokens), installed, [])
    again.startService()
    await again.idle()
    await again.stopService()
    assert (installed, again.client.orders, again.client.account_url) == ([stored, stored], 0, None)
    assert again.figures()[0]["state"] == "valid"


@pytest_twisted.ensureDeferred
async def test_a_refusing_ca_leaves_the_old_certificate_and_records_the_failure(
    pebble: Pebble, responder: tuple[Responder, int], tmp_path: Path
) -> None:
    """A certificate due for renewal and a validation Pebble refuses: the old one stays installed, the failure is
    FAILED in the figures with Pebble's problem, and logged with it."""
    storage = Storage(tmp_path / "acme")
    old = issued(["refused.example.test"], datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=80))
    stored = storage.save(old.names, old.key_pem, old.chain_pem)
    installed: list[Stored] = []
    events: list[dict[str, Any]] = []
    service = acme_service(pebble, storage, ["refused.example.test"], Http01(Silent()), installed, events)
    service.startService()
    await service.idle()
    await service.stopService()
    figures = service.figures()[0]
    assert (installed, storage.load(old.names), service.client.orders) == ([stored], stored, 1)
    assert (figures["state"], figures["failures"]) == ("failed", 1)
    assert figures["last_error"].startswith("the CA could not validate the name: refused.example.test: authorization")
    [error] = [e for e in events if e["log_level"].name == "error"]
    assert (error["problem_type"], error["problem_status"]) == ("urn:ietf:params:acme:error:unauthorized", 403)
    assert error["problem_detail"].startswith("Non-200 status code from HTTP: http://refused.example.test:")


@pytest_twisted.ensureDeferred
async def test_a_stopped_ca_leaves_the_old_certificate_and_records_the_failure(
    responder: tuple[Responder, int], tmp_path: Path
) -> None:
    """A Pebble started for this test and stopped before the renewal: connection refused, the old one installed."""
    running = start_pebble(tmp_path / "pebble", responder[1])
    (tmp_path / "pebble").mkdir()
    stopped = next(running)
    running.close()  # stops Pebble and its DNS
    storage = Storage(tmp_path / "acme")
    old = issued(["stopped.example.test"], datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=80))
    stored = storage.save(old.names, old.key_pem, old.chain_pem)
    installed: list[Stored] = []
    events: list[dict[str, Any]] = []
    service = acme_service(stopped, storage, ["stopped.example.test"], Http01(Silent()), installed, events)
    service.startService()
    await service.idle()
    await service.stopService()
    figures = service.figures()[0]
    assert (installed, storage.load(old.names), service.client.orders) == ([stored], stored, 0)
    assert (figures["state"], figures["failures"]) == ("failed", 1)
    assert figures["last_error"] == (
        f"ConnectionRefusedError with {stopped.directory}: Connection was refused by other side: 111: Connection"
        " refused.")
    [error] = [e for e in events if e["log_level"].name == "error"]
    assert (error["problem_type"], error["attempt"]) == (None, 1)
