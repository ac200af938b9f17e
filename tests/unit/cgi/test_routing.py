"""Routing: URL path -> static file, script with PATH_INFO, redirect, 403 or 404, on a real tree."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fephp.cgi.routing import (
    BadRequest,
    Forbidden,
    NotFound,
    Redirect,
    Route,
    Router,
    Script,
    StaticFile,
)

FILES = [
    "index.php",
    "hello.txt",
    "a b.txt",
    "ünï.txt",
    "back\\slash.txt",
    "%2e%2e",
    "X.PHP",
    "old.phtml",
    "x\uff0ephp",  # fullwidth full stop: a look-alike of "x.php"
    "x.\u0440h\u0440",  # "рhр" with Cyrillic er: a look-alike of "x.php"
    ".env",
    ".htaccess",
    ".git/config",
    ".well-known/security.txt",
    ".well-known/acme-challenge/token",
    "sub/.svn/entries",
    "sub/page.txt",
    "uploads/image.jpg",
    "lib/exe/fetch.php",
    "withphp/index.php",
    "withhtml/index.html",
    "both/index.html",
    "both/index.php",
    "noindex/readme.txt",
    "data/pages/start.txt",
    "conf/local.php",
    "dir.php/inner.php",
    "dir.php/index.php",
]
OUTSIDE = ["secret.txt", "dir/page.txt", "dir/app.php"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A document root with the usual suspects, and symlinks inside it pointing outside it."""
    base = tmp_path_factory.mktemp("routing")
    docroot, outside = base / "www", base / "outside"
    for tree, names in ((docroot, FILES), (outside, OUTSIDE)):
        for name in names:
            path = tree / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)
    (docroot / "empty").mkdir()
    (docroot / "linked.txt").symlink_to(outside / "secret.txt")
    (docroot / "linkdir").symlink_to(outside / "dir")
    (docroot / "dangling.txt").symlink_to(outside / "missing.txt")
    (docroot / "dangling.php").symlink_to(outside / "missing.php")
    os.mkfifo(docroot / "pipe")
    return str(docroot)


def at(root: str, expected: Route) -> Route:
    """*expected* with the placeholder "ROOT" at the start of filesystem paths replaced by *root*."""
    changes = {
        f.name: root + getattr(expected, f.name)[4:]
        for f in dataclasses.fields(expected)
        if isinstance(getattr(expected, f.name), str) and getattr(expected, f.name).startswith("ROOT")
    }
    return dataclasses.replace(expected, **changes)


def script(path: str, path_info: str = "", document_uri: str | None = None) -> Script:
    return Script("ROOT" + path, path, path_info, document_uri or path)


FRONT = script("/index.php")
ABOVE = BadRequest("dot segments climb above the root")
HIDDEN = Forbidden("hidden segment")
NO_SCRIPT = NotFound("no such script")

