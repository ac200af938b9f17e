"""An RFC 8555 ACME client on Twisted, from the subscriber's side: account, order, HTTP-01, finalize, download.

Twisted-native: requests go through a ``treq`` HTTPClient (injected, so a
test can trust its CA's root) and waits between polls through an injected
clock, so nothing blocks the reactor.  States of one :meth:`AcmeClient.obtain`,
as the CA's objects move (RFC 8555 7.1.6)::

    order pending -> each authorization pending -> (challenge posted) -> valid
    order ready -> (finalize with a CSR) -> processing -> valid -> certificate

Each name is proven by the first of the caller's solvers (``http-01``
through :class:`~fephp.acme.responder.Http01`, ``tls-alpn-01`` through
:class:`~fephp.acme.tlsalpn.TlsAlpnResponder`) whose type the CA offers.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

import treq
from cryptography import x509
from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from .ari import RenewalWindow, cert_id, parse_renewal_info
from .errors import CAProblem, ChallengeFailed, OrderFailed, PollTimeout, Problem, ProtocolViolation
from .jws import AccountKey, b64url, external_account_binding
from .keys import KeyType, PrivateKey, certificate_request, key_to_pem, new_key, public_der
from .responder import ChallengeSolver

__all__ = [
    "BAD_NONCE_RETRIES",
    "MAX_BODY",
    "AcmeClient",
    "ExternalAccount",
    "Issued",
]

#: The largest answer read from the CA (a directory, an order, a chain of a few certificates).
MAX_BODY = 1 << 20
#: How many times a request refused with ``badNonce`` is sent again with the fresh nonce (RFC 8555 6.5).
BAD_NONCE_RETRIES = 5
#: Seconds given to one HTTP request to the CA.
REQUEST_TIMEOUT = 30.0
#: How many times a pending authorization or a processing order is asked for again.
POLL_LIMIT = 60
#: Seconds between polls when the CA sends no Retry-After; and the most a Retry-After is followed.
POLL_INTERVAL = 1.0
MAX_POLL_DELAY = 10.0

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")  # RFC 8555 8.3: the token is base64url; nothing else reaches a path


@dataclass(frozen=True)
class ExternalAccount:
    """External Account Binding credentials the CA handed out (RFC 8555 7.3.4): a key id and its HMAC key."""

    kid: str
    hmac_key: bytes


@dataclass(frozen=True)
class Issued:
    """A certificate the CA issued: the names, the certificate's fresh key (PEM) and the chain (PEM, leaf first)."""

    names: tuple[str, ...]
    key_pem: bytes
    chain_pem: bytes


