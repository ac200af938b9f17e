"""static.memory_cache_size: small static files served from memory, revalidated by mtime and size, bounded in bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fephp.backend.pool import FastCGIPool
from fephp.cgi.routing import Router
from fephp.testing import FakeEndpoint
from fephp.web.app import PHPApp
from fephp.web.site import FrontSite
from fephp.web.static import SMALL_STATIC_FILE, FileCache


def _stat(path: Path) -> os.stat_result:
    return os.stat(path)


def get(root: Path, cache_size: int, path: bytes = b"/a.txt") -> bytes:
    """The response body of GET *path* from a fresh channel of a site over *root*."""
    clock = Clock()
    pool = FastCGIPool(FakeEndpoint(clock), clock=clock, size=1, idle_timeout=None)
    app = _apps.setdefault((str(root), cache_size), PHPApp(router=Router(root=str(root)), backend=pool, memory_cache_size=cache_size))
    site = FrontSite(app, timeout=None, reactor=clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    return transport.value().partition(b"\r\n\r\n")[2]


_apps: dict[tuple[str, int], PHPApp] = {}


def test_a_hit_is_served_without_opening_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second GET of an unchanged file comes from memory: the file is opened once."""
    (tmp_path / "a.txt").write_bytes(b"hello")
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str, *args: int) -> int:
        opened.append(path)
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", counting_open)
    assert get(tmp_path, 1 << 20) == b"hello"
    assert get(tmp_path, 1 << 20) == b"hello"
    assert opened == [str(tmp_path / "a.txt")]


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    """A file whose size or modification time changed is served as it is now, never the cached bytes."""
    target = tmp_path / "a.txt"
    target.write_bytes(b"one")
    assert get(tmp_path, 1 << 20) == b"one"
    target.write_bytes(b"three")
    assert get(tmp_path, 1 << 20) == b"three"
    target.write_bytes(b"four!")  # same size: the modification time tells
    os.utime(target, ns=(1, 1))
    assert get(tmp_path, 1 << 20) == b"four!"


def test_the_cache_is_bounded_in_bytes_and_drops_the_least_recently_used(tmp_path: Path) -> None:
    """Past max_bytes the least recently used file goes; a file above the bound or SMALL_STATIC_FILE is never kept."""
    cache = FileCache(10)
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode() * 4)
    st = {name: _stat(tmp_path / name) for name in "abc"}
    cache.put("a", st["a"], b"aaaa")
    cache.put("b", st["b"], b"bbbb")
    assert cache.get("a", st["a"]) == b"aaaa"  # a is now the most recent
    cache.put("c", st["c"], b"cccc")
    assert (cache.get("b", st["b"]), cache.get("a", st["a"]), cache.get("c", st["c"])) == (None, b"aaaa", b"cccc")
    assert cache.size == 8
    (tmp_path / "big").write_bytes(b"x" * 11)
    cache.put("big", _stat(tmp_path / "big"), b"x" * 11)
    assert cache.get("big", _stat(tmp_path / "big")) is None
    huge = FileCache(1 << 30)
    (tmp_path / "huge").write_bytes(b"x" * (SMALL_STATIC_FILE + 1))
    huge.put("huge", _stat(tmp_path / "huge"), b"x" * (SMALL_STATIC_FILE + 1))
    assert huge.size == 0


def test_size_zero_is_no_cache(tmp_path: Path) -> None:
    """memory_cache_size 0: PHPApp keeps no file cache."""
    app = PHPApp(router=Router(root=str(tmp_path)), backend=FastCGIPool(FakeEndpoint(Clock()), clock=Clock(), size=1), memory_cache_size=0)
    assert app.files is None