# (id, raw path, route with index.php then index.html, front controller /index.php, /data/ and /conf/ denied)
CASES: list[tuple[str, bytes, Route]] = [
    # Static files and scripts.
    ("root", b"/", script("/index.php")),
    ("static", b"/hello.txt", StaticFile("ROOT/hello.txt")),
    ("static-encoded-space", b"/a%20b.txt", StaticFile("ROOT/a b.txt")),
    ("static-utf8", b"/%C3%BCn%C3%AF.txt", StaticFile("ROOT/ünï.txt")),
    ("static-raw-utf8", "/ünï.txt".encode(), StaticFile("ROOT/ünï.txt")),
    ("static-double-slash", b"//sub///page.txt", StaticFile("ROOT/sub/page.txt")),
    ("static-backslash-is-a-character", b"/back%5Cslash.txt", StaticFile("ROOT/back\\slash.txt")),
    ("decoded-once-only", b"/%252e%252e", StaticFile("ROOT/%2e%2e")),
    ("symlinked-file-followed", b"/linked.txt", StaticFile("ROOT/linked.txt")),
    ("symlinked-dir-followed", b"/linkdir/page.txt", StaticFile("ROOT/linkdir/page.txt")),
    ("script-in-symlinked-dir", b"/linkdir/app.php", script("/linkdir/app.php")),
    ("script", b"/index.php", script("/index.php")),
    ("script-path-info", b"/lib/exe/fetch.php/x.png", script("/lib/exe/fetch.php", "/x.png")),
    ("script-path-info-deep", b"/index.php/a/b%20c/", script("/index.php", "/a/b c/")),
    ("script-path-info-slash", b"/index.php/", script("/index.php", "/")),
    ("script-path-info-collapsed", b"/index.php//a//b", script("/index.php", "/a/b")),
    ("script-path-info-with-php", b"/index.php/other.php", script("/index.php", "/other.php")),
    ("php-dir-is-not-a-script", b"/dir.php/inner.php", script("/dir.php/inner.php")),
    ("php-dir-without-slash", b"/dir.php", Redirect("/dir.php/")),
    ("php-dir-index", b"/dir.php/", script("/dir.php/index.php")),
    ("missing-script", b"/missing.php", NO_SCRIPT),
    ("missing-script-path-info", b"/missing.php/x", NO_SCRIPT),
    ("dangling-symlink-script", b"/dangling.php", NO_SCRIPT),
    ("dangling-symlink-file", b"/dangling.txt", FRONT),
    ("fifo", b"/pipe", NotFound("not a regular file")),
    # Directories and indexes.
    ("dir-without-slash", b"/withphp", Redirect("/withphp/")),
    ("dir-encoded-slash-is-a-slash", b"/withphp%2F", script("/withphp/index.php")),
    ("symlinked-dir-without-slash", b"/linkdir", Redirect("/linkdir/")),
    ("dir-php-index", b"/withphp/", script("/withphp/index.php")),
    ("dir-html-index", b"/withhtml/", StaticFile("ROOT/withhtml/index.html")),
    ("dir-index-order", b"/both/", script("/both/index.php")),
    ("dir-no-index", b"/noindex/", FRONT),
    ("dir-empty", b"/empty/", FRONT),
    ("file-with-slash", b"/hello.txt/", FRONT),
    ("nothing", b"/no/such/page", FRONT),
    ("pretty-url", b"/2024/01/hello-world/", FRONT),
    # Traversal.
    ("dotdot", b"/../etc/passwd", ABOVE),
    ("dotdot-inside", b"/sub/../hello.txt", StaticFile("ROOT/hello.txt")),
    ("dot", b"/./hello.txt", StaticFile("ROOT/hello.txt")),
    ("dot-inside", b"/sub/./page.txt", StaticFile("ROOT/sub/page.txt")),
    ("dotdot-encoded", b"/%2e%2e/etc/passwd", ABOVE),
    ("dotdot-encoded-upper", b"/%2E%2E/etc/passwd", ABOVE),
    ("dotdot-mixed", b"/.%2e/etc/passwd", ABOVE),
    ("dotdot-encoded-slash", b"/sub%2F..%2F..%2Fetc%2Fpasswd", ABOVE),
    ("dotdot-after-script", b"/index.php/../../etc/passwd", ABOVE),
    ("dotdot-out-of-a-script", b"/index.php/../hello.txt", StaticFile("ROOT/hello.txt")),
    ("dotdot-into-hidden", b"/sub/../.env", HIDDEN),
    ("dotdot-into-denied", b"/sub/../data/x", Forbidden("denied prefix")),
    ("dotdot-trailing", b"/sub/..", script("/index.php")),
    ("dot-trailing-dir", b"/withphp/.", script("/withphp/index.php")),
    ("dotdot-trailing-dir", b"/withphp/x/..", script("/withphp/index.php")),
    ("dotdot-backslash", b"/..%5C..%5Cetc%5Cpasswd", HIDDEN),
    ("backslash-not-separator", b"/sub%5C..%5Chello.txt", FRONT),
    ("overlong-dot", b"/%C0%AE%C0%AE/etc/passwd", NotFound("path is not valid UTF-8")),
    ("encoded-surrogate", b"/%ED%A0%80.txt", NotFound("path is not valid UTF-8")),
    ("invalid-utf8", b"/%FF.txt", NotFound("path is not valid UTF-8")),
    # Control bytes and malformed input.
    ("nul", b"/index.php%00.txt", NotFound("control byte in path")),
    ("nul-after-image", b"/uploads/image.jpg%00.php", NotFound("control byte in path")),
    ("raw-nul", b"/hello.txt\x00", NotFound("control byte in path")),
    ("newline", b"/hello.txt%0A", NotFound("control byte in path")),
    ("del", b"/hello.txt%7F", NotFound("control byte in path")),
    ("bad-percent", b"/hello%zz.txt", NotFound("malformed percent-encoding")),
    ("truncated-percent", b"/hello.txt%2", NotFound("malformed percent-encoding")),
    ("relative", b"hello.txt", NotFound("path does not start with /")),
    ("absolute-form", b"http://example.com/", NotFound("path does not start with /")),
    ("empty", b"", NotFound("path does not start with /")),
    # Hidden segments.
    ("git", b"/.git/config", HIDDEN),
    ("git-dir", b"/.git/", HIDDEN),
    ("env", b"/.env", HIDDEN),
    ("htaccess", b"/.htaccess", HIDDEN),
    ("svn-nested", b"/sub/.svn/entries", HIDDEN),
    ("hidden-encoded", b"/%2Eenv", HIDDEN),
    ("hidden-missing", b"/.nothing", HIDDEN),
    ("hidden-in-path-info", b"/index.php/.git/config", HIDDEN),
    ("hidden-php", b"/.php", HIDDEN),
    ("user-ini", b"/.user.ini", HIDDEN),
    ("well-known", b"/.well-known/security.txt", StaticFile("ROOT/.well-known/security.txt")),
    ("well-known-acme", b"/.well-known/acme-challenge/token", StaticFile("ROOT/.well-known/acme-challenge/token")),
    ("well-known-missing-goes-to-app", b"/.well-known/webfinger", FRONT),
    ("well-known-hidden-inside", b"/.well-known/.git/x", HIDDEN),
    ("well-known-only-at-top", b"/sub/.well-known/x", HIDDEN),
    # Never execute anything but an existing, exact ".php" file.
    ("image-then-php", b"/uploads/image.jpg/x.php", NO_SCRIPT),
    ("image-then-php-path-info", b"/uploads/image.jpg/x.php/y", NO_SCRIPT),
    ("image-path-info", b"/uploads/image.jpg/x", FRONT),
    ("upper-case-php", b"/X.PHP", Forbidden("PHP source is never sent")),
    ("upper-case-php-missing", b"/Index.PHP", FRONT),
    ("phtml", b"/old.phtml", Forbidden("PHP source is never sent")),
    ("fullwidth-lookalike", "/x\uff0ephp".encode(), Forbidden("PHP source is never sent")),
    ("fullwidth-lookalike-encoded", b"/x%EF%BC%8Ephp", Forbidden("PHP source is never sent")),
    ("cyrillic-lookalike", "/x.\u0440h\u0440".encode(), StaticFile("ROOT/x.\u0440h\u0440")),
    ("trailing-dot", b"/index.php.", FRONT),
    ("php-space", b"/index.php%20", FRONT),
    # deny prefixes are checked on the decoded, normalised path.
    ("deny", b"/data/pages/start.txt", Forbidden("denied prefix")),
    ("deny-dir-itself", b"/data", Forbidden("denied prefix")),
    ("deny-dir-slash", b"/data/", Forbidden("denied prefix")),
    ("deny-script", b"/conf/local.php", Forbidden("denied prefix")),
    ("deny-encoded", b"/%64ata/pages/start.txt", Forbidden("denied prefix")),
    ("deny-double-slash", b"//data//pages/start.txt", Forbidden("denied prefix")),
    ("deny-not-a-prefix", b"/database", FRONT),
    ("deny-case-sensitive", b"/DATA/pages/start.txt", FRONT),
    ("deny-missing-file-not-swallowed", b"/conf/missing", Forbidden("denied prefix")),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_route(root: str, raw: bytes, expected: Route) -> None:
    """Each path routes to exactly the expected static file, script, redirect or refusal."""
    router = Router(root, index=("index.php", "index.html"), deny=("/data/", "/conf/"))
    assert router.route(raw) == at(root, expected)


@pytest.mark.parametrize("raw", [b"/hello.txt", b"/linked.txt", b"/withhtml/"])
def test_static_route_carries_the_files_stat(root: str, raw: bytes) -> None:
    """A StaticFile holds the stat the router made of it (through symlinks), for the handler to reuse."""
    route = Router(root, index=("index.php", "index.html")).route(raw)
    assert isinstance(route, StaticFile) and route.stat is not None
    assert (route.stat.st_ino, route.stat.st_size) == (os.stat(route.path).st_ino, os.stat(route.path).st_size)


NO_FRONT_CASES: list[tuple[str, bytes, Route]] = [
    ("nothing", b"/no/such/page", NotFound("no such file")),
    ("dir-no-index", b"/noindex/", Forbidden("directory without index")),
    ("dir-php-index", b"/withphp/", script("/withphp/index.php")),
    ("root", b"/", script("/index.php")),
    ("static", b"/hello.txt", StaticFile("ROOT/hello.txt")),
    ("missing-script", b"/missing.php", NO_SCRIPT),
    ("image-path-info", b"/uploads/image.jpg/x", NotFound("no such file")),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in NO_FRONT_CASES], ids=[c[0] for c in NO_FRONT_CASES])
