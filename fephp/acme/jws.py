"""The signed requests of RFC 8555 section 6.2, from the client's side: flattened JWS over josepy's keys and algorithms.

Every POST to an ACME CA is a JWS whose protected header carries the
``nonce`` the CA handed out last and the ``url`` posted to; the first one
(newAccount) carries the account's public ``jwk``, every later one the
account URL as ``kid``.  The key authorization of a challenge (8.1) is
the token and the key's RFC 7638 thumbprint.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import josepy
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .keys import PrivateKey

__all__ = ["AccountKey", "b64url", "external_account_binding"]


def b64url(data: bytes) -> str:
    """base64url without padding, as JOSE (and RFC 8555 7.4's csr) write bytes."""
    return josepy.json_util.encode_b64jose(data)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class AccountKey:
    """An account's private key, signing as RFC 8555 asks: ES256 for P-256, RS256 for RSA."""

    def __init__(self, key: PrivateKey) -> None:
        self.key = key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise ValueError(f"only P-256 ECDSA account keys are supported, not {key.curve.name}")
            self._jwk: josepy.JWK = josepy.JWKEC(key=key)
            self._alg: josepy.JWASignature = josepy.ES256
        elif isinstance(key, rsa.RSAPrivateKey):
            self._jwk = josepy.JWKRSA(key=key)
            self._alg = josepy.RS256
        else:
            raise ValueError(f"an account key is ECDSA P-256 or RSA, not {type(key).__name__}")
        #: The public JWK, as the newAccount request and the EAB carry it.
        self.public_jwk: dict[str, Any] = self._jwk.public_key().to_json()

    def thumbprint(self) -> str:
        """The base64url RFC 7638 SHA-256 thumbprint of the public key."""
        return b64url(self._jwk.public_key().thumbprint(hashes.SHA256))

    def key_authorization(self, token: str) -> str:
        """The key authorization for *token* (RFC 8555 8.1): HTTP-01 answers it, TLS-ALPN-01 hashes it (RFC 8737 3)."""
        return f"{token}.{self.thumbprint()}"

    def sign(self, url: str, nonce: str, payload: Mapping[str, Any] | None, kid: str | None) -> bytes:
        """The flattened JWS body POSTed to *url*; *payload* None is a POST-as-GET (an empty payload, 6.3)."""
        protected: dict[str, Any] = {"alg": self._alg.name, "nonce": nonce, "url": url}
        if kid is None:
            protected["jwk"] = self.public_jwk
        else:
            protected["kid"] = kid
        header = b64url(_json(protected))
        body = "" if payload is None else b64url(_json(payload))
        signature = self._alg.sign(self.key, f"{header}.{body}".encode())
        return _json({"protected": header, "payload": body, "signature": b64url(signature)})


def external_account_binding(account: AccountKey, url: str, kid: str, hmac_key: bytes) -> dict[str, Any]:
    """newAccount's ``externalAccountBinding`` (RFC 8555 7.3.4): the account's JWK signed with the CA's HMAC key."""
    header = b64url(_json({"alg": "HS256", "kid": kid, "url": url}))
    body = b64url(_json(account.public_jwk))
    signature = josepy.HS256.sign(hmac_key, f"{header}.{body}".encode())
    return {"protected": header, "payload": body, "signature": b64url(signature)}
