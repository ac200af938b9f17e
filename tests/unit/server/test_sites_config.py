"""``sites:``: several sites in one configuration, what each inherits from the top level, and each error with its file and line."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from fephp.server.build import managed_pools, site_view
from fephp.server.config import load_config
from fephp.server.listeners import SNIMap
from fephp.server.settings import PHPConfig, SiteConfig, TLSConfig, changed_sections, site_configs
from tests.support.configs import error_for, write
from tests.support.tls import named_certificate

TWO_SITES = """\
server:
  index: [index.php, index.html]
php:
  fpm_socket: 127.0.0.1:9000
  worker_pool_size: 3
sites:
  - hosts: [a.example, www.a.example]
    root: a
  - name: shop
    hosts: ["*.Shop.Example"]
    root: b
    default: true
    deny: [/private]
    php:
      fpm_socket: 127.0.0.1:9001
    access_log: shop.log
"""


@pytest.fixture
def roots(site: Path) -> Path:
    (site / "a").mkdir()
    (site / "b").mkdir()
    return site


def test_sites_inherit_the_top_level_and_override_it(roots: Path) -> None:
    """Each site has its hosts lowercased, its own root, and the top-level keys it does not give (index, php)."""
    config = load_config(str(write(roots, TWO_SITES)))
    a, shop = config.sites
    assert a == SiteConfig(
        name="a.example", hosts=("a.example", "www.a.example"), default=False, root=str(roots / "a"),
        index=("index.php", "index.html"), php=config.php, static=config.static, compression=config.compression,
    )
    assert shop.name == "shop"
    assert shop.hosts == ("*.shop.example",)
    assert shop.default is True
    assert shop.deny == ("/private",)
    assert shop.access_log == str(roots / "shop.log")
    assert shop.php == PHPConfig(fpm_socket="127.0.0.1:9001", worker_pool_size=3)
    assert site_configs(config) == config.sites
    assert config.server.root == ""


def test_without_sites_the_top_level_is_one_default_site(site: Path) -> None:
    """A configuration without sites: is one default site made of its top-level keys, as before."""
    config = load_config(str(write(site, "php:\n  fpm_socket: 127.0.0.1:9000\n")))
    assert config.sites == ()
    (only,) = site_configs(config)
    assert (only.name, only.hosts, only.default, only.root, only.php) == (
        "default", (), True, str(site / "public"), config.php
    )
    assert site_view(config, only) == config


def test_managed_pools_per_site(roots: Path) -> None:
    """Each site of the managed mode gets a pool with its own size, php.ini values and user; the first one the admin's spare child."""
    config = load_config(str(write(roots, """\
admin:
  listen: ["tcp:0:interface=127.0.0.1"]
php:
  worker_pool_size: 2
sites:
  - hosts: [a.example]
    root: a
    php:
      ini: {memory_limit: 64M}
      user: www-data
      group: www-data
  - hosts: [b.example]
    root: b
    php:
      worker_pool_size: 5
      ini: {memory_limit: 32M}
  - hosts: [c.example]
    root: b
    php:
      fpm_socket: 127.0.0.1:9000
""")))
    pools = managed_pools(config)
    assert [(p.site, p.children, dict(p.ini), p.user, p.group) for p in pools] == [
        ("a.example", 3, {"memory_limit": "64M"}, "www-data", "www-data"),
        ("b.example", 5, {"memory_limit": "32M"}, None, None),
    ]
    assert config.sites[0].php.ini == MappingProxyType({"memory_limit": "64M"})


def test_site_tls_is_read(roots: Path) -> None:
    """A site's tls names its certificate and key files, resolved beside the configuration."""
    named_certificate(roots, "a.example")
    config = load_config(str(write(roots, TWO_SITES.replace(
        "    root: a\n", "    root: a\n    tls:\n      certificate: a.example.crt\n      key: a.example.key\n"
    ))))
    assert config.sites[0].tls == TLSConfig(str(roots / "a.example.crt"), str(roots / "a.example.key"))


def test_changed_sections_names_sites(roots: Path) -> None:
    """A reload that changes only a site says that sites changed."""
    old = load_config(str(write(roots, TWO_SITES)))
    new = load_config(str(write(roots, TWO_SITES.replace("deny: [/private]", "deny: [/secret]"))))
    assert changed_sections(old, new) == ["sites"]


