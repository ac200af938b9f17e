"""``sites[].tls.acme`` and ``tls.storage``: what a site asking for automatic HTTPS reads as, and each error with its
file, key and line."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from fephp.acme import Storage
from fephp.server.acme import acme_findings, acme_sites, storage_folder
from fephp.server.doctor import Finding
from fephp.server.config import load_config
from fephp.server.settings import LETS_ENCRYPT, AcmeConfig, ConfigError, TLSConfig
from tests.support.acme_fakes import JAN_1, issued
from tests.support.configs import write
from tests.support.tls import self_signed_pem

SHOP = """\
php:
  fpm_socket: 127.0.0.1:9000
sites:
  - hosts: [shop.example, www.shop.example]
    root: public
    tls:
      acme:
        email: admin@shop.example
{more}"""


def test_the_defaults_are_lets_encrypt_ecdsa_both_challenges_and_a_redirect(site: Path) -> None:
    """Only an email: Let's Encrypt's production directory, P-256, http-01 then tls-alpn-01, redirect on, storage
    acme/ beside the config, the certificate files in the name set's folder under the directory's."""
    config = load_config(str(write(site, SHOP.format(more=""))))
    tls = config.sites[0].tls
    folder = storage_folder(str(site / "acme"), LETS_ENCRYPT)
    assert folder == site / "acme" / "acme-v02.api.letsencrypt.org_directory"
    stored = Storage(folder).folder_for(["shop.example", "www.shop.example"])
    assert tls == TLSConfig(
        certificate=str(stored / "chain.pem"), key=str(stored / "key.pem"),
        acme=AcmeConfig(email="admin@shop.example"), storage=str(site / "acme"),
    )
    assert AcmeConfig().challenges == ("http-01", "tls-alpn-01")
    [acme_site] = acme_sites(config.sites)
    assert (acme_site.name, acme_site.hosts, acme_site.storage) == (
        "shop.example", ("shop.example", "www.shop.example"), str(site / "acme"))


def test_every_key_is_read(site: Path) -> None:
    """directory, eab (hmac_key decoded from base64url), key_type, challenges, redirect, ca_root, storage."""
    more = """\
        directory: https://ca.internal/acme/directory
        eab: {kid: kid-1, hmac_key: c2VjcmV0LXNlY3JldC1zZWNyZXQ}
        key_type: rsa-2048
        challenges: [tls-alpn-01]
        redirect: false
        ca_root: afile
      storage: state
