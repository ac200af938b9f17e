"""Processes and binaries for tests: skip or fail on a missing binary, finding processes in /proc."""

from __future__ import annotations

import os

import pytest

from fephp.process.supervisor import live_processes
from tests.support.ports import alive

__all__ = ["alive", "children_of", "group_members", "processes_with", "require_binary"]


def require_binary(found: str | None, what: str) -> str:
    """*found*, or skip (locally) / fail (under CI) when it is missing."""
    if found:
        return found
    message = f"{what} is not installed (see the README's test command for what to apt-get install)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line or title contains *marker*."""
    wanted = marker.encode()
    return [p.pid for p in live_processes() if wanted in p.cmdline]


def group_members(pgid: int) -> list[int]:
    """Live processes of process group *pgid*."""
    return [p.pid for p in live_processes() if p.pgid == pgid]


def children_of(parent: int, marker: str = "") -> list[int]:
    """Live children of *parent* whose command line contains *marker*."""
    wanted = marker.encode()
    return sorted(p.pid for p in live_processes() if p.ppid == parent and wanted in p.cmdline)
