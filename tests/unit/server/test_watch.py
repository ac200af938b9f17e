"""php.worker.watch's service: which paths its globs match, which folders it watches, when it asks for a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import inotify
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath

from fephp.server.watch import WatchService, glob_regex, watch_roots

#: (id, glob, path, matches)
GLOBS: list[tuple[str, str, str, bool]] = [
    ("star-in-folder", "/app/src/*.php", "/app/src/a.php", True),
    ("star-not-across-folders", "/app/src/*.php", "/app/src/x/a.php", False),
    ("double-star-any-depth", "/app/src/**/*.php", "/app/src/x/y/a.php", True),
    ("double-star-zero-folders", "/app/src/**/*.php", "/app/src/a.php", True),
    ("double-star-other-ext", "/app/src/**/*.php", "/app/src/x/a.phps", False),
    ("braces", "/app/config/*.{yaml,php}", "/app/config/s.yaml", True),
    ("braces-other", "/app/config/*.{yaml,php}", "/app/config/s.xml", False),
    ("question-mark", "/app/v?.php", "/app/v1.php", True),
    ("class", "/app/v[0-9].php", "/app/v7.php", True),
    ("negated-class", "/app/v[!0-9].php", "/app/v7.php", False),
    ("dot-is-literal", "/app/a.php", "/app/aXphp", False),
    ("exact-file", "/app/worker.php", "/app/worker.php", True),
]


@pytest.mark.parametrize(("pattern", "path", "matches"), [c[1:] for c in GLOBS], ids=[c[0] for c in GLOBS])
def test_glob(pattern: str, path: str, matches: bool) -> None:
    """A glob matches as a shell's globstar does: * within a folder, **/ across folders, braces as alternatives."""
    assert bool(glob_regex(pattern).match(path)) is matches


def test_unbalanced_brace_is_refused() -> None:
    """A glob with an unclosed { is an error naming the glob."""
    with pytest.raises(ValueError, match=r"unbalanced \{ in '/a/\{b'"):
        glob_regex("/a/{b")


def test_watch_roots() -> None:
    """Each glob is watched from the folder before its first wildcard, recursively only when folders vary."""
    assert watch_roots(["/app/src/**/*.php", "/app/config/*.yaml", "/app/worker.php", "/app/src/x/*.php"]) == [
        ("/app", False),
        ("/app/config", False),
        ("/app/src", True),
        ("/app/src/x", False),
    ]


class FakeNotifier:
    """Records watches; the test calls the callbacks as inotify would."""

    def __init__(self) -> None:
        self.watches: list[tuple[str, int, bool, bool]] = []
        self.callbacks: list[Any] = []
        self.reading = False
        self.lost = False

    def startReading(self) -> None:
        self.reading = True

    def watch(self, path: FilePath[str], mask: int, autoAdd: bool, callbacks: list[Any], recursive: bool) -> None:
        self.watches.append((path.path, mask, autoAdd, recursive))
        self.callbacks.extend(callbacks)

    def connectionLost(self, reason: object) -> None:
        self.lost = True

    def change(self, path: str) -> None:
        for callback in self.callbacks:
            callback(None, FilePath(path), inotify.IN_CLOSE_WRITE)


def test_changes_settle_into_one_restart(tmp_path: Path) -> None:
    """Matching changes within the settling second make one restart, fired a second after the first; others none."""
    (tmp_path / "src").mkdir()
    restarts: list[int] = []
    clock = Clock()
    notifier = FakeNotifier()
    service = WatchService([f"{tmp_path}/src/**/*.php"], lambda: restarts.append(1), clock=clock, notifier=lambda: notifier,
                           settle=1.0)
    service.startService()
    mask = (inotify.IN_CLOSE_WRITE | inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM
            | inotify.IN_DELETE | inotify.IN_ATTRIB)
    assert (notifier.reading, notifier.watches) == (True, [(f"{tmp_path}/src", mask, True, True)])
    notifier.change(f"{tmp_path}/src/README.md")
    clock.advance(2)
    assert (restarts, service.restarts) == ([], 0)
    notifier.change(f"{tmp_path}/src/a/b.php")
    clock.advance(0.5)
    notifier.change(f"{tmp_path}/src/c.php")
    assert restarts == []
    clock.advance(0.5)
    assert (restarts, service.restarts) == ([1], 1)
    clock.advance(2)
    assert restarts == [1]
    notifier.change(f"{tmp_path}/src/c.php")
    clock.advance(1)
    assert restarts == [1, 1]


def test_stop_cancels_a_pending_restart(tmp_path: Path) -> None:
    """A restart pending when the service stops never fires, and the notifier is closed."""
    restarts: list[int] = []
    clock = Clock()
    notifier = FakeNotifier()
    service = WatchService([f"{tmp_path}/*.php"], lambda: restarts.append(1), clock=clock, notifier=lambda: notifier)
    service.startService()
    notifier.change(f"{tmp_path}/a.php")
    service.stopService()
    clock.advance(2)
    assert (restarts, notifier.lost, clock.getDelayedCalls()) == ([], True, [])


def test_a_missing_folder_is_not_watched(tmp_path: Path) -> None:
    """A glob whose fixed folder does not exist watches nothing (and says so in the log) instead of failing."""
    notifier = FakeNotifier()
    service = WatchService([f"{tmp_path}/nope/*.php"], lambda: None, clock=Clock(), notifier=lambda: notifier)
    service.startService()
    assert notifier.watches == []