class AcmeClient:
    """One account at one ACME CA: :meth:`register` once, then :meth:`obtain` certificates.

    ``orders`` counts the orders placed, so that a caller (and a test) can
    tell a certificate loaded from storage from one ordered anew.
    """

    def __init__(
        self,
        http: HTTPClient,
        directory_url: str,
        account_key: AccountKey,
        clock: IReactorTime,
        *,
        poll_interval: float = POLL_INTERVAL,
        poll_limit: int = POLL_LIMIT,
    ) -> None:
        self._http = http
        #: The CA's directory URL, as configured.
        self.directory_url = directory_url
        self._directory_url = directory_url
        self._key = account_key
        self._clock = clock
        self._poll_interval = poll_interval
        self._poll_limit = poll_limit
        self._directory: dict[str, Any] | None = None
        self._nonce: str | None = None
        #: The account's URL (its ``kid``), once registered.
        self.account_url: str | None = None
        self.orders = 0

    async def directory(self) -> dict[str, Any]:
        """The CA's directory (RFC 8555 7.1.1), fetched once."""
        if self._directory is None:
            response = await self._http.get(self._directory_url, timeout=REQUEST_TIMEOUT)
            body = await self._read(response)
            if response.code != 200:
                raise CAProblem(f"GET {self._directory_url} answered {response.code}", self._problem(response, body))
            directory = self._object(body, self._directory_url)
            for needed in ("newNonce", "newAccount", "newOrder"):
                if not isinstance(directory.get(needed), str):
                    raise ProtocolViolation(f"the directory at {self._directory_url} has no {needed}")
            self._directory = directory
        return self._directory

    async def register(self, email: str | None = None, eab: ExternalAccount | None = None) -> str:
        """Create the account (or find it, for a key the CA knows), agreeing to the terms; its URL."""
        directory = await self.directory()
        url = directory["newAccount"]
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if email:
            payload["contact"] = [f"mailto:{email}"]
        if eab is not None:
            payload["externalAccountBinding"] = external_account_binding(self._key, url, eab.kid, eab.hmac_key)
        response, _ = await self._post(url, payload, signed_with_kid=False)
        self.account_url = self._location(response, url)
        return self.account_url

    async def renewal_info(self, certificate: x509.Certificate) -> RenewalWindow | None:
        """The CA's suggested renewal window for *certificate* (RFC 9773), or None when it offers no ARI."""
        url = (await self.directory()).get("renewalInfo")
        if not isinstance(url, str):
            return None
        url = f"{url.rstrip('/')}/{cert_id(certificate)}"
        response = await self._http.get(url, timeout=REQUEST_TIMEOUT)  # an unauthenticated GET (RFC 9773 4.1)
        body = await self._read(response)
        if response.code != 200:
            raise CAProblem(f"GET {url} answered {response.code}", self._problem(response, body))
        retry_after = None
        for value in response.headers.getRawHeaders(b"retry-after", []):
            if value.strip().isdigit():
                retry_after = float(value.strip())
        now = datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)
        return parse_renewal_info(body, now, retry_after)

    async def obtain(
        self,
        names: Sequence[str],
        solvers: Sequence[ChallengeSolver],
        key_type: KeyType = KeyType.ECDSA_P256,
        replaces: x509.Certificate | None = None,
    ) -> Issued:
        """A certificate for *names* with a fresh key of *key_type*, each name proven by the first of *solvers* whose
        challenge type the CA offers for it; the order names the certificate it *replaces* when the CA offers ARI
        (RFC 9773 5)."""
        if self.account_url is None:
            raise ProtocolViolation("obtain() before register(): no account URL to sign with")
        directory = await self.directory()
        order_request: dict[str, Any] = {"identifiers": [{"type": "dns", "value": n} for n in names]}
        if replaces is not None and isinstance(directory.get("renewalInfo"), str):
            order_request["replaces"] = cert_id(replaces)
        self.orders += 1
        response, body = await self._post(directory["newOrder"], order_request)
        order_url = self._location(response, directory["newOrder"])
        order = self._object(body, order_url)
        for authorization in order.get("authorizations", []):
            await self._authorize(authorization, solvers)
        order = await self._poll(order_url, waiting=("pending",))
        if order.get("status") != "ready":
            status = order.get("status")
            raise OrderFailed(f"order {order_url} is {status} after its authorizations", self._error(order))
        key = new_key(key_type)
        csr = b64url(certificate_request(key, names))
        _, body = await self._post(order["finalize"], {"csr": csr})
        order = self._object(body, order["finalize"])
        if order.get("status") != "valid":
            order = await self._poll(order_url, waiting=("ready", "processing"))
        if order.get("status") != "valid" or not isinstance(order.get("certificate"), str):
            raise OrderFailed(f"order {order_url} is {order.get('status')} after finalize", self._error(order))
        _, chain = await self._post(order["certificate"], None, accept=b"application/pem-certificate-chain")
        self._check_chain(chain, key, names)
        return Issued(names=tuple(names), key_pem=key_to_pem(key), chain_pem=chain)

    async def _authorize(self, url: str, solvers: Sequence[ChallengeSolver]) -> None:
        """Settle the authorization at *url*: nothing when valid already, else a challenge and poll (RFC 8555 7.5)."""
        _, body = await self._post(url, None)
        authorization = self._object(body, url)
        name = authorization.get("identifier", {}).get("value", "?")
        if authorization.get("status") == "valid":
            return  # the CA reuses a recent validation (7.1.4)
        if authorization.get("status") != "pending":
            raise ChallengeFailed(f"{name}: authorization {url} is {authorization.get('status')}")
        offered = {c.get("type"): c for c in authorization.get("challenges", []) if isinstance(c, dict)}
        solver = next((s for s in solvers if s.challenge_type in offered), None)
        if solver is None:
            ours = ", ".join(s.challenge_type for s in solvers)
            raise ChallengeFailed(f"{name}: the CA offers none of the challenges fephp answers ({ours})")
        challenge = offered[solver.challenge_type]
        token = challenge.get("token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ProtocolViolation(f"{name}: the {solver.challenge_type} token {token!r} is not base64url")
        solver.put(name, token, self._key.key_authorization(token))
        try:
            await self._post(challenge["url"], {})
            authorization = await self._poll(url, waiting=("pending",))
        finally:
            solver.remove(name, token)
        if authorization.get("status") != "valid":
            failed = next((c for c in authorization.get("challenges", []) if c.get("error")), None)
            problem = Problem.from_json(failed["error"]) if failed else None
            raise ChallengeFailed(f"{name}: authorization {url} is {authorization.get('status')}", problem)

    async def _poll(self, url: str, waiting: tuple[str, ...]) -> dict[str, Any]:
        """The object at *url* once its status is not one of *waiting*; at most ``poll_limit`` asks."""
        for _ in range(self._poll_limit):
            response, body = await self._post(url, None)
            found = self._object(body, url)
            if found.get("status") not in waiting:
                return found
            await deferLater(self._clock, self._retry_after(response), lambda: None)
        raise PollTimeout(f"{url} still {'/'.join(waiting)} after {self._poll_limit} polls")

    def _retry_after(self, response: IResponse) -> float:
        """Seconds until the next poll: the CA's Retry-After in seconds (8555 8.2), bounded; else the interval."""
        for value in response.headers.getRawHeaders(b"retry-after", []):
            if value.strip().isdigit():
                return min(float(value.strip()), MAX_POLL_DELAY)
        return self._poll_interval

    async def _post(
        self, url: str, payload: dict[str, Any] | None, *, signed_with_kid: bool = True, accept: bytes | None = None
    ) -> tuple[IResponse, bytes]:
        """POST a JWS of *payload* (None: POST-as-GET) to *url*; the answer, or CAProblem for a 4xx or 5xx."""
        headers = Headers({b"content-type": [b"application/jose+json"]})
        if accept is not None:
            headers.setRawHeaders(b"accept", [accept])
        for attempt in range(BAD_NONCE_RETRIES + 1):
            nonce = await self._take_nonce()
            body = self._key.sign(url, nonce, payload, self.account_url if signed_with_kid else None)
            response = await self._http.post(url, data=body, headers=headers, timeout=REQUEST_TIMEOUT)
            self._keep_nonce(response)
            content = await self._read(response)
            if response.code < 400:
                return response, content
            problem = self._problem(response, content)
            if problem.acme_type != "badNonce" or attempt == BAD_NONCE_RETRIES:
                raise CAProblem(f"POST {url} answered {response.code}", problem)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _take_nonce(self) -> str:
        """The nonce the last answer carried, or a fresh one from newNonce (RFC 8555 7.2)."""
        if self._nonce is None:
            url = (await self.directory())["newNonce"]
            response = await self._http.head(url, timeout=REQUEST_TIMEOUT)
            await self._read(response)
            self._keep_nonce(response)
            if self._nonce is None:
                raise ProtocolViolation(f"HEAD {url} answered {response.code} without Replay-Nonce")
        nonce, self._nonce = self._nonce, None
        return nonce

    def _keep_nonce(self, response: IResponse) -> None:
        values = response.headers.getRawHeaders(b"replay-nonce")
        if values:
            self._nonce = values[-1].decode("ascii", "replace")

    async def _read(self, response: IResponse) -> bytes:
        """The body of *response*, at most MAX_BODY bytes (a ProtocolViolation past that)."""
        parts: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > MAX_BODY:
                raise ProtocolViolation(f"an answer longer than {MAX_BODY} bytes")
            parts.append(data)

        await treq.collect(response, collect)
        return b"".join(parts)

    @staticmethod
    def _location(response: IResponse, url: str) -> str:
        values = response.headers.getRawHeaders(b"location")
        if not values:
            raise ProtocolViolation(f"POST {url} answered {response.code} without Location")
        return str(values[0].decode("ascii"))

    @staticmethod
    def _object(body: bytes, url: str) -> dict[str, Any]:
        try:
            found = json.loads(body)
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise ProtocolViolation(f"{url} answered {body[:80]!r}, not a JSON object")
        return found

    @staticmethod
    def _problem(response: IResponse, body: bytes) -> Problem:
        """The problem document in *body*, or one made of the status when the CA sent none."""
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if isinstance(document, dict):
            return Problem.from_json(document, response.code)
        return Problem(type="about:blank", detail=body[:200].decode("utf-8", "replace"), status=response.code)

    @staticmethod
    def _error(order: dict[str, Any]) -> Problem | None:
        error = order.get("error")
        return Problem.from_json(error) if isinstance(error, dict) else None

    @staticmethod
    def _check_chain(chain: bytes, key: PrivateKey, names: Sequence[str]) -> None:
        """The downloaded chain's leaf is for our key and exactly our names, or OrderFailed."""
        try:
            leaf = x509.load_pem_x509_certificates(chain)[0]
        except ValueError as e:
            raise OrderFailed(f"the certificate downloaded is not a PEM chain: {e}") from None
        if public_der(leaf.public_key()) != public_der(key):
            raise OrderFailed("the certificate downloaded is for another key")
        alt = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if sorted(alt.get_values_for_type(x509.DNSName)) != sorted(names):
            found = alt.get_values_for_type(x509.DNSName)
            raise OrderFailed(f"the certificate downloaded names {found}, not {list(names)}")

