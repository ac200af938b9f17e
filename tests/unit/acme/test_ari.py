"""ACME Renewal Information (RFC 9773): the certificate ID, the window read from the CA, renewal inside it, replaces."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from fephp.acme import (
    AccountKey,
    AcmeClient,
    CAProblem,
    ChallengeTokens,
    Http01,
    ProtocolViolation,
    RenewalWindow,
    cert_id,
    is_renewal_due,
    renewal_due_at,
)
from fephp.acme.ari import RETRY_AFTER_DEFAULT, parse_renewal_info
from fephp.acme.keys import new_key
from tests.support.acme_fakes import JAN_1, drive

DAY = datetime.timedelta(days=1)
BASE = "https://ca.test"
#: RFC 9773 appendix A's example: this keyIdentifier and serial 0x0087654321 give this certID.
RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
RFC_CERT_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def certificate(serial: int, aki: bytes | None = RFC_AKI) -> x509.Certificate:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(JAN_1)
        .not_valid_after(JAN_1 + 90 * DAY)
    )
    if aki is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_the_cert_id_is_rfc_9773s_example() -> None:
    """keyIdentifier 69:88:5B:... and serial 0x87654321 (top bit set: a zero byte first) give aYhba4dG....AIdlQyE."""
    assert cert_id(certificate(0x87654321)) == RFC_CERT_ID
    assert cert_id(certificate(0x7F)).split(".")[1] == "fw"  # 0x7f: one octet, no leading zero


def test_a_certificate_without_a_key_identifier_has_no_cert_id() -> None:
    """No Authority Key Identifier: a ProtocolViolation that says so."""
    with pytest.raises(ProtocolViolation) as caught:
        cert_id(certificate(5, aki=None))
    assert caught.value.detail == "the certificate has no Authority Key Identifier to name it by for ARI"


def test_a_window_is_read_with_nanoseconds_zones_and_a_bounded_retry_after() -> None:
    """Go's nine-digit fractions and Z read exactly; Retry-After 30 s is held to a minute, none means six hours."""
    body = json.dumps({
        "suggestedWindow": {"start": "2026-03-01T00:00:00.123456789Z", "end": "2026-03-03T12:00:00+02:00"},
        "explanationURL": "https://ca.test/why",
    }).encode()
    window = parse_renewal_info(body, JAN_1, 30.0)
    utc = datetime.timezone.utc
    assert window == RenewalWindow(
        start=datetime.datetime(2026, 3, 1, 0, 0, 0, 123456, tzinfo=utc),
        end=datetime.datetime(2026, 3, 3, 10, tzinfo=utc),
        explanation_url="https://ca.test/why",
        ask_again_at=JAN_1 + datetime.timedelta(seconds=60),
    )
    plain = b'{"suggestedWindow": {"start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}}'
    assert parse_renewal_info(plain, JAN_1, None).ask_again_at == JAN_1 + datetime.timedelta(
        seconds=RETRY_AFTER_DEFAULT)
    assert parse_renewal_info(plain, JAN_1, 1e9).ask_again_at == JAN_1 + DAY


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[]", "renewalInfo answered b'[]', without a suggestedWindow"),
        (b'{"suggestedWindow": {"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"}}',
         "renewalInfo's window ends (2026-03-01T00:00:00+00:00) before it starts (2026-03-02T00:00:00+00:00)"),
        (b'{"suggestedWindow": {"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00Z"}}',
         "renewalInfo's start '2026-03-01T00:00:00' has no time zone"),
        (b'{"suggestedWindow": {"start": 5, "end": "2026-03-02T00:00:00Z"}}',
         "renewalInfo's start is 5, not an RFC 3339 timestamp"),
        (b'{"suggestedWindow": {"start": "March", "end": "2026-03-02T00:00:00Z"}}',
         "renewalInfo has 'March', not an RFC 3339 timestamp"),
    ],
    ids=["not-an-object", "ends-before-start", "no-zone", "not-a-string", "not-a-date"],
)
def test_a_window_that_is_not_one_is_a_protocol_violation(body: bytes, detail: str) -> None:
    """Each malformed answer is refused with a sentence naming what is wrong."""
    with pytest.raises(ProtocolViolation) as caught:
        parse_renewal_info(body, JAN_1, None)
    assert caught.value.detail == detail