def test_route_without_front_controller(root: str, raw: bytes, expected: Route) -> None:
    """Without a front controller, unmatched paths are 404 and index-less directories 403, as in nginx."""
    assert Router(root, front_controller=None).route(raw) == at(root, expected)


OPTION_CASES: list[tuple[str, dict[str, object], bytes, Route]] = [
    ("index-html-first", {"index": ("index.html", "index.php")}, b"/both/", StaticFile("ROOT/both/index.html")),
    ("front-controller-missing", {"front_controller": "/app.php"}, b"/nothing", NotFound("no such file")),
    ("front-controller-missing-dir", {"front_controller": "/app.php"}, b"/noindex/", Forbidden("directory without index")),
    ("front-controller-elsewhere", {"front_controller": "/lib/exe/fetch.php"}, b"/x", script("/lib/exe/fetch.php")),
    ("root-with-trailing-slash", {"root_suffix": "/"}, b"/hello.txt", StaticFile("ROOT/hello.txt")),
    ("deny-plain-prefix", {"deny": ("/data",)}, b"/database", Forbidden("denied prefix")),
    ("deny-index-rewrite", {"deny": ("/withphp/index.php",)}, b"/withphp/", Forbidden("denied prefix")),
]


@pytest.mark.parametrize(
    ("options", "raw", "expected"), [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES]
)
def test_route_options(root: str, options: dict[str, object], raw: bytes, expected: Route) -> None:
    """The index list, the front controller, the root's spelling and deny prefixes change routing as documented."""
    options = dict(options)
    suffix = str(options.pop("root_suffix", ""))
    assert Router(root + suffix, **options).route(raw) == at(root, expected)  # type: ignore[arg-type]


