"""TLS-ALPN-01 (RFC 8737): the validation certificate's extensions, and which handshakes get it through the callback."""

from __future__ import annotations

import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL

from fephp.acme import ACME_TLS_1, TlsAlpnResponder, validation_certificate
from fephp.acme.keys import public_der
from fephp.acme.tlsalpn import ACME_IDENTIFIER
from tests.support.acme_fakes import JAN_1, issued

SITE = issued(["site.test", "other.test"], not_before=JAN_1)


def test_the_validation_certificate_names_one_name_and_carries_the_critical_hash() -> None:
    """SAN is the name alone; acmeIdentifier is critical and is the DER OCTET STRING of SHA-256(key authorization)."""
    certificate, key = validation_certificate("site.test", "tok.thumb", JAN_1)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["site.test"]
    identifier = certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    assert identifier.critical is True
    assert isinstance(identifier.value, x509.UnrecognizedExtension)
    assert identifier.value.value == b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest()
    assert [e.oid for e in certificate.extensions] == [san.oid, ACME_IDENTIFIER]
    assert public_der(certificate.public_key()) == public_der(key)
    certificate.verify_directly_issued_by(certificate)
    assert (certificate.not_valid_before_utc, certificate.not_valid_after_utc) == (
        JAN_1 - datetime.timedelta(days=7), JAN_1 + datetime.timedelta(days=7))


def _server_context(responder: TlsAlpnResponder) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.use_certificate(x509.load_pem_x509_certificate(SITE.chain_pem))
    context.use_privatekey(load_pem_private_key(SITE.key_pem, None))  # type: ignore[arg-type]
    responder.install(context, lambda connection, offered: b"http/1.1" if b"http/1.1" in offered else b"")
    return context


def _handshake(context: SSL.Context, name: bytes, offered: list[bytes]) -> tuple[bytes, x509.Certificate]:
    """A client handshake with *name* as SNI offering *offered*, over memory BIOs: the ALPN answer and the cert."""
    server = SSL.Connection(context, None)
    server.set_accept_state()
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    client.set_connect_state()
    client.set_tlsext_host_name(name)
    client.set_alpn_protos(offered)
    for _ in range(10):  # a TLS 1.3 handshake is done in three flights
        for sender, receiver in ((client, server), (server, client)):
            try:
                sender.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                receiver.bio_write(sender.bio_read(1 << 16))
            except SSL.WantReadError:
                pass
    peer = client.get_peer_certificate(as_cryptography=True)
    assert peer is not None
    return client.get_alpn_proto_negotiated(), peer


def test_a_handshake_offering_acme_tls_1_for_a_pending_name_gets_the_validation_certificate() -> None:
    """SNI site.test with acme-tls/1 while a challenge is pending: acme-tls/1 and exactly the validation certificate."""
    responder = TlsAlpnResponder(lambda: JAN_1)
    responder.put("Site.Test", "tok", "tok.thumb")
    protocol, peer = _handshake(_server_context(responder), b"site.test", [ACME_TLS_1])
    assert (protocol, peer) == (ACME_TLS_1, responder.certificate_for("site.test"))


def test_ordinary_handshakes_and_other_names_keep_the_sites_certificate() -> None:
    """Without acme-tls/1, for another name, or once removed, the site's own certificate and ALPN choice are served."""
    site = x509.load_pem_x509_certificate(SITE.chain_pem)
    responder = TlsAlpnResponder(lambda: JAN_1)
    responder.put("site.test", "tok", "tok.thumb")
    context = _server_context(responder)
    assert _handshake(context, b"site.test", [b"http/1.1"]) == (b"http/1.1", site)
    assert _handshake(context, b"other.test", [ACME_TLS_1, b"http/1.1"]) == (b"http/1.1", site)
    responder.remove("site.test", "tok")
    assert (len(responder), responder.certificate_for("site.test")) == (0, None)
    assert _handshake(context, b"site.test", [ACME_TLS_1, b"http/1.1"]) == (b"http/1.1", site)