@pytest.mark.parametrize(
    ("sites", "line", "message"),
    [
        ("sites: []\n", 1, "sites: must name at least one site (or leave sites out for one site of the top-level keys)"),
        ("sites: a.example\n", 1, "sites: must be a list of sites (each with hosts or default: true), not the string 'a.example'"),
        ("sites:\n  - root: a\n", 2,
         "sites[0]: names no hosts: give hosts, or default: true for the site of unknown hosts"),
        ("sites:\n  - hosts: [a.example]\n", 2, "sites[0]: has no root (sites[].root, or server.root for every site)"),
        ("sites:\n  - hosts: [a.example]\n    root: nowhere\n", 3,
         "sites[0].root: the document root {base}/nowhere does not exist"),
        ("sites:\n  - hosts: [a.example]\n    root: a\n    roots: b\n", 4,
         "sites[0].roots: unknown key; did you mean 'root'?"),
        ("sites:\n  - hosts: ['a.example:8080']\n    root: a\n", 2,
         "sites[0].hosts[0]: must be a host name like example.com or *.example.com (no port, no path), not 'a.example:8080'"),
        ("sites:\n  - hosts: [a.example]\n    root: a\n  - hosts: [b.example, A.example]\n    root: b\n", 4,
         "sites[1].hosts[1]: 'a.example' is a host of sites[0] already"),
        ("sites:\n  - default: true\n    root: a\n  - hosts: [b.example]\n    root: b\n    default: true\n", 6,
         "sites[1].default: sites[0] is the default site already"),
        ("sites:\n  - hosts: [a.example]\n    name: x\n    root: a\n  - hosts: [b.example]\n    name: x\n    root: b\n", 6,
         "sites[1].name: 'x' is the name of sites[0] already"),
        ("sites:\n  - hosts: [a.example]\n    root: a\n    php:\n      fpm_socket: 127.0.0.1:9000\n      user: www-data\n", 6,
         "sites[0].php.user: applies to the managed php-fpm only (no php.fpm_socket or php.backends)"),
        ("sites:\n  - hosts: [a.example]\n    root: a\n    php:\n      fpm_socket: 127.0.0.1:9000\n      queue_size: -1\n", 6,
         "sites[0].php.queue_size: must be at least 0, not -1"),
        ("sites:\n  - hosts: [a.example]\n    root: a\n    tls:\n      certificate: afile\n", 4,
         "sites[0].tls: needs key (a PEM file)"),
        ("sites:\n  - hosts: [a.example]\n    root: a\n    tls:\n      certificate: afile\n      key: afile\n", 4,
         "sites[0].tls: cannot use this certificate and key: {base}/afile holds no PEM certificate"),
        ("server:\n  unknown_host: 403\nsites:\n  - default: true\n    root: a\n", 2,
         "server.unknown_host: must be 404 or 421, not the number 403"),
    ],
)
def test_site_errors_name_file_key_and_line(roots: Path, sites: str, line: int, message: str) -> None:
    """A bad site is refused with the file, the line and the dotted key of the problem."""
    path = roots / "fephp.yaml"
    assert error_for(roots, sites) == f"{path}, line {line}: " + message.format(base=roots)


def test_sni_map_takes_obtained_certificates(roots: Path) -> None:
    """A certificate obtained for a site (ACME's, by site name) stands in for the site's own tls, or its lack."""
    config = load_config(str(write(roots, TWO_SITES)))
    cert, key = named_certificate(roots, "shop.example")
    assert not SNIMap(config.sites, [b"http/1.1"])
    sni = SNIMap(config.sites, [b"http/1.1"], obtained={"shop": TLSConfig(str(cert), str(key))})
    shop_context = sni.contexts.find(b"x.shop.example")
    assert shop_context is not None
    assert (sni.contexts.find(b"a.example"), sni.contexts.default) == (shop_context, shop_context)  # shop is the default


def test_sites_rules_are_their_own_or_the_top_levels(roots: Path) -> None:
    """A site's rules are its own; a site without rules has the top-level ones; a bad one is named with its line."""
    text = TWO_SITES.replace("server:\n", "rules:\n  - match: {path: /top}\n    respond: {status: 204}\nserver:\n")
    text = text.replace("    access_log: shop.log\n", "    access_log: shop.log\n    rules:\n      - match: {path: /own}\n        respond: {status: 200}\n")
    config = load_config(str(write(roots, text)))
    a, shop = config.sites
    assert (a.rules, len(shop.rules)) == (config.rules, 1)
    assert shop.rules != config.rules
    bad = text.replace("respond: {status: 200}", "respond: {status: 99}")
    assert error_for(roots, bad) == (
        f"{roots / 'fephp.yaml'}, line 22: sites[1].rules[0].respond.status: must be at least 200, not 99"
    )