BAD_CONFIG: list[tuple[str, dict[str, object]]] = [
    ("relative-root", {"root": "www"}),
    ("index-with-slash", {"index": ("a/index.php",)}),
    ("hidden-index", {"index": (".index.php",)}),
    ("empty-index", {"index": ("",)}),
    ("source-index", {"index": ("index.phtml",)}),
    ("upper-case-index", {"index": ("INDEX.PHP",)}),
    ("front-not-php", {"front_controller": "/index.html"}),
    ("front-relative", {"front_controller": "index.php"}),
    ("front-hidden", {"front_controller": "/.app/index.php"}),
    ("front-dotdot", {"front_controller": "/../index.php"}),
    ("front-denied", {"front_controller": "/conf/index.php", "deny": ("/conf/",)}),
    ("deny-relative", {"deny": ("data/",)}),
]


@pytest.mark.parametrize("options", [c[1] for c in BAD_CONFIG], ids=[c[0] for c in BAD_CONFIG])
def test_bad_config(options: dict[str, object]) -> None:
    """A configuration that could leak source or escape the root is refused when the router is built."""
    options = {"root": "/srv/www", **options}
    with pytest.raises(ValueError):
        Router(**options)  # type: ignore[arg-type]


segment_chars = st.sampled_from(["a", ".", "..", "%2e", "%2E", "%2f", "%5c", "/", "%00", "%", "p", "h", "x.php", "ü"])


