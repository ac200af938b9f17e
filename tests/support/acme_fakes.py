"""Certificates as an ACME CA would issue them, made here for unit tests of fephp.acme's storage and renewal."""

from __future__ import annotations

import datetime
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from fephp.acme import Issued
from fephp.acme.keys import KeyType, key_to_pem, new_key

__all__ = ["JAN_1", "issued"]

#: A fixed start of validity, so that due times are exact.
JAN_1 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def issued(names: Sequence[str], not_before: datetime.datetime = JAN_1, days: int = 90) -> Issued:
    """A fresh key and a self-signed certificate for *names*, valid *days* from *not_before*, as Issued."""
    key = new_key(KeyType.ECDSA_P256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(names=tuple(names), key_pem=key_to_pem(key), chain_pem=cert.public_bytes(serialization.Encoding.PEM))
