"""Finding the PHP binaries fephp runs: php-fpm and php-cgi, unversioned or 8.x."""

from __future__ import annotations

import os
import shutil
from typing import Optional

__all__ = ["PHP_BINARIES", "find_php"]

_VERSIONS = ("", "8.4", "8.3", "8.2", "8.1", "8.0")

#: Each binary fephp can run, and the folders searched after PATH: Debian
#: installs php-fpm8.x in /usr/sbin, which a non-root PATH often lacks.
PHP_BINARIES: dict[str, tuple[str, ...]] = {
    "php-fpm": ("/usr/sbin", "/usr/local/sbin"),
    "php-cgi": ("/usr/bin", "/usr/local/bin"),
}


def find_php(kind: str, path: Optional[str] = None) -> Optional[str]:
    """The path of *kind* (``"php-fpm"`` or ``"php-cgi"``), or None when there is none.

    The unversioned name comes first (what ``update-alternatives`` or a
    source build installs), then the newest 8.x; *path* replaces ``$PATH``,
    and the usual folders of that binary are searched after it.
    """
    folders = PHP_BINARIES[kind]
    search = os.pathsep.join(filter(None, [path or os.environ.get("PATH", ""), *folders]))
    for version in _VERSIONS:
        found = shutil.which(kind + version, path=search)
        if found:
            return found
    return None
