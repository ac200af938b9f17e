"""Keys and certificate requests for ACME, from the client's side: account and certificate keys, PEM, the CSR.

ECDSA P-256 is the default for both keys (small, fast, accepted by every
ACME CA); RSA 2048 is offered for clients that still need RSA.
"""

from __future__ import annotations

import enum
from typing import Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from .errors import StorageError

__all__ = ["KeyType", "PrivateKey", "certificate_request", "key_from_pem", "key_to_pem", "new_key", "public_der"]

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]


class KeyType(enum.Enum):
    """The kinds of key fephp makes, named as a configuration would name them."""

    ECDSA_P256 = "ecdsa-p256"
    RSA_2048 = "rsa-2048"


def new_key(kind: KeyType = KeyType.ECDSA_P256) -> PrivateKey:
    """A fresh private key of *kind*."""
    if kind is KeyType.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    """*key* as unencrypted PKCS#8 PEM (the files are 0600; a passphrase would have to be stored beside them)."""
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def key_from_pem(pem: bytes) -> PrivateKey:
    """The private key in *pem*; a StorageError when it is not an ECDSA or RSA private key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise StorageError(f"not a private key in PEM: {e}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise StorageError(f"a {type(key).__name__}, not an ECDSA or RSA key")
    return key


def public_der(key: PrivateKey | CertificatePublicKeyTypes) -> bytes:
    """The SubjectPublicKeyInfo of *key* (of its public half), to compare keys with."""
    public = key.public_key() if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_request(key: PrivateKey, names: Sequence[str]) -> bytes:
    """A DER CSR for *names* signed by *key*: every name in subjectAltName, the first as CN too (RFC 8555 7.4)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)
