"""The router's php.worker.match: which paths go to the PHP workers, decided on the decoded path before any file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fephp.cgi.routing import (
    Forbidden,
    PHPWorkers,
    Router,
    Script,
    StaticFile,
    under_prefix,
)

#: (id, raw path, expected route kind, expected PHPWorkers uri or None)
CASES: list[tuple[str, bytes, type, str | None]] = [
    ("under-prefix", b"/api/users", PHPWorkers, "/api/users"),
    ("prefix-itself", b"/api/", PHPWorkers, "/api/"),
    ("prefix-without-slash", b"/api", PHPWorkers, "/api"),
    ("an-existing-php-file-still-goes", b"/api/real.php", PHPWorkers, "/api/real.php"),
    ("an-existing-static-file-still-goes", b"/api/logo.png", PHPWorkers, "/api/logo.png"),
    ("decoded-once", b"/%61pi/x", PHPWorkers, "/api/x"),
    ("dot-segments-removed", b"/static/../api/x", PHPWorkers, "/api/x"),
    ("other-prefix-is-not-matched", b"/apix", Script, None),
    ("a-classic-script-stays", b"/legacy.php", Script, None),
    ("a-file-stays", b"/style.css", StaticFile, None),
    ("hidden-is-refused-first", b"/api/.env", Forbidden, None),
    ("denied-is-refused-first", b"/api/private/x", Forbidden, None),
]


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    root = tmp_path_factory.mktemp("root")
    (root / "api").mkdir()
    for name in ("api/real.php", "api/logo.png", "legacy.php", "index.php", "style.css"):
        (root / name).write_text("x")
    return Router(root=str(root), deny=("/api/private/",), worker_match=("/api/",))


@pytest.mark.parametrize(("raw", "kind", "uri"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_worker_match(router: Router, raw: bytes, kind: type, uri: str | None) -> None:
    """A matched path is a PHPWorkers route whatever the files; hidden and denied paths are refused before."""
    route = router.route(raw)
    assert type(route) is kind
    if uri is not None:
        assert route == PHPWorkers(uri)


def test_under_prefix() -> None:
    """A prefix ending in / holds the folder without its slash; one without a slash is a plain string prefix."""
    assert [under_prefix(p, ("/api/",)) for p in ("/api", "/api/", "/api/x", "/apix", "/")] == [True, True, True, False, False]
    assert [under_prefix(p, ("/api",)) for p in ("/api", "/apix", "/ap")] == [True, True, False]


def test_a_prefix_must_start_with_a_slash(tmp_path: Path) -> None:
    """A match prefix without its leading slash is refused when the router is made."""
    with pytest.raises(ValueError, match="worker match prefix must start with /: 'api/'"):
        Router(root=str(tmp_path), worker_match=("api/",))
