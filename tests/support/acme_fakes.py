"""Certificates as an ACME CA would issue them, made here for unit tests of fephp.acme, and a driver for its
coroutines over treq's in-memory agent."""

from __future__ import annotations

import datetime
from typing import Any, Coroutine, Sequence, TypeVar

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from fephp.acme import Issued
from fephp.acme.keys import KeyType, key_to_pem, new_key

__all__ = ["JAN_1", "drive", "issued"]

T = TypeVar("T")

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


def drive(stub: StubTreq, coroutine: Coroutine[Any, Any, T]) -> T | Failure:
    """Drive *coroutine* by flushing *stub* until it finishes (at most 100 rounds); its result or its Failure."""
    d: Deferred[T] = ensureDeferred(coroutine)
    results: list[T | Failure] = []
    d.addBoth(results.append)
    for _ in range(100):
        if results:
            return results[0]
        stub.flush()
    raise AssertionError("the coroutine did not finish within 100 flushes")
