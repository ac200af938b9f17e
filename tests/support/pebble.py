"""A real ACME CA for tests: Debian's pebble, with pebble-challtestsrv as its DNS, from generated configs in a temp dir.

Pebble serves ACME over HTTPS with a certificate made here (a one-day CA
and a ``localhost`` leaf, so that a client can trust exactly it), resolves
every name to 127.0.0.1 through pebble-challtestsrv's DNS, and validates
HTTP-01 on 127.0.0.1 at the ``httpPort`` the caller's responder listens on
and TLS-ALPN-01 at its ``tlsPort``.
Both programs bind port 0: challtestsrv's DNS port is read back from
/proc (its UDP socket), Pebble's two HTTPS ports with :func:`wait_listening`
and told apart by which one serves the directory.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.ports import alive, wait_listening
from tests.support.processes import require_binary
from tests.support.tls import self_signed_pem

__all__ = ["Pebble", "acme_site_config", "start_pebble", "udp_ports"]

READY_WITHIN = 20.0
#: The External Account Binding key id the generated config requires every account to bring.
EAB_KID = "kid-fephp-tests"


@dataclass(frozen=True)
class Pebble:
    """A running Pebble: where its directory is, what to trust for its HTTPS, its EAB credentials and issuing root."""

    directory: str
    https_ca_pem: bytes
    eab_kid: str
    eab_hmac_key: bytes
    management: str
    log: Path

    def root_pem(self) -> bytes:
        """The root that issued this Pebble's certificates (it makes a new one at each start), from /roots/0."""
        with urllib.request.urlopen(f"{self.management}/roots/0", context=self.ssl_context(), timeout=10) as r:
            return bytes(r.read())

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting only this Pebble's HTTPS certificate."""
        return ssl.create_default_context(cadata=self.https_ca_pem.decode())


def _https_certificate(folder: Path) -> tuple[Path, Path, bytes]:
    """A CA and a ``localhost`` certificate it signed (key and cert files for Pebble), and the CA's PEM to trust."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fephp tests: Pebble's HTTPS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_path, cert_path = folder / "pebble-key.pem", folder / "pebble-cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path, ca.public_bytes(serialization.Encoding.PEM)


def udp_ports(pid: int) -> list[int]:
    """The UDP ports of 127.0.0.1 that *pid* has bound (its sockets' inodes among /proc/net/udp's rows)."""
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    with open(f"/proc/{pid}/net/udp") as f:
        rows = [row.split() for row in f.read().splitlines()[1:]]
    # local_address is "0100007F:PORT" for 127.0.0.1, the address a little-endian word, the port big-endian hex.
    return [int(r[1].split(":")[1], 16) for r in rows if r[9] in inodes and r[1].startswith("0100007F:")]


def _wait_dns_port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + READY_WITHIN
    while True:
        ports = udp_ports(process.pid)
        if ports:
            return ports[0]
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"pebble-challtestsrv has no DNS port: {log.read_text()}")
        time.sleep(0.02)  # polling an outside process's state, bounded by the deadline


def _directory_port(ports: list[int], ca_pem: bytes) -> int:
    """Which of Pebble's two HTTPS ports serves the ACME directory (the other is its management interface)."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    for port in ports:
        try:
            with urllib.request.urlopen(f"https://localhost:{port}/dir", context=context, timeout=10) as r:
                if r.status == 200:
                    return port
        except urllib.error.HTTPError:
            continue
    raise RuntimeError(f"no Pebble port among {ports} serves /dir")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_pebble(folder: Path, http_port: int, tls_port: int | None = None) -> Generator[Pebble, None, None]:
    """Run pebble-challtestsrv and a Pebble validating HTTP-01 on 127.0.0.1:*http_port* and TLS-ALPN-01 on
    127.0.0.1:*tls_port* (when given; else nothing listens there), until the generator closes.

    Environment: PEBBLE_VA_NOSLEEP=1 (no random wait of up to 15 s before
    each validation), PEBBLE_AUTHZREUSE=0 (every order is validated anew, so
    the responder is exercised each time); nonces are still rejected at
    random (Pebble's default 5 %), which the client must retry.
    """
    pebble = require_binary(shutil.which("pebble"), "pebble (Debian's ACME test server)")
    challtestsrv = require_binary(shutil.which("pebble-challtestsrv"), "pebble-challtestsrv (Debian's pebble package)")
    key_path, cert_path, ca_pem = _https_certificate(folder)
    dns_log = folder / "challtestsrv.log"
    with open(dns_log, "wb") as out:
        dns = subprocess.Popen(
            [challtestsrv, "-dns01", "127.0.0.1:0", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", "127.0.0.1:0", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        dns_port = _wait_dns_port(dns, dns_log)
        hmac_key = os.urandom(32)
        config = {
            "pebble": {
                "listenAddress": "127.0.0.1:0",
                "managementListenAddress": "127.0.0.1:0",
                "certificate": str(cert_path),
                "privateKey": str(key_path),
                "httpPort": http_port,
                # Without a TLS port, TLS-ALPN-01 validations go to the HTTP port and fail its handshake.
                "tlsPort": tls_port if tls_port is not None else http_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": True,
                "externalAccountMACKeys": {EAB_KID: base64.urlsafe_b64encode(hmac_key).decode().rstrip("=")},
            }
        }
        config_path = folder / "pebble-config.json"
        config_path.write_text(json.dumps(config))
        log = folder / "pebble.log"
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0"}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [pebble, "-config", str(config_path), "-dnsserver", f"127.0.0.1:{dns_port}"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True,
            )
        try:
            try:
                ports = [port for _, port in wait_listening(process.pid, count=2, within=READY_WITHIN)]
            except AssertionError as e:
                raise RuntimeError(f"{e}: {log.read_text()}") from None
            acme_port = _directory_port(ports, ca_pem)
            other = next(p for p in ports if p != acme_port)
            yield Pebble(
                directory=f"https://localhost:{acme_port}/dir",
                https_ca_pem=ca_pem,
                eab_kid=EAB_KID,
                eab_hmac_key=hmac_key,
                management=f"https://localhost:{other}",
                log=log,
            )
        finally:
            _stop(process)
            assert not alive(process.pid)
    finally:
        _stop(dns)


def acme_site_config(tmp_path: Path, pebble: Pebble, name: str, challenges: list[str]) -> dict[str, Any]:
    """A configuration, as a dict: one site "shop" for *name* serving root/hello.txt with tls.acme at *pebble*
    answering *challenges* (storage acme/), a plain and an ssl: listener on port 0 (a self-signed fallback), an
    external php-fpm that is not there; all files in *tmp_path*. The caller adds its own server keys."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / "hello.txt").write_text("hello over https\n")
    ca = tmp_path / "pebble-https-ca.pem"
    ca.write_bytes(pebble.https_ca_pem)
    fallback = self_signed_pem(tmp_path)
    hmac_key = base64.urlsafe_b64encode(pebble.eab_hmac_key).decode().rstrip("=")
    return {
        "server": {
            "listen": ["tcp:0:interface=127.0.0.1", f"ssl:0:interface=127.0.0.1:privateKey={fallback}"],
        },
        "php": {"fpm_socket": str(tmp_path / "no-php-fpm.sock")},
        "sites": [{
            "name": "shop", "hosts": [name], "root": str(root),
            "tls": {
                "acme": {
                    "email": "admin@example.test", "directory": pebble.directory, "ca_root": str(ca),
                    "eab": {"kid": pebble.eab_kid, "hmac_key": hmac_key}, "challenges": challenges,
                },
                "storage": str(tmp_path / "acme"),
            },
        }],
    }