"""
    tls = load_config(str(write(site, SHOP.format(more=more)))).sites[0].tls
    assert tls is not None and tls.acme == AcmeConfig(
        email="admin@shop.example", directory="https://ca.internal/acme/directory", eab_kid="kid-1",
        eab_hmac_key=b"secret-secret-secret", key_type="rsa-2048", challenges=("tls-alpn-01",), redirect=False,
        ca_root=str(site / "afile"),
    )
    assert (tls.storage, Path(tls.certificate).is_relative_to(site / "state" / "ca.internal_acme_directory")) == (
        str(site / "state"), True)


@pytest.mark.parametrize(
    ("more", "line", "message"),
    [
        ("        directory: http://ca.example/dir\n", 9,
         "sites[0].tls.acme.directory: must be an https:// URL (RFC 8555 6.1), not 'http://ca.example/dir'"),
        ("        key_type: ed25519\n", 9,
         "sites[0].tls.acme.key_type: must be ecdsa-p256 or rsa-2048, not the string 'ed25519'"),
        ("        challenges: [dns-01]\n", 9,
         "sites[0].tls.acme.challenges[0]: must be http-01 or tls-alpn-01 (dns-01 is not answered), not 'dns-01'"),
        ("        eab: {kid: k}\n", 9, "sites[0].tls.acme.eab: needs hmac_key (as the CA gave it)"),
        ("        eab: {kid: k, hmac_key: 'not base64!'}\n", 9,
         "sites[0].tls.acme.eab.hmac_key: must be the CA's HMAC key in base64url (16 bytes or more)"),
        ("        emial: x\n", 9, "sites[0].tls.acme.emial: unknown key; did you mean 'email'?"),
        ("      certificate: afile\n", 9, "sites[0].tls.certificate: cannot be given with acme, which stores its own"
         " certificate"),
    ],
    ids=["http-directory", "key-type", "dns-01", "eab-no-key", "eab-not-base64", "typo", "certificate-too"],
)
def test_acme_errors_name_file_key_and_line(site: Path, more: str, line: int, message: str) -> None:
    """A bad tls.acme is refused with the file, the line and the dotted key of the problem."""
    with pytest.raises(ConfigError) as raised:
        load_config(str(write(site, SHOP.format(more=more))))
    assert str(raised.value) == f"{site / 'fephp.yaml'}, line {line}: {message}"


def test_a_wildcard_host_and_on_demand_with_several_workers_are_refused(site: Path) -> None:
    """A wildcard needs DNS-01 (refused at tls.acme's line); several workers take tls.acme (the parent orders) but not
    on_demand (refused at its line)."""
    wildcard = SHOP.format(more="").replace("[shop.example, www.shop.example]", "['*.shop.example']")
    with pytest.raises(ConfigError) as raised:
        load_config(str(write(site, wildcard)))
    assert str(raised.value) == (
        f"{site / 'fephp.yaml'}, line 7: sites[0].tls.acme: cannot obtain '*.shop.example': a wildcard needs DNS-01,"
        " which fephp does not answer; name the hosts one by one, or obtain each name on demand (on_demand)")
    config = load_config(str(write(site, "server:\n  workers: 2\n" + SHOP.format(more=""))))
    tls = config.sites[0].tls
    assert (config.server.workers, tls is not None and tls.acme) == (2, AcmeConfig(email="admin@shop.example"))
    on_demand = "        on_demand: {ask: 'http://127.0.0.1:9/ok'}\n"
    with pytest.raises(ConfigError) as raised:
        load_config(str(write(site, "server:\n  workers: 2\n" + SHOP.format(more=on_demand).replace(
            "[shop.example, www.shop.example]", "['*.shop.example']"))))
    assert str(raised.value) == (
        f"{site / 'fephp.yaml'}, line 11: sites[0].tls.acme.on_demand: needs server.workers: 1 (names obtained at a"
        " handshake are not handed from 2 workers to the parent)")


def test_the_probe_says_which_challenges_reach_the_listeners_and_what_is_stored(site: Path) -> None:
    """http-01 needs a plain listener on 80, tls-alpn-01 an ssl: one on 443 (pyOpenSSL); the stored certificate's
    expiry and due time are told; nothing reachable is a problem."""
    fallback = self_signed_pem(site)
    # tls-alpn-01 needs Twisted's TLS (server.tls_engine pyopenssl; the default, stdlib, cannot answer it).
    listen = f"server:\n  tls_engine: pyopenssl\n  listen: ['tcp:80', 'ssl:8443:privateKey={fallback}']\n"
    config = load_config(str(write(site, listen + SHOP.format(more=""))))
    assert acme_findings(config, JAN_1) == [
        Finding(False, f"site shop.example: ACME at {LETS_ENCRYPT}: the CA can reach fephp by http-01; not by"
                " tls-alpn-01: no ssl: listener on port 443 ([8443]); forward port 443 to it or answer another"
                " challenge"),
        Finding(False, "site shop.example: no certificate stored yet: obtained at the first start"),
    ]
    old = issued(["shop.example", "www.shop.example"], JAN_1)
    Storage(storage_folder(str(site / "acme"), LETS_ENCRYPT)).save(old.names, old.key_pem, old.chain_pem)
    only_alpn = "        challenges: [tls-alpn-01]\n"
    config = load_config(str(write(site, "server:\n  tls_engine: pyopenssl\n  listen: ['tcp:8080']\n"
                                   + SHOP.format(more=only_alpn))))
    assert acme_findings(config, JAN_1 + datetime.timedelta(days=10)) == [
        Finding(True, f"site shop.example: ACME at {LETS_ENCRYPT}: no challenge can reach fephp (tls-alpn-01: no"
                " ssl: listener; forward port 443 to it or answer another challenge)"),
        Finding(False, "site shop.example: certificate stored, valid until 2026-04-01T00:00:00+00:00 (80.0 days),"
                " renewal due from 2026-02-27T00:00:00+00:00 to 2026-03-02T00:00:00+00:00 (the CA's renewal window"
                " first, if it offers one)"),
    ]


def test_on_demand_allows_wildcards_and_reads_its_ask_url_and_rate(site: Path) -> None:
    """on_demand: ask, rate, period read; the wildcard accepted; no ask is an error at its line."""
    wildcard = SHOP.replace("[shop.example, www.shop.example]", "['*.shop.example', shop.example]")
    more = "        on_demand: {ask: 'http://127.0.0.1:9/ok', rate: 5, period: 60}\n"
    tls = load_config(str(write(site, wildcard.format(more=more)))).sites[0].tls
    assert tls is not None and tls.acme is not None
    acme = tls.acme
    assert (acme.on_demand_ask, acme.on_demand_rate, acme.on_demand_period) == ("http://127.0.0.1:9/ok", 5, 60.0)
    with pytest.raises(ConfigError) as raised:
        load_config(str(write(site, wildcard.format(more="        on_demand: {rate: 5}\n"))))
    assert str(raised.value) == (
        f"{site / 'fephp.yaml'}, line 9: sites[0].tls.acme.on_demand: needs ask: the URL that approves each name"
        " (GET <ask>?domain=<name> answering 200)")
