"""A real browser agrees: headless Chromium loads the example app over ssl: from fephp, every request over h2, compressed where it should be."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread

from fephp.backend.endpoints import parse_client_endpoint
from fephp.backend.pool import FastCGIPool
from fephp.server.build import build_site
from fephp.server.config import config_from_dict
from fephp.server.tls import listen_ssl
from fephp.web.compress import compressible
from tests.support import REPO
from tests.support.chromium import Chromium, Load, find_chromium
from tests.support.inprocess import tls_engine
from tests.support.processes import require_binary
from tests.support.tls import self_signed_pem

pytestmark = pytest.mark.php

PUBLIC = REPO / "examples" / "app" / "public"


@pytest.fixture
def example_over_tls(php_fpm, tmp_path: Path) -> Iterator[tuple[int, Any]]:
    """The example app as etc/fephp.yaml serves it (defaults: HTTP/2 and compression on), on an ssl: listener."""
    config = config_from_dict(
        {"server": {"root": str(PUBLIC), "deny": ["/data/", "/conf/"]}, "php": {"fpm_socket": php_fpm.unix_path}},
        base_dir=str(REPO / "etc"),
    )
    pool = FastCGIPool(parse_client_endpoint(reactor, php_fpm.unix_endpoint), clock=reactor, size=4)
    _, site = build_site(config, reactor, pool)
    pem = self_signed_pem(tmp_path)
    description = f"ssl:0:interface=127.0.0.1:privateKey={pem}"
    if tls_engine() == "stdlib":  # FEPHP_TLS_ENGINE
        port = listen_ssl(reactor, description, site)
    else:
        port = pytest_twisted.blockon(serverFromString(reactor, description).listen(site))
    try:
        yield int(port.getHost().port), config
    finally:
        pytest_twisted.blockon(port.stopListening())
        pytest_twisted.blockon(site.close_connections())
        pytest_twisted.blockon(defer.ensureDeferred(pool.close()))


def _load(binary: str, workdir: Path, url: str) -> Load:
    browser = Chromium(binary, workdir)
    try:
        return browser.load(url)
    finally:
        browser.close()


def _should_compress(config: Any, request: Any) -> bool:
    """What fephp's rules say for this response: a compressible type of at least compression.min_size bytes."""
    kind = request.headers.get("content-type", "").encode()
    return compressible(kind, config.compression.types) and request.decoded_length >= config.compression.min_size


@pytest_twisted.ensureDeferred
async def test_chromium_loads_the_example_app_over_h2(example_over_tls, tmp_path):
    """The home page and each asset load over h2 with no failed request; the page and app.js compressed, the small files not."""
    binary = require_binary(find_chromium(), "chromium")
    port, config = example_over_tls
    load = await deferToThread(_load, binary, tmp_path / "chromium", f"https://127.0.0.1:{port}/")
    assert load.load_event
    by_path = {r.url.split(str(port), 1)[1]: r for r in load.requests}
    # The page and every asset it names, nothing else, each answered.
    assert sorted(by_path) == ["/", "/static/app.js", "/static/favicon.svg", "/static/style.css"]
    for path, request in by_path.items():
        assert (path, request.failed, request.finished, request.status, request.protocol) == (path, None, True, 200, "h2")
    # Compressed where it should be (the browser offers gzip, deflate, br,
    # zstd), by fephp's own rules, and never where it should not.
    for path, request in by_path.items():
        assert ("content-encoding" in request.headers, path) == (_should_compress(config, request), path)
    assert by_path["/"].headers["content-encoding"] in ("zstd", "br", "gzip")
    assert by_path["/static/app.js"].headers["content-encoding"] in ("zstd", "br", "gzip")
    assert "content-encoding" not in by_path["/static/style.css"].headers  # 360 bytes: under min_size
    # The compressed bodies crossed smaller than they are.
    for path in ("/", "/static/app.js"):
        assert by_path[path].encoded_length < by_path[path].decoded_length, path
