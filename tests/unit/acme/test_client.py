"""fephp.acme's client against a scripted CA over treq's in-memory agent: nonces, badNonce retries, problems kept."""

from __future__ import annotations

import base64
import json
from typing import Any, TypeVar, cast

import pytest
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from fephp.acme import AccountKey, AcmeClient, CAProblem, Http01, ProtocolViolation
from fephp.acme.client import BAD_NONCE_RETRIES
from fephp.acme.keys import new_key
from tests.support.acme_fakes import drive

T = TypeVar("T")
BASE = "https://ca.test"


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ScriptedCA(Resource):
    """A CA that hands out numbered nonces and answers each POST to /new-acct from a script of (status, body)."""

    isLeaf = True

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        super().__init__()
        self.answers = answers
        self.nonces_seen: list[str] = []
        self._issued = 0

    def _nonce(self, request: Request) -> None:
        self._issued += 1
        request.setHeader(b"replay-nonce", f"nonce-{self._issued}".encode())

    def render_GET(self, request: Request) -> bytes:
        if request.path == b"/dir":
            return json.dumps({n: f"{BASE}/{n}" for n in ("newNonce", "newAccount", "newOrder")}).encode()
        self._nonce(request)  # HEAD /newNonce
        return b""

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        jws = json.loads(request.content.read())
        protected = json.loads(unb64(jws["protected"]))
        self.nonces_seen.append(protected["nonce"])
        self._nonce(request)
        status, body = self.answers.pop(0)
        request.setResponseCode(status)
        if status >= 400:
            request.setHeader(b"content-type", b"application/problem+json")
        else:
            request.setHeader(b"location", f"{BASE}/acct/1".encode())
        return json.dumps(body).encode()


def client(ca: ScriptedCA) -> tuple[StubTreq, AcmeClient]:
    stub = StubTreq(ca)
    return stub, AcmeClient(cast(HTTPClient, stub), f"{BASE}/dir", AccountKey(new_key()), Clock())


BAD_NONCE = {"type": "urn:ietf:params:acme:error:badNonce", "detail": "JWS has an invalid anti-replay nonce"}


def test_a_bad_nonce_is_retried_with_the_nonce_the_refusal_carried() -> None:
    """Two badNonce refusals then 201: three POSTs, each with the nonce of the answer before it (RFC 8555 6.5)."""
    ca = ScriptedCA([(400, BAD_NONCE), (400, BAD_NONCE), (201, {"status": "valid"})])
    stub, acme = client(ca)
    assert drive(stub, acme.register("admin@example.test")) == f"{BASE}/acct/1"
    assert ca.nonces_seen == ["nonce-1", "nonce-2", "nonce-3"]
    assert acme.account_url == f"{BASE}/acct/1"


def test_bad_nonces_past_the_bound_fail_with_the_cas_problem() -> None:
    """After BAD_NONCE_RETRIES retries the last refusal is raised, its problem document kept."""
    ca = ScriptedCA([(400, BAD_NONCE)] * (BAD_NONCE_RETRIES + 1))
    stub, acme = client(ca)
    result = drive(stub, acme.register())
    assert isinstance(result, Failure)
    error = result.value
    assert isinstance(error, CAProblem)
    assert (len(ca.nonces_seen), ca.answers) == (6, [])
    assert str(error) == (
        f"the ACME CA refused the request: POST {BASE}/newAccount answered 400"
        " (badNonce: JWS has an invalid anti-replay nonce)"
    )


def test_another_refusal_is_not_retried() -> None:
    """A refusal other than badNonce (here unauthorized, 403) fails at once with its type and status."""
    ca = ScriptedCA([(403, {"type": "urn:ietf:params:acme:error:unauthorized", "detail": "no", "status": 403}),
                     (201, {})])
    stub, acme = client(ca)
    result = drive(stub, acme.register())
    assert isinstance(result, Failure) and isinstance(result.value, CAProblem)
    assert result.value.problem is not None
    problem = result.value.problem
    assert (problem.acme_type, problem.status, len(ca.nonces_seen)) == ("unauthorized", 403, 1)


def test_obtain_before_register_is_refused_without_asking_the_ca() -> None:
    """No account URL to sign with: a ProtocolViolation and no request."""
    ca = ScriptedCA([])
    stub, acme = client(ca)
    result = drive(stub, acme.obtain(["example.test"], [Http01(_NoResponder())]))
    assert isinstance(result, Failure) and isinstance(result.value, ProtocolViolation)
    assert (ca.nonces_seen, acme.orders) == ([], 0)


class _NoResponder:
    def put(self, token: str, key_authorization: str) -> None:
        pytest.fail("nothing to put")

    def remove(self, token: str) -> None:
        pytest.fail("nothing to remove")
