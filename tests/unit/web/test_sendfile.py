"""X-Sendfile and X-Accel-Redirect values resolved against the roots: what is served and what is refused, and why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fephp.cgi.routing import StaticFile
from fephp.web.sendfile import Refused, SendfileRoot, SendfileRoots


@pytest.fixture
def roots(tmp_path: Path) -> tuple[SendfileRoots, Path]:
    base = Path(os.path.realpath(tmp_path))
    files = base / "files"
    (files / "sub").mkdir(parents=True)
    (files / "a.pdf").write_bytes(b"a")
    (files / "sub" / "b.txt").write_bytes(b"b")
    (files / "x.phtml").write_bytes(b"<?php")
    (base / "secret.txt").write_bytes(b"secret")
    (files / "out").symlink_to(base / "secret.txt")
    (files / "in").symlink_to(files / "a.pdf")
    return SendfileRoots((SendfileRoot(str(files), "/protected/"),)), files


@pytest.mark.parametrize(
    ("header", "value", "served"),
    [
        (b"x-sendfile", b"{files}/a.pdf", "a.pdf"),
        (b"x-sendfile", b"{files}//sub/b.txt", "sub/b.txt"),
        (b"x-sendfile", b"{files}/in", "a.pdf"),  # a symlink inside is followed
        (b"x-accel-redirect", b"/protected/sub/b.txt", "sub/b.txt"),
        (b"x-accel-redirect", b"/protected/a.pdf?download=1", "a.pdf"),  # the query is not a file's
    ],
)
def test_served(roots, header: bytes, value: bytes, served: str) -> None:
    """A value naming a regular file under a root resolves to it (symlinks resolved)."""
    resolver, files = roots
    found = resolver.resolve(header, value.replace(b"{files}", str(files).encode()))
    assert isinstance(found, StaticFile) and found.path == str(files / served)


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        (b"x-sendfile", b"{files}/../secret.txt", "dot segment"),
        (b"x-sendfile", b"{files}/out", "resolves outside the roots"),
        (b"x-sendfile", b"{files}/a.pdf\x00.txt", "control byte in path"),
        (b"x-sendfile", b"{files}/x.phtml", "PHP source is never sent"),
        (b"x-sendfile", b"{files}/.git/config", "hidden segment"),
        (b"x-sendfile", b"{files}", "X-Sendfile path under no root"),
        (b"x-sendfile", b"{files}/", "names a root itself"),
        (b"x-sendfile", b"{files}x/a.pdf", "X-Sendfile path under no root"),
        (b"x-sendfile", b"a.pdf", "X-Sendfile path is not absolute"),
        (b"x-sendfile", b"{files}/nothere", "no such file"),
        (b"x-sendfile", b"{files}/sub", "not a regular file"),
        (b"x-sendfile", b"{files}/\xff", "not UTF-8"),
        (b"x-accel-redirect", b"/protected/../secret.txt", "dot segment"),
        (b"x-accel-redirect", b"/elsewhere/a.pdf", "X-Accel-Redirect under no root's URI prefix"),
        (b"x-accel-redirect", b"/protected/out", "resolves outside the roots"),
    ],
)
def test_refused(roots, header: bytes, value: bytes, reason: str) -> None:
    """Escapes, PHP source, hidden names, NUL and missing files are refused with a reason for the log."""
    resolver, files = roots
    assert resolver.resolve(header, value.replace(b"{files}", str(files).encode())) == Refused(reason)


def test_request_headers() -> None:
    """PHP is told X-Accel-Redirect and the mapping when a root has a URI, else X-Sendfile."""
    mapped = SendfileRoots((SendfileRoot("/srv/a", "/a/"), SendfileRoot("/srv/b")))
    assert mapped.request_headers() == [(b"X-Sendfile-Type", b"X-Accel-Redirect"), (b"X-Accel-Mapping", b"/srv/a/=/a/")]
    assert SendfileRoots((SendfileRoot("/srv/b"),)).request_headers() == [(b"X-Sendfile-Type", b"X-Sendfile")]
