"""Caching headers of static files: the rule for a path, and the headers each kind of rule sets."""

from __future__ import annotations

import time
from typing import Optional, Union

import pytest
from twisted.web.http import stringToDatetime

from fephp.web import static
from fephp.web.static import CacheHeaders, CacheRule

RULES = (
    CacheRule("/static/", "public, max-age=31536000, immutable"),
    CacheRule("/static/live/", expires=-1),
    CacheRule("/", expires=3600),
)


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/root/static/app.js", "/static/"),
        ("/root/static/live/feed.json", "/static/live/"),  # the longest prefix wins
        ("/root/index.html", "/"),
        ("/root/staticx/a.css", "/"),
    ],
)
def test_rule_for_path(path: str, prefix: str) -> None:
    """A file's rule is the one of the longest prefix its URL path starts with."""
    rule = CacheHeaders(RULES, "/root").rule_for(path)
    assert rule is not None and rule.prefix == prefix


def test_no_rule() -> None:
    """A path under no prefix gets no rule."""
    assert CacheHeaders((CacheRule("/assets/", expires=60),), "/root").rule_for("/root/a/b.css") is None


@pytest.mark.parametrize(
    ("control", "expires", "want_control", "want_expires"),
    [
        ("public, immutable", None, b"public, immutable", None),
        (None, 3600, b"max-age=3600", 3600),
        (None, -1, b"no-cache", -1),
        ("public", 60, b"public", 60),  # a written Cache-Control wins over the derived one
        (None, "max", b"max-age=315360000", b"Thu, 31 Dec 2037 23:55:55 GMT"),
        (None, "epoch", b"no-cache", b"Thu, 01 Jan 1970 00:00:01 GMT"),
    ],
)
def test_headers(control: Optional[str], expires: Union[int, str, None], want_control: bytes, want_expires: Union[int, bytes, None]) -> None:
    """Each rule sets Cache-Control and Expires as nginx's expires (and add_header) would."""
    headers: list[tuple[bytes, bytes]] = []
    before = int(time.time())
    CacheHeaders((CacheRule("/", control, expires),), "/root").apply(headers, "/root/x.css")
    assert [v for n, v in headers if n == b"cache-control"] == [want_control]
    got = [v for n, v in headers if n == b"expires"] or None
    if want_expires is None:
        assert got is None
    elif isinstance(want_expires, bytes):
        assert got == [want_expires]
    else:
        assert got is not None
        assert before + want_expires <= stringToDatetime(got[0]) <= int(time.time()) + want_expires


def test_validators_are_formatted_once_per_time_and_size_in_a_bounded_table() -> None:
    """A file's ETag and Last-Modified come from one table entry per (mtime, size), which starts over when full."""
    static._validators.clear()
    first = static._validators_of(1_700_000_000, 1024)
    assert first == (b'"6553f100-400"', b"Tue, 14 Nov 2023 22:13:20 GMT")
    assert static._validators_of(1_700_000_000, 1024) is first
    for size in range(static.VALIDATORS_KEPT - 1):
        static._validators_of(0, size)
    assert len(static._validators) == static.VALIDATORS_KEPT
    static._validators_of(1, 1)
    assert static._validators == {(1, 1): (b'"1-1"', b"Thu, 01 Jan 1970 00:00:01 GMT")}
    static._validators.clear()
