"""A static file's 206 and 304 through a real front carry the caching headers its 200 carries (RFC 9110 15.3.7, 15.4.5): the example app's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.http import stringToDatetime

from tests.support.example_app import APP, STATIC_MAX_AGE, example_config
from tests.support.inprocess import InProcessFront, pool
from tests.support.rawhttp import Response

pytestmark = pytest.mark.php


@pytest.fixture
def front(php_fpm: Any, tmp_path: Path) -> Iterator[InProcessFront]:
    """The example app as etc/fephp.yaml serves it (compression on), static files with Cache-Control and Expires."""
    configured = InProcessFront.configured(example_config(tmp_path), pool(php_fpm.unix_endpoint))
    f = pytest_twisted.blockon(defer.ensureDeferred(configured.start()))
    yield f
    pytest_twisted.blockon(defer.ensureDeferred(f.stop()))


def caching(r: Response) -> dict[str, Optional[str]]:
    """The fields RFC 9110 15.3.7 and 15.4.5 name (Date present, Expires as its distance from Date), and Content-Encoding."""
    date = r.header("date")
    expires = r.header("expires")
    assert date is not None and expires is not None, r.fields
    ahead = stringToDatetime(expires.encode()) - stringToDatetime(date.encode())
    # Date is stamped when the request arrives, Expires when the file is
    # served: both in whole seconds, so a second may begin between them.
    assert ahead in (STATIC_MAX_AGE, STATIC_MAX_AGE + 1), (date, expires)
    return {
        "date": "present",
        "expires": "date + max-age",
        "cache-control": r.header("cache-control"),
        "content-location": r.header("content-location"),
        "etag": r.header("etag"),
        "vary": r.header("vary"),
        "content-encoding": r.header("content-encoding"),
    }


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("accept", ["", "gzip"], ids=["identity", "gzip"])
@pytest.mark.parametrize("name, compressible", [("app.js", True), ("logo.png", False)])
async def test_206_and_304_repeat_the_200s_caching_headers(front: InProcessFront, name: str, compressible: bool, accept: str) -> None:
    """The 200, the 206 of bytes 0-9 and the 304 of a compressible and of an uncompressible file carry the same Cache-Control, Expires, ETag and Vary."""
    data = (APP / "public" / "static" / name).read_bytes()
    path = "/static/" + name
    headers = {"Accept-Encoding": accept} if accept else {}
    full = await front.get(path, headers)
    part = await front.get(path, {**headers, "Range": "bytes=0-9"})
    etag = full.header("etag")
    assert etag is not None
    cached = await front.get(path, {**headers, "If-None-Match": etag})
    assert (full.status, part.status, cached.status) == (200, 206, 304)
    assert (part.body, cached.body) == (data[:10], b"")
    gzipped = compressible and accept == "gzip"
    strong = await front.get(path)  # the identity file's own, strong ETag
    assert etag == ("W/" + (strong.header("etag") or "") if gzipped else strong.header("etag"))
    common = {
        "date": "present",
        "expires": "date + max-age",
        "cache-control": "max-age=%d" % STATIC_MAX_AGE,
        "content-location": None,
        "vary": "Accept-Encoding" if compressible else None,
    }
    assert caching(full) == {**common, "etag": etag, "content-encoding": "gzip" if gzipped else None}
    # The 206's bytes are the identity file's: its ETag is that file's strong one.
    assert caching(part) == {**common, "etag": strong.header("etag"), "content-encoding": None}
    assert caching(cached) == {**common, "etag": etag, "content-encoding": None}
