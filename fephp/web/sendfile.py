"""X-Sendfile and X-Accel-Redirect from fephp's side: which file a PHP response hands over, if any may be sent.

PHP names a file in a response header and fephp serves it, as nginx,
Caddy and FrankenPHP do: ``X-Sendfile: /srv/files/a.pdf`` names a path,
``X-Accel-Redirect: /protected/a.pdf`` a URI that one of the roots maps to
a folder (``X-Accel-Mapping``-style, ``/srv/files=/protected/``), as
Symfony's BinaryFileResponse produces from the request headers fephp adds
(:meth:`SendfileRoots.request_headers`).

Only files under ``server.x_sendfile_roots`` are ever sent.  The named path
is resolved with every symlink followed, and the *resolved* path must still
be under the root: a symlink inside a root may point elsewhere inside a
root, never out of it (stricter than the static path, which follows
symlinks anywhere, because here the path is data an application may have
built from user input).  ``.`` and ``..`` segments, hidden names, control
bytes and PHP source names are refused before any lookup.  Every refusal
is a :class:`Refused` whose reason goes to the log only.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Optional, Union

from .._compat import SLOTS
from ..cgi.routing import StaticFile, is_php_source

__all__ = ["Refused", "SendfileRoot", "SendfileRoots"]

#: The response headers by which PHP hands a file over (lower-case).
X_SENDFILE = b"x-sendfile"
X_ACCEL_REDIRECT = b"x-accel-redirect"
# C0 controls and DEL never name a file (NUL would truncate the path in C).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, **SLOTS)
class SendfileRoot:
    """A folder files may be sent from (``path``, resolved, no trailing slash), and its URI prefix for X-Accel-Redirect."""

    path: str
    uri: Optional[str] = None  # starts and ends with "/"


@dataclass(frozen=True, **SLOTS)
class Refused:
    """No file is sent; ``status`` is the client's answer, ``reason`` is for the log only."""

    reason: str
    status: int = 404


class SendfileRoots:
    """The roots of ``server.x_sendfile_roots`` and the resolution of X-Sendfile and X-Accel-Redirect values."""

    def __init__(self, roots: "tuple[SendfileRoot, ...]") -> None:
        if not roots:
            raise ValueError("no roots: X-Sendfile is off")
        for root in roots:
            if not os.path.isabs(root.path) or root.path != os.path.realpath(root.path):
                raise ValueError(f"a root must be an absolute, resolved path: {root.path!r}")
            if root.uri is not None and not (root.uri.startswith("/") and root.uri.endswith("/")):
                raise ValueError(f"a root's URI prefix must start and end with '/': {root.uri!r}")
        self.roots = roots
        # Longest prefix first, so that /files/private/ wins over /files/.
        self._mapped = sorted((r for r in roots if r.uri is not None), key=lambda r: len(r.uri or ""), reverse=True)

    def request_headers(self) -> "list[tuple[bytes, bytes]]":
        """What PHP is told (as Symfony reads it): X-Sendfile-Type, and X-Accel-Mapping when a root has a URI."""
        if not self._mapped:
            return [(b"X-Sendfile-Type", b"X-Sendfile")]
        mapping = ", ".join(f"{r.path}/={r.uri}" for r in self._mapped)
        return [(b"X-Sendfile-Type", b"X-Accel-Redirect"), (b"X-Accel-Mapping", mapping.encode("utf-8"))]

    def resolve(self, header: bytes, value: bytes) -> Union[StaticFile, Refused]:
        """The file an ``X-Sendfile`` or ``X-Accel-Redirect`` (*header*, lower-case) value names, or why not."""
        try:
            text = value.decode("utf-8").strip()
        except UnicodeDecodeError:
            return Refused("not UTF-8")
        if header == X_ACCEL_REDIRECT:
            # A URI, as PHP wrote it (nginx takes it undecoded too); its query is not a file's.
            text = text.split("?", 1)[0]
            for root in self._mapped:
                assert root.uri is not None
                if text.startswith(root.uri):
                    return self._file(root, text[len(root.uri):])
            return Refused("X-Accel-Redirect under no root's URI prefix")
        if not text.startswith("/"):
            return Refused("X-Sendfile path is not absolute")
        for root in self.roots:
            if text.startswith(root.path + "/"):
                return self._file(root, text[len(root.path) + 1:])
        return Refused("X-Sendfile path under no root")

    def _file(self, root: SendfileRoot, relative: str) -> Union[StaticFile, Refused]:
        if _CONTROL.search(relative):
            return Refused("control byte in path")
        segments = [s for s in relative.split("/") if s]
        if not segments:
            return Refused("names a root itself")
        for segment in segments:
            if segment in (".", ".."):
                return Refused("dot segment")
            if segment.startswith("."):
                return Refused("hidden segment")
        if is_php_source(segments[-1]):
            return Refused("PHP source is never sent")
        path = root.path + "/" + "/".join(segments)
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError):
            return Refused("unresolvable path")
        # The resolved path must stay under a root: a symlink may not lead out.
        if not any(real.startswith(r.path + "/") for r in self.roots):
            return Refused("resolves outside the roots")
        if is_php_source(os.path.basename(real)):
            return Refused("PHP source is never sent")
        try:
            st = os.stat(real)
        except PermissionError:
            return Refused("permission denied", 403)
        except (OSError, ValueError):
            return Refused("no such file")
        if not stat.S_ISREG(st.st_mode):
            return Refused("not a regular file")
        return StaticFile(real, st)
