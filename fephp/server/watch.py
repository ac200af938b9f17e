"""``php.worker.watch``: a service that restarts the PHP workers when a watched file changes (Linux inotify).

A development aid, as FrankenPHP's worker ``watch``: the workers keep the
app booted, so an edited PHP file only shows once they restart.  Each glob
(``src/**/*.php``, ``config/*.{yaml,php}``; relative ones from the
configuration file's folder) is watched from the folder before its first
wildcard, recursively when a wildcard or ``**`` spans folders, with
Twisted's inotify (new sub-folders are added as they appear).  A change to
a matching file (written and closed, created, moved in, removed, touched)
asks for a restart: changes that arrive while one is pending join it, and
the restart itself is the caller's (the same graceful path as SIGHUP: new
workers boot before the old ones stop, requests in flight finish).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import inotify
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

__all__ = ["WatchService", "glob_regex", "watch_roots"]

#: What counts as a change: a file written and closed, made, moved in or out, removed, or touched (attributes).
_CHANGES = (inotify.IN_CLOSE_WRITE | inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM
            | inotify.IN_DELETE | inotify.IN_ATTRIB)
#: Changes closer together than this become one restart (an editor's save is several events; a checkout many).
SETTLE = 0.1

_WILDCARD = re.compile(r"[*?\[{]")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex for an absolute glob: ``*`` and ``?`` within a folder, ``**/`` any folders, ``[...]``, ``{a,b}``."""
    out: list[str] = []
    i, n, braces = 0, len(pattern), 0
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "{":
            braces += 1
            out.append("(?:")
        elif c == "}" and braces:
            braces -= 1
            out.append(")")
        elif c == "," and braces:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if braces:
        raise ValueError(f"unbalanced {{ in {pattern!r}")
    return re.compile("".join(out) + r"\Z")


def watch_roots(patterns: Sequence[str]) -> list[tuple[str, bool]]:
    """(folder, recursive) for absolute globs: the folder before the first wildcard; recursive when folders vary."""
    roots: dict[str, bool] = {}
    for pattern in patterns:
        parts = pattern.split("/")
        fixed = next((i for i, part in enumerate(parts) if _WILDCARD.search(part)), len(parts) - 1)
        folder = "/".join(parts[:fixed]) or "/"
        recursive = fixed < len(parts) - 1 or "**" in pattern
        roots[folder] = roots.get(folder, False) or recursive
    return sorted(roots.items())


class WatchService(Service):
    """Watches *patterns* (absolute globs) and calls *restart* once the changes to matching files settle.

    *notifier* makes the inotify object (Twisted's ``INotify``; a fake in unit
    tests); *clock* schedules the settling delay.
    """

    log = Logger()

    def __init__(
        self,
        patterns: Sequence[str],
        restart: Callable[[], Any],
        *,
        clock: Any,
        notifier: Callable[[], Any] | None = None,
        settle: float = SETTLE,
    ) -> None:
        self.patterns = tuple(patterns)
        self._regexes = [glob_regex(p) for p in self.patterns]
        self._restart = restart
        self._clock = clock
        self._notifier_factory = notifier
        self._settle = settle
        self._notifier: Any = None
        self._pending: IDelayedCall | None = None
        #: Restarts asked for (the admin side and tests read it).
        self.restarts = 0

    def matches(self, path: str) -> bool:
        """Whether a changed file's absolute path matches one of the globs."""
        return any(regex.match(path) for regex in self._regexes)

    def startService(self) -> None:
        super().startService()
        self._notifier = (self._notifier_factory or inotify.INotify)()
        self._notifier.startReading()
        for folder, recursive in watch_roots(self.patterns):
            if not os.path.isdir(folder):
                self.log.warn(  # noqa: G010 - Twisted's Logger says warn
                    "php.worker.watch: {folder} is not a folder; nothing under it is watched", folder=folder
                )
                continue
            self._notifier.watch(FilePath(folder), mask=_CHANGES, autoAdd=recursive, callbacks=[self._changed],
                                 recursive=recursive)

    def stopService(self) -> None:
        super().stopService()
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._notifier is not None:
            self._notifier.connectionLost(None)
            self._notifier = None

    def _changed(self, _watch: object, path: FilePath[str], mask: int) -> None:
        name = path.path if isinstance(path.path, str) else os.fsdecode(path.path)
        if not self.running or not self.matches(name):
            return
        if self._pending is None or not self._pending.active():
            self.log.info("php.worker.watch: {path} changed; restarting the PHP workers", path=name)
            self._pending = self._clock.callLater(self._settle, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self.restarts += 1
        self._restart()