@settings(max_examples=300, deadline=None)
@given(st.lists(segment_chars, max_size=12))
def test_never_leaves_root_or_sends_php(root: str, parts: list[str]) -> None:
    """Whatever the path, a route names a file under the root, only ".php" scripts run and no ".php" is sent."""
    route = Router(root).route(("/" + "".join(parts)).encode())
    if isinstance(route, StaticFile):
        assert route.path.startswith(root + "/")
        assert ".." not in route.path.split("/")
        assert not route.path.lower().endswith(".php")
    elif isinstance(route, Script):
        assert route.script_filename.startswith(root + "/")
        assert ".." not in route.script_filename.split("/")
        assert route.script_filename.endswith(".php")
        assert os.path.isfile(route.script_filename)
        assert route.document_uri == route.script_name + route.path_info
    elif isinstance(route, Redirect):
        assert route.location.startswith("/") and not route.location.startswith("//")


def test_one_stat_per_candidate(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script with PATH_INFO costs one stat, a static file one, a front-controller fallback two."""
    calls: list[str] = []
    real_stat = os.stat

    def counting_stat(path: str) -> os.stat_result:
        calls.append(path)
        return real_stat(path)

    monkeypatch.setattr(os, "stat", counting_stat)
    router = Router(root)
    counts = {}
    for raw in (b"/lib/exe/fetch.php/x.png", b"/hello.txt", b"/no/such/page"):
        calls.clear()
        router.route(raw)
        counts[raw] = len(calls)
    assert counts == {b"/lib/exe/fetch.php/x.png": 1, b"/hello.txt": 1, b"/no/such/page": 2}


def test_redirect_cannot_be_turned_into_another_host(root: str, tmp_path: Path) -> None:
    """A directory redirect re-encodes backslashes, "?" and "#" and never starts with "//"."""
    docroot = tmp_path / "www"
    for name in ("evil.example", "\\evil.example", "a\\b", "q?x#y"):
        (docroot / name).mkdir(parents=True)
    router = Router(str(docroot))
    routes = [router.route(raw) for raw in (b"//evil.example", b"/%5Cevil.example", b"/a%5Cb", b"/q%3Fx%23y")]
    assert routes == [
        Redirect("/evil.example/"),
        Redirect("/%5Cevil.example/"),
        Redirect("/a%5Cb/"),
        Redirect("/q%3Fx%23y/"),
    ]


# The regex the router's control check was alone before isprintable() went first: the same bytes must be refused.
_OLD_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def test_control_check_matches_the_old_regex_on_every_byte(root: str) -> None:
    """Each of the 256 byte values, raw, percent-encoded, or after a bad UTF-8 byte, is a control byte exactly when the old regex said so."""
    router = Router(root)
    control = NotFound("control byte in path")
    for value in range(256):
        expected = _OLD_CONTROL.search(bytes((value,))) is not None
        for raw in (b"/a" + bytes((value,)), b"/a%%%02X" % value, b"/%%FF%%%02x" % value):
            assert (raw, router.route(raw) == control) == (raw, expected)


@pytest.mark.parametrize("text", ["\u0085", "\u00a0", "\u2028", "\u200b", "\ufeff", "\U000e0001"])
def test_non_printable_text_is_not_a_control_byte(root: str, text: str) -> None:
    """Code points str.isprintable() refuses but that are no C0 control or DEL route as any other name, like nginx."""
    raw = b"/x" + "".join(f"%{b:02X}" for b in text.encode()).encode()
    assert Router(root).route(raw) == at(root, script("/index.php"))
