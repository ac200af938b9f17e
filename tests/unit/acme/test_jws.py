"""fephp.acme's signed requests (RFC 8555 6.2): the protected header, the payload, a signature that verifies, EAB."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fephp.acme import AccountKey, KeyType
from fephp.acme.jws import external_account_binding
from fephp.acme.keys import new_key


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decoded(body: bytes) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """The protected header, the payload, the signature and the signing input of a flattened JWS."""
    jws = json.loads(body)
    assert sorted(jws) == ["payload", "protected", "signature"]
    signing_input = f"{jws['protected']}.{jws['payload']}".encode()
    return json.loads(unb64(jws["protected"])), unb64(jws["payload"]), unb64(jws["signature"]), signing_input


def test_the_first_request_carries_the_jwk_and_a_p256_signature_that_verifies() -> None:
    """newAccount's JWS: ES256, the nonce, the url, the public JWK (no private member); r||s verifies with the key."""
    key = new_key(KeyType.ECDSA_P256)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    account = AccountKey(key)
    header, payload, signature, signing_input = decoded(
        account.sign("https://ca/new-acct", "nonce-1", {"termsOfServiceAgreed": True}, kid=None)
    )
    numbers = key.public_key().public_numbers()
    x, y = (base64.urlsafe_b64encode(n.to_bytes(32, "big")).decode().rstrip("=") for n in (numbers.x, numbers.y))
    jwk = {"crv": "P-256", "kty": "EC", "x": x, "y": y}
    assert header == {"alg": "ES256", "nonce": "nonce-1", "url": "https://ca/new-acct", "jwk": jwk}
    assert json.loads(payload) == {"termsOfServiceAgreed": True}
    assert len(signature) == 64
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.public_key().verify(der, signing_input, ec.ECDSA(hashes.SHA256()))


def test_a_post_as_get_has_an_empty_payload_and_the_account_url_as_kid() -> None:
    """POST-as-GET (RFC 8555 6.3): payload "" and kid instead of jwk."""
    account = AccountKey(new_key())
    header, payload, _, signing_input = decoded(account.sign("https://ca/order/1", "n2", None, kid="https://ca/acct/7"))
    assert header == {"alg": "ES256", "nonce": "n2", "url": "https://ca/order/1", "kid": "https://ca/acct/7"}
    assert payload == b""
    assert signing_input.endswith(b".")


def test_the_key_authorization_is_the_token_and_the_rfc7638_thumbprint() -> None:
    """token + "." + base64url(SHA-256 of the JWK's required members, sorted, without spaces) (RFC 8555 8.1)."""
    account = AccountKey(new_key())
    jwk = account.public_jwk
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")
    assert account.key_authorization("tok_-1") == f"tok_-1.{thumbprint}"


def test_an_rsa_account_key_signs_rs256() -> None:
    """RSA 2048 account keys sign with RS256 and carry an RSA JWK."""
    header, _, signature, _ = decoded(AccountKey(new_key(KeyType.RSA_2048)).sign("https://ca/x", "n", {}, kid=None))
    assert (header["alg"], header["jwk"]["kty"], header["jwk"]["e"], len(signature)) == ("RS256", "RSA", "AQAB", 256)


def test_the_external_account_binding_is_the_account_jwk_under_the_cas_hmac() -> None:
    """EAB (RFC 8555 7.3.4): HS256 with the CA's kid and the newAccount url over the account's public JWK."""
    account = AccountKey(new_key())
    binding = external_account_binding(account, "https://ca/new-acct", "kid-1", b"secret")
    header, payload, signature, signing_input = decoded(json.dumps(binding).encode())
    assert header == {"alg": "HS256", "kid": "kid-1", "url": "https://ca/new-acct"}
    assert json.loads(payload) == account.public_jwk
    assert signature == hmac.new(b"secret", signing_input, hashlib.sha256).digest()


def test_the_external_account_binding_of_a_fixed_key_is_a_known_jws() -> None:
    """A fixed P-256 key, kid and HMAC key give exactly these bytes (the HMAC checked apart with openssl dgst)."""
    account = AccountKey(ec.derive_private_key(0x0123456789ABCDEF, ec.SECP256R1()))
    binding = external_account_binding(account, "https://ca.test/new-acct", "kid-1", b"0123456789abcdef" * 2)
    assert binding == {
        "protected": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImtpZC0xIiwidXJsIjoiaHR0cHM6Ly9jYS50ZXN0L25ldy1hY2N0In0",
        "payload": (
            "eyJjcnYiOiJQLTI1NiIsImt0eSI6IkVDIiwieCI6Ik9ZZ3lLcm4xTEg4UjFkR3FrcUtzQ3dBblc4clk2VFJvSWxjeVA5cG5KSUkiLCJ5"
            "IjoiaFZ0emlmRVd3WndBRkRFY1BWZmNBZ0FlT2c3SXZaREhsM01nTktyTm1SZyJ9"
        ),
        "signature": "TQ3D1zt7-E7tO4NfN2KD7-sBoU3NdaqW3AlF_egCQ9Y",
    }
