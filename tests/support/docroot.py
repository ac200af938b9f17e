"""The test site: tests/php/site linked into a fresh document root."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support import PHP_DIR

SITE = PHP_DIR / "site"


def make_docroot(base: Path) -> Path:
    """The test site, plus what git cannot hold: dotfiles and symlinks."""
    root = base / "root"
    shutil.copytree(SITE, root)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / ".env").write_text("SECRET=1\n")
    (root / ".htaccess").write_text("Deny from all\n")
    (root / "SOURCE.PHP").write_text("<?php echo 'x'; // secret source\n")
    outside = base / "outside"
    outside.mkdir()
    (outside / "linked.txt").write_text("linked content\n")
    (outside / "linked.php").write_text("<?php echo 'linked php';\n")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (base / "private.txt").write_text("outside the root\n")
    return root
