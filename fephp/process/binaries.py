"""Finding the PHP binaries fephp runs: php-fpm and php-cgi, unversioned or 8.x."""

from __future__ import annotations

import os
import shutil
from typing import Optional

__all__ = ["PHP_BINARIES", "find_php", "php_cli_for"]

_VERSIONS = ("", "8.4", "8.3", "8.2", "8.1", "8.0")

#: Each binary fephp can run, and the folders searched after PATH: Debian
#: installs php-fpm8.x in /usr/sbin, which a non-root PATH often lacks.
PHP_BINARIES: dict[str, tuple[str, ...]] = {
    "php-fpm": ("/usr/sbin", "/usr/local/sbin"),
    "php-cgi": ("/usr/bin", "/usr/local/bin"),
    "php": ("/usr/bin", "/usr/local/bin"),
}


def find_php(kind: str, path: Optional[str] = None) -> Optional[str]:
    """The path of *kind* (``"php-fpm"``, ``"php-cgi"`` or ``"php"``, the command line), or None when there is none.

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


def php_cli_for(fpm_binary: Optional[str], path: Optional[str] = None) -> Optional[str]:
    """The PHP command line of the same version as *fpm_binary* (its sibling), else any; None when there is none.

    Debian puts ``php-fpm8.2`` in /usr/sbin and ``php8.2`` in /usr/bin; a
    source build puts both in one ``bin`` or ``sbin`` beside each other.
    """
    if fpm_binary:
        name = os.path.basename(fpm_binary)
        version = name[len("php-fpm"):] if name.startswith("php-fpm") else ""
        folder = os.path.dirname(fpm_binary)
        for candidate in (folder, os.path.join(os.path.dirname(folder), "bin")):
            found = os.path.join(candidate, "php" + version)
            if os.path.isfile(found) and os.access(found, os.X_OK):
                return found
        if version:
            on_path = shutil.which("php" + version, path=os.pathsep.join(
                filter(None, [path or os.environ.get("PATH", ""), *PHP_BINARIES["php"]])))
            if on_path:
                return on_path
    return find_php("php", path)
