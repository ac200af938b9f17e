"""URL path -> what to do: a static file, a PHP script with PATH_INFO, a redirect, or a refusal.

The behaviour is that of the usual nginx + php-fpm setup, hardened
(docs/routing.md has the table and the reasons)::

    location ~ /\\.(?!well-known/) { deny all; }           # hidden segments
    location ^~ /data/             { deny all; }           # Router.deny
    location ~ [^/]\\.php(/|$) {
        fastcgi_split_path_info ^(.+?\\.php)(/.*)$;
        try_files $fastcgi_script_name =404;
    }
    location / {
        index index.php;                                   # Router.index
        try_files $uri $uri/ /index.php?$query_string;     # Router.front_controller
    }

Pure: no Twisted, no I/O except ``os.stat`` of candidate paths (one per
candidate, symlinks followed, never ``realpath``).  Filesystem paths are
the document root joined with the decoded URL path; the URL path cannot
leave the root because its "." and ".." segments are removed before any
lookup (RFC 3986 5.2.4, as nginx merges them) and a path whose ".." would
climb above the root is refused, so a symlink *inside* the root is
followed wherever it points, as nginx does.

Only POSIX file systems are supported: a backslash is an ordinary
character in a file name, never a separator, and names are compared
byte for byte (on a case-insensitive file system ``deny`` prefixes could
be bypassed with other letter cases; see docs/routing.md).
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from typing import Optional, Union
from urllib.parse import quote

from .._compat import SLOTS

__all__ = [
    "BadRequest",
    "Forbidden",
    "NotFound",
    "PHPWorkers",
    "Redirect",
    "Route",
    "Router",
    "Script",
    "StaticFile",
    "is_php_source",
    "under_prefix",
]


@dataclass(**SLOTS)
class StaticFile:
    """Send the file at ``path`` (under the root, symlinks not resolved) as it is (read-only by convention).

    StaticFile and Script are made per request, so not frozen dataclasses
    (as the codec's Request): frozen, each field is set through
    ``object.__setattr__`` in ``__init__``.

    ``stat`` is what the router saw of it (symlinks followed), so that the
    file is not looked up twice.
    """

    path: str
    stat: Union[os.stat_result, None] = field(default=None, compare=False, repr=False)


@dataclass(**SLOTS)
class Script:
    """Run ``script_filename`` through PHP with these CGI path variables (read-only by convention, see StaticFile)."""

    script_filename: str
    script_name: str
    path_info: str
    document_uri: str


@dataclass(frozen=True, **SLOTS)
class Redirect:
    """Answer 301 to ``location`` (percent-encoded; the caller re-appends the query string)."""

    location: str


@dataclass(frozen=True, **SLOTS)
class Forbidden:
    """Answer 403; ``reason`` is for the log only."""

    reason: str


@dataclass(frozen=True, **SLOTS)
class BadRequest:
    """Answer 400: no request can mean this path (``reason`` is for the log only)."""

    reason: str


@dataclass(frozen=True, **SLOTS)
class NotFound:
    """Answer 404; ``reason`` is for the log only."""

    reason: str


@dataclass(frozen=True, **SLOTS)
class PHPWorkers:
    """Send the request to the PHP workers (``php.worker.match``), file or no file; ``uri`` is the decoded path."""

    uri: str


Route = Union[StaticFile, Script, Redirect, Forbidden, NotFound, BadRequest, PHPWorkers]

# Every "%XY" with X, Y hex digits in either case, to its byte value.
_HEX = {
    bytes((a, b)): int(bytes((a, b)), 16)
    for a in b"0123456789abcdefABCDEF"
    for b in b"0123456789abcdefABCDEF"
}

# C0 controls and DEL: NUL truncates C strings (php-fpm, the kernel), CR/LF
# split headers and log lines; no real file name needs them.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")

# Names that hold PHP source but do not end in exactly ".php": they are never
# executed (only ".php" is, see _PHP) and never sent either, because sending
# them would disclose source code.  Trailing dots and spaces are stripped and
# the case folded first, so "X.PHP", "a.Php." and "b.phtml " are covered.
_PHP_SOURCE_SUFFIXES = (
    ".php", ".phtml", ".pht", ".phps", ".php3", ".php4", ".php5", ".php7", ".php8",
)

# The one suffix that executes.  Case-sensitive and ASCII-only on purpose:
# "X.PHP", a fullwidth "．php" (U+FF0E) or "рhр" spelt with Cyrillic letters
# never match, so no look-alike name and no case trick reaches PHP.
_PHP = ".php"

_REDIRECT_SAFE = "/!$&'()*+,;=:@-._~"  # RFC 3986 pchar minus "%": everything else is re-encoded

_BAD_ENCODING = NotFound("malformed percent-encoding")
_BAD_UTF8 = NotFound("path is not valid UTF-8")
_CONTROL_BYTE = NotFound("control byte in path")
_NOT_ORIGIN_FORM = NotFound("path does not start with /")
_ABOVE_ROOT = BadRequest("dot segments climb above the root")
_HIDDEN = Forbidden("hidden segment")
_DENIED = Forbidden("denied prefix")
_PHP_SOURCE = Forbidden("PHP source is never sent")
_NO_INDEX = Forbidden("directory without index")
_NO_SCRIPT = NotFound("no such script")
_NO_FILE = NotFound("no such file")
_NOT_REGULAR = NotFound("not a regular file")
_EACCES = Forbidden("permission denied")


def _is_php_source(name: str) -> bool:
    """Whether a file called *name* may hold PHP source (case-insensitive, NFKC-folded)."""
    folded = name.rstrip(". ").lower()
    if folded.endswith(_PHP_SOURCE_SUFFIXES):
        return True
    if not folded.isascii():
        # A fullwidth "ｐｈｐ" is not executed (see _PHP), but it is no more
        # innocent to send than "x.php" would be.
        return unicodedata.normalize("NFKC", folded).lower().endswith(_PHP_SOURCE_SUFFIXES)
    return False


#: Public for the other places that must never send PHP source (X-Sendfile).
is_php_source = _is_php_source


def _percent_decode(raw: bytes) -> bytes | None:
    """*raw* with each "%XY" decoded exactly once, or None if a "%" is not followed by two hex digits."""
    if 37 not in raw:  # "%" as an int: a bytes argument costs CPython's bytes.__contains__ a formatted TypeError
        return raw
    parts = raw.split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        byte = _HEX.get(part[:2])
        if byte is None:  # nginx answers 400 to "%zz" and to a trailing "%"
            return None
        out.append(byte)
        out += part[2:]
    return bytes(out)


def under_prefix(uri: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the decoded path *uri* is under one of *prefixes*: "/api/" holds "/api" and "/api/x", "/api" also "/apix"."""
    probe = uri if uri.endswith("/") else uri + "/"
    return any(probe.startswith(prefix) for prefix in prefixes)


def _stat(path: str) -> os.stat_result | Forbidden | None:
    """``os.stat`` (symlinks followed), Forbidden on EACCES like nginx, None when there is nothing usable."""
    try:
        return os.stat(path)
    except PermissionError:
        return _EACCES
    except (OSError, ValueError):  # ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG
        return None


def path_segments(path: str) -> "Optional[list[str]]":
    """A decoded path's segments with "." and ".." removed and empty ones dropped (RFC 3986 5.2.4); None above the root.

    The one copy of the rule, for the router and for the rules
    (:func:`fephp.cgi.rules.normalize_path`), so a rule sees the path the
    router serves.
    """
    segments: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if not segments:
                return None
            segments.pop()
            continue
        segments.append(segment)
    return segments


@dataclass(frozen=True)
class Router:
    """Maps a request path to a :data:`Route` under the document root ``root``.

    ``index`` names are tried in order in a directory requested with a
    trailing slash.  ``front_controller`` (a URL path ending in ".php", or
    None) receives every request that matched nothing else.  ``deny`` holds
    URL prefixes refused with 403: "/data/" refuses "/data" and everything
    under it, "/data" (no slash) is a plain string prefix like an nginx
    ``location ^~`` and also refuses "/database.php".  Prefixes are
    case-sensitive, as in nginx.  ``worker_match`` holds URL prefixes,
    read as ``deny``'s, whose paths go to the PHP workers (:class:`PHPWorkers`)
    once decoded and checked, before any file is looked up (FrankenPHP's
    worker ``match`` likewise overrides ``try_files``).
    """

    root: str
    index: tuple[str, ...] = ("index.php",)
    front_controller: str | None = "/index.php"
    deny: tuple[str, ...] = ()
    worker_match: tuple[str, ...] = ()
    _base: str = field(init=False, repr=False, compare=False)
    _front_path: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not os.path.isabs(self.root) or "\0" in self.root:
            raise ValueError(f"document root must be an absolute path: {self.root!r}")
        for name in self.index:
            if not name or "/" in name or name.startswith(".") or _CONTROL.search(name.encode()):
                raise ValueError(f"index must be a plain, visible file name: {name!r}")
            if _is_php_source(name) and not name.endswith(_PHP):
                raise ValueError(f"index {name!r} would send PHP source")
        for prefix in self.deny:
            if not prefix.startswith("/"):
                raise ValueError(f"deny prefix must start with /: {prefix!r}")
        for prefix in self.worker_match:
            if not prefix.startswith("/"):
                raise ValueError(f"worker match prefix must start with /: {prefix!r}")
        front = self.front_controller
        if front is not None:
            segments = front.split("/")
            if (
                not front.startswith("/")
                or not front.endswith(_PHP)
                or any(not s or s.startswith(".") for s in segments[1:])
                or _CONTROL.search(front.encode())
            ):
                raise ValueError(f"front controller must be a URL path ending in .php: {front!r}")
            if self._denied(front):
                raise ValueError(f"front controller {front!r} is under a deny prefix")
        base = self.root.rstrip("/")  # "" for "/", so base + "/x" is always right
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_front_path", None if front is None else base + front)

    def _denied(self, uri: str) -> bool:
        return under_prefix(uri, self.deny)

    def _fallback(self, directory: bool) -> Route:
        """nginx's last try_files argument: the front controller, else 403 (directory) or 404."""
        if self._front_path is not None:
            st = _stat(self._front_path)
            if isinstance(st, os.stat_result) and stat.S_ISREG(st.st_mode):
                assert self.front_controller is not None
                return Script(self._front_path, self.front_controller, "", self.front_controller)
        return _NO_INDEX if directory else _NO_FILE

    def route(self, raw_path: bytes) -> Route:
        """Route *raw_path*, the request target's path as received (percent-encoded, no query)."""
        if not raw_path.startswith(b"/"):
            return _NOT_ORIGIN_FORM
        decoded = _percent_decode(raw_path)  # exactly once: "%252e" stays the 3 characters "%2e"
        if decoded is None:
            return _BAD_ENCODING
        try:
            # Strict UTF-8 also refuses overlong forms ("%c0%ae" is not ".")
            # and encoded surrogates, so no second spelling of "." or "/" exists.
            path = decoded.decode("utf-8")
        except UnicodeDecodeError:
            return _CONTROL_BYTE if _CONTROL.search(decoded) else _BAD_UTF8
        # %00 above all: it would truncate the path in C.  Every control byte
        # makes the text non-printable, so the regex runs only on the rare path
        # that is not (isprintable() costs a third of a regex search).
        if not path.isprintable() and _CONTROL.search(decoded):
            return _CONTROL_BYTE

        # Split on "/" only ("%2F" is a "/" by now, a backslash never is) and
        # drop empty segments, which collapses "//" (so a redirect can never
        # be the protocol-relative "//evil.example/").  "." and ".." are
        # removed as RFC 3986 5.2.4 says, on the decoded path as nginx does
        # ("/%2e%2e/" is ".."), before anything is looked up: the file
        # system never sees a "..", and a path that would climb above the
        # root is refused (nginx: 400).
        segments = path_segments(path)
        if segments is None:
            return _ABOVE_ROOT
        for i, segment in enumerate(segments):
            if segment[0] == ".":
                if i != 0 or segment != ".well-known":
                    # .git, .env, .htaccess, .svn, .user.ini: never served,
                    # never executed, never handed to the front controller.
                    # RFC 8615 /.well-known/ (ACME, security.txt, WebFinger) is
                    # an ordinary directory.
                    return _HIDDEN
        norm = "/" + "/".join(segments)
        # "/a/b/.." is "/a/" (5.2.4): a final dot segment leaves a slash.
        trailing = bool(segments) and (path.endswith("/") or path.endswith("/.") or path.endswith("/.."))
        uri = norm + "/" if trailing else norm
        if self.deny and self._denied(uri):
            return _DENIED
        if self.worker_match and under_prefix(uri, self.worker_match):
            return PHPWorkers(uri)

        base = self._base
        found: os.stat_result | None = None  # the stat of the whole path, if the walk made it
        if _PHP in path:
            # PATH_INFO split (RFC 3875 4.1.5): the first prefix ending in
            # ".php" that is a regular file is the script.  Only such a
            # prefix is ever executed: "/uploads/image.jpg/x.php" stats
            # "image.jpg/x.php" (ENOTDIR) and is refused, so a non-PHP file
            # is never run through cgi.fix_pathinfo (CVE-2019-11043 class).
            end = 0
            last = len(segments) - 1
            for i, segment in enumerate(segments):
                end += 1 + len(segment)
                if not segment.endswith(_PHP):
                    continue
                st = _stat(base + uri[:end])
                if st is None:
                    # nginx: try_files $fastcgi_script_name =404, no front controller.
                    return _NO_SCRIPT
                if isinstance(st, Forbidden):
                    return st
                if stat.S_ISREG(st.st_mode):
                    # DOCUMENT_URI is the script's own path, as nginx's
                    # $document_uri after try_files $fastcgi_script_name.
                    return Script(base + uri[:end], uri[:end], uri[end:], uri[:end])
                if not stat.S_ISDIR(st.st_mode):
                    return _NOT_REGULAR
                if i == last:
                    found = st  # a directory called "x.php": handled below like any other
            # Every ".php" prefix was a directory: go on as for any path.

        full = base + norm
        st_full = found if found is not None else _stat(full)
        if st_full is None:
            return self._fallback(directory=False)
        if isinstance(st_full, Forbidden):
            return st_full
        mode = st_full.st_mode
        if stat.S_ISREG(mode):
            if trailing:  # "/file.txt/": nginx's $uri does not exist, so try_files moves on
                return self._fallback(directory=False)
            if _is_php_source(segments[-1]):
                return _PHP_SOURCE
            return StaticFile(full, st_full)
        if not stat.S_ISDIR(mode):
            return _NOT_REGULAR
        if not trailing and segments:
            # Re-encoded from the decoded path: "?" and "#" cannot be injected,
            # a backslash becomes %5C (browsers read "/\\" as "//").
            return Redirect(quote(norm + "/", safe=_REDIRECT_SAFE))
        for name in self.index:
            candidate = base + uri + name
            st = _stat(candidate)
            if not isinstance(st, os.stat_result) or not stat.S_ISREG(st.st_mode):
                continue
            document_uri = uri + name
            if self.deny and self._denied(document_uri):
                return _DENIED
            if name.endswith(_PHP):
                return Script(candidate, document_uri, "", document_uri)
            return StaticFile(candidate, st)
        return self._fallback(directory=True)
