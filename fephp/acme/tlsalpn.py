"""TLS-ALPN-01 (RFC 8737), from the validated server's side: the validation certificate and the handshake that shows it.

The CA connects to port 443 of the name, sends the name as SNI and offers
the single ALPN protocol ``acme-tls/1``; the server answers with a
self-signed certificate for that one name carrying the critical
``acmeIdentifier`` extension, whose value is the SHA-256 of the key
authorization (RFC 8737 section 3).  :class:`TlsAlpnResponder` holds those
certificates while the client's authorizations are pending, and hands one
out from an OpenSSL ALPN select callback: that callback runs after the SNI
callback chose the site's context and before OpenSSL picks the certificate
it sends, so a handshake that offers ``acme-tls/1`` for a name under
validation gets the validation certificate, and every other handshake
(browsers never offer ``acme-tls/1``) is untouched.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL import SSL

from .keys import KeyType, PrivateKey, new_key

__all__ = [
    "ACME_IDENTIFIER",
    "ACME_TLS_1",
    "AlpnSelect",
    "TlsAlpnResponder",
    "validation_certificate",
]

#: The ALPN protocol of a validation handshake (RFC 8737 section 6.2).
ACME_TLS_1 = b"acme-tls/1"
#: id-pe-acmeIdentifier (RFC 8737 section 6.1).
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: How long a validation certificate is valid either side of its making; the CA only checks the extension.
VALIDITY = datetime.timedelta(days=7)

#: An ALPN select callback as pyOpenSSL calls it: the connection and the protocols the client offered.
AlpnSelect = Callable[[SSL.Connection, Sequence[bytes]], bytes]


def validation_certificate(
    name: str, key_authorization: str, now: datetime.datetime, key_type: KeyType = KeyType.ECDSA_P256
) -> tuple[x509.Certificate, PrivateKey]:
    """The self-signed certificate RFC 8737 section 3 asks for *name*, and its fresh key.

    Its subjectAltName holds *name* alone; its acmeIdentifier extension is
    critical and holds ``Authorization ::= OCTET STRING (SIZE (32))``, the
    SHA-256 of the key authorization, DER-encoded (tag 0x04, length 0x20).
    """
    key = new_key(key_type)
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - VALIDITY)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


class TlsAlpnResponder:
    """The validation certificates of the pending TLS-ALPN-01 challenges, by name, and the ALPN callback serving them.

    The client calls :meth:`put` before it tells the CA to validate and
    :meth:`remove` once the authorization is settled; a TLS listener's
    context gets :meth:`install` once, with the ALPN choice it would make
    otherwise (HTTP/2 or HTTP/1.1).
    """

    challenge_type = "tls-alpn-01"

    def __init__(self, now: Callable[[], datetime.datetime]) -> None:
        self._now = now
        self._pending: dict[str, tuple[x509.Certificate, PrivateKey]] = {}

    def put(self, name: str, token: str, key_authorization: str) -> None:
        """Answer a validation handshake for *name* with a certificate for *key_authorization* from now on."""
        self._pending[name.lower()] = validation_certificate(name, key_authorization, self._now())

    def remove(self, name: str, token: str) -> None:
        """Stop answering validation handshakes for *name* (no error when none is pending)."""
        self._pending.pop(name.lower(), None)

    def certificate_for(self, name: str) -> x509.Certificate | None:
        """The validation certificate pending for *name*, or None."""
        found = self._pending.get(name.lower())
        return found[0] if found is not None else None

    def select(self, connection: SSL.Connection, offered: Sequence[bytes], otherwise: AlpnSelect) -> bytes:
        """The ALPN answer for a handshake: ``acme-tls/1`` with the validation certificate put on *connection* when
        the client offered it for a name under validation, else what *otherwise* chooses.

        A client offering ``acme-tls/1`` for a name with nothing pending is
        answered as if it had not offered it: no validation certificate
        leaves the server for a name the client is not validating.
        """
        if ACME_TLS_1 not in offered:
            return otherwise(connection, offered)
        server_name = connection.get_servername()
        found = self._pending.get(server_name.decode("ascii", "replace").lower()) if server_name else None
        if found is None:
            return otherwise(connection, [p for p in offered if p != ACME_TLS_1])
        certificate, key = found
        connection.use_certificate(certificate)
        connection.use_privatekey(key)
        return ACME_TLS_1

    def install(self, context: SSL.Context, otherwise: AlpnSelect) -> None:
        """Make *context*'s ALPN select callback :meth:`select`, falling back to *otherwise*."""
        context.set_alpn_select_callback(lambda connection, offered: self.select(connection, offered, otherwise))

    def __len__(self) -> int:
        return len(self._pending)
