"""fephp check-config: the OK line and summary, or the one error line."""

from __future__ import annotations

import io
from pathlib import Path

from fephp.server.check import check_config_main
from fephp.web.compress import AVAILABLE, CODINGS
from tests.support.configs import EXTERNAL, write


#: What the summary adds where a default coding has no build (zstd on PyPy 3.9).
_MISSING = "".join(
    f" ({', '.join(m)} not available on this Python)" for m in [[c for c in CODINGS if c not in AVAILABLE]] if m
)


def test_check_config_ok(site: Path) -> None:
    """check_config_main prints OK, the file and a summary, and returns 0."""
    path = write(site, EXTERNAL)
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(path), out=out, err=err) == 0
    assert out.getvalue() == (
        f"OK: {path}\n"
        "  listen: tcp:8080:interface=127.0.0.1\n"
        f"  root: {site / 'public'}\n"
        "  php: php-fpm at 127.0.0.1:9000, up to 16 connections\n"
        "  access log: off\n"
        f"  compression: {', '.join(AVAILABLE)} from 512 bytes{_MISSING}\n"
    )
    assert err.getvalue() == ""


def test_check_config_error(site: Path) -> None:
    """check_config_main prints the one-line error to err and returns 1."""
    path = write(site, "php:\n  fpm_socket: 127.0.0.1:9000\n  worker_pool_size: many\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(path), out=out, err=err) == 1
    assert out.getvalue() == ""
    assert err.getvalue() == f"error: {path}, line 3: php.worker_pool_size: must be an integer, not the string 'many'\n"


def test_check_config_names_workers(site: Path) -> None:
    """check-config's summary says how many worker processes share the listeners."""
    out = io.StringIO()
    assert check_config_main(str(write(site, "server:\n  workers: 4\n" + EXTERNAL)), out=out, err=io.StringIO()) == 0
    assert "  workers: 4 processes sharing the listeners\n" in out.getvalue()


def test_check_config_names_every_backend(site: Path) -> None:
    """With several php-fpm backends the summary names each, its weight and connections, and the affinity cookie."""
    text = (
        "php:\n  session_affinity: true\n  backends:\n"
        "    - {address: 10.0.0.2:9000, pool_size: 4}\n    - {address: 10.0.0.3:9000, weight: 2, pool_size: 8, drain: true}\n"
    )
    out = io.StringIO()
    assert check_config_main(str(write(site, text)), out=out, err=io.StringIO()) == 0
    assert (
        "  php: 2 php-fpm backends: 10.0.0.2:9000 (weight 1, 4 connections), 10.0.0.3:9000 (weight 2, 8 connections, drains);"
        " sessions kept by cookie PHPSESSID\n"
    ) in out.getvalue()


def test_check_config_names_compression(site: Path) -> None:
    """check-config's summary says which codings are offered, or that compression is off."""
    out = io.StringIO()
    assert check_config_main(str(write(site, "compression:\n  enabled: false\n" + EXTERNAL)), out=out, err=io.StringIO()) == 0
    assert out.getvalue().endswith("  compression: off\n")
    out = io.StringIO()
    text = "compression:\n  algorithms: [gzip]\n  min_size: 1k\n" + EXTERNAL
    assert check_config_main(str(write(site, text)), out=out, err=io.StringIO()) == 0
    assert out.getvalue().endswith("  compression: gzip from 1024 bytes\n")


def test_check_config_names_http2_and_trusted_proxies(site: Path) -> None:
    """With an ssl: listener the summary says whether HTTP/2 is offered; trusted proxies are listed with their header."""
    from tests.support.tls import self_signed_pem

    pem = self_signed_pem(site)
    text = f"server:\n  listen: ['ssl:8443:privateKey={pem}']\n  trusted_proxies: [10.0.0.0/8, 'unix:']\n" + EXTERNAL
    out = io.StringIO()
    assert check_config_main(str(write(site, text)), out=out, err=io.StringIO()) == 0
    assert "  http2: offered on the ssl: listeners\n  trusted proxies: 10.0.0.0/8, unix: (X-Forwarded-For)\n" in out.getvalue()
    out = io.StringIO()
    off = f"server:\n  listen: ['ssl:8443:privateKey={pem}']\n  http2: false\n" + EXTERNAL
    assert check_config_main(str(write(site, off)), out=out, err=io.StringIO()) == 0
    assert "  http2: off (HTTP/1.1 only)\n" in out.getvalue() and "trusted proxies" not in out.getvalue()
