"""What differs between the Pythons fephp runs on (CPython 3.11+, and PyPy 3.9 for speed)."""

from __future__ import annotations

import sys

__all__ = ["SLOTS"]

#: ``@dataclass(frozen=True, **SLOTS)``: __slots__ where dataclasses can make
#: them (3.10+); PyPy 3.9, the one Debian ships, gets ordinary dataclasses.
SLOTS: dict[str, bool] = {"slots": True} if sys.version_info >= (3, 10) else {}