def test_a_window_replaces_two_thirds_of_the_lifetime() -> None:
    """With a window, due at start + jitter * width (not on day 60); a window in the past means due now."""
    window = RenewalWindow(JAN_1 + 10 * DAY, JAN_1 + 12 * DAY, None, JAN_1)
    assert renewal_due_at(JAN_1, JAN_1 + 90 * DAY, 0.0) == JAN_1 + 60 * DAY
    assert renewal_due_at(JAN_1, JAN_1 + 90 * DAY, 0.0, window) == JAN_1 + 10 * DAY
    assert renewal_due_at(JAN_1, JAN_1 + 90 * DAY, 0.25, window) == JAN_1 + 10.5 * DAY
    assert is_renewal_due(JAN_1 + 10.4 * DAY, JAN_1, JAN_1 + 90 * DAY, 0.25, window) is False
    assert is_renewal_due(JAN_1 + 10.5 * DAY, JAN_1, JAN_1 + 90 * DAY, 0.25, window) is True
    past = RenewalWindow(JAN_1 - 2 * DAY, JAN_1 - DAY, None, JAN_1)
    assert is_renewal_due(JAN_1, JAN_1 - 30 * DAY, JAN_1 + 60 * DAY, 0.999, past) is True


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AriCA(Resource):
    """A CA with renewalInfo (or without, *ari* False): answers windows by certID, notes newOrder's payloads."""

    isLeaf = True

    def __init__(self, ari: bool = True, window_status: int = 200) -> None:
        super().__init__()
        self.ari = ari
        self.window_status = window_status
        self.asked: list[bytes] = []
        self.orders: list[dict[str, Any]] = []

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"replay-nonce", b"n")
        if request.path == b"/dir":
            directory = {n: f"{BASE}/{n}" for n in ("newNonce", "newAccount", "newOrder")}
            if self.ari:
                directory["renewalInfo"] = f"{BASE}/renewal-info/"
            return json.dumps(directory).encode()
        self.asked.append(request.path)
        request.setResponseCode(self.window_status)
        request.setHeader(b"retry-after", b"3600")
        return b'{"suggestedWindow": {"start": "2026-02-01T00:00:00Z", "end": "2026-02-03T00:00:00Z"}}'

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        jws = json.loads(request.content.read())
        request.setHeader(b"replay-nonce", b"n")
        if request.path == b"/newOrder":
            self.orders.append(json.loads(unb64(jws["payload"])))
        request.setResponseCode(403)
        return b'{"type": "urn:ietf:params:acme:error:unauthorized", "detail": "no"}'


def ari_client(ca: AriCA) -> tuple[StubTreq, AcmeClient]:
    stub = StubTreq(ca)
    clock = Clock()
    clock.advance((JAN_1 - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds())
    acme = AcmeClient(cast(HTTPClient, stub), f"{BASE}/dir", AccountKey(new_key()), clock)
    acme.account_url = f"{BASE}/acct/1"
    return stub, acme


def test_the_client_fetches_the_window_by_cert_id_and_names_the_replaced_certificate_in_the_order() -> None:
    """GET <renewalInfo>/<certID> gives the window (Retry-After an hour); newOrder then carries replaces."""
    ca = AriCA()
    stub, acme = ari_client(ca)
    old = certificate(0x87654321)
    window = drive(stub, acme.renewal_info(old))
    utc = datetime.timezone.utc
    assert window == RenewalWindow(
        datetime.datetime(2026, 2, 1, tzinfo=utc), datetime.datetime(2026, 2, 3, tzinfo=utc), None,
        JAN_1 + datetime.timedelta(hours=1))
    assert ca.asked == [f"/renewal-info/{RFC_CERT_ID}".encode()]
    failed = drive(stub, acme.obtain(["example.test"], [Http01(ChallengeTokens())], replaces=old))
    assert isinstance(failed, Failure) and isinstance(failed.value, CAProblem)
    assert ca.orders == [{"identifiers": [{"type": "dns", "value": "example.test"}], "replaces": RFC_CERT_ID}]


def test_a_ca_without_ari_has_no_window_and_orders_carry_no_replaces() -> None:
    """No renewalInfo in the directory: renewal_info is None without a request, and newOrder has no replaces."""
    ca = AriCA(ari=False)
    stub, acme = ari_client(ca)
    old = certificate(0x87654321)
    assert (drive(stub, acme.renewal_info(old)), ca.asked) == (None, [])
    drive(stub, acme.obtain(["example.test"], [Http01(ChallengeTokens())], replaces=old))
    assert ca.orders == [{"identifiers": [{"type": "dns", "value": "example.test"}]}]


def test_a_refused_window_is_the_cas_problem() -> None:
    """renewalInfo answering 404 is a CAProblem with the status, so that the caller falls back to two thirds."""
    stub, acme = ari_client(AriCA(window_status=404))
    failed = drive(stub, acme.renewal_info(certificate(0x87654321)))
    assert isinstance(failed, Failure) and isinstance(failed.value, CAProblem)
    assert failed.value.problem is not None and failed.value.problem.status == 404
