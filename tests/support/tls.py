"""Certificates for TLS listeners in tests, made fresh by the test that needs it, and a client's look at what a listener presents."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _one_day_self_signed(common_name: str, alt_name: x509.GeneralName) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh P-256 key and a certificate it signs for itself: CN *common_name*, the one SAN *alt_name*, valid from
    five minutes ago for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt_name]), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def self_signed_pem(folder: Path, host: str = "127.0.0.1") -> Path:
    """A PEM file in *folder* with a fresh key and a one-day self-signed certificate for the IP *host*."""
    key, cert = _one_day_self_signed(host, x509.IPAddress(ipaddress.ip_address(host)))
    pem = folder / "server.pem"
    pem.touch(0o600)  # it holds the private key: 0600 before a byte of it is written
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return pem


def named_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A fresh key and a one-day self-signed certificate for the DNS *name*, as two PEM files (certificate, key) in *folder*."""
    key, cert = _one_day_self_signed(name, x509.DNSName(name))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def served_der(port: int, server_name: str | None = None) -> bytes:
    """The DER leaf that 127.0.0.1:*port* presents to a client sending SNI *server_name* (none if None), not verified."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def served_certificate(port: int, server_name: str | None = None) -> x509.Certificate:
    """:func:`served_der`'s leaf, parsed."""
    return x509.load_der_x509_certificate(served_der(port, server_name))


def https_get(port: int, root_pem: bytes, path: str, name: str) -> tuple[bytes, x509.Certificate]:
    """GET *path* from 127.0.0.1:*port* with SNI and Host *name*, trusting only the CA *root_pem*: the whole answer
    (the connection closed) and the verified leaf."""
    context = ssl.create_default_context(cadata=root_pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return answer, x509.load_der_x509_certificate(der)
