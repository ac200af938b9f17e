"""The one serving process's reload on a MemoryReactorClock: what its log line says changed."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher

from fephp.server.config import config_from_dict, load_config
from fephp.server.running import SingleServer
from fephp.server.settings import changed_sections

#: php-fpm at an address nothing connects to (the reactor is a fake), and no real listener.
BASE = """\
server: {listen: ["tcp:0:interface=127.0.0.1"]}
php: {fpm_socket: "127.0.0.1:9"}
"""


def reload_log(site: Path, extra: str) -> list[str]:
    """The reload's info lines, after a SingleServer built from BASE reloads a file that is BASE plus *extra*."""
    path = site / "fephp.yaml"
    path.write_text(BASE)
    server = SingleServer(load_config(str(path)), BASE, MemoryReactorClock())
    path.write_text(BASE + extra)
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        switched = server.reload()
    finally:
        globalLogPublisher.removeObserver(observer)
    assert switched.result is True
    return [formatEvent(e) for e in events if (formatEvent(e) or "").startswith("reload:")]


@pytest.mark.parametrize(
    ("extra", "changed"),
    [
        ("compression: {min_size: 1024}\n", "compression changed"),
        ("static: {memory_cache_size: 0}\n", "static changed"),
        ("compression: {enabled: false}\nstatic: {memory_cache_size: 0}\n", "compression, static changed"),
        ("timeouts: {response: 7}\n", "timeouts changed"),
        ("", "nothing changed"),
    ],
)
def test_the_reload_log_names_the_sections_that_changed(site: Path, extra: str, changed: str) -> None:
    """A reload that changes only compression, only static, both, another section or nothing says exactly that."""
    path = site / "fephp.yaml"
    assert reload_log(site, extra) == [f"reload: serving the configuration in {path} ({changed})"]


def test_changed_sections_are_the_config_dataclass_sections(site: Path) -> None:
    """Every section of Config is compared, in its declared order; the file name is not a section."""
    old = config_from_dict({}, source="a.yaml", base_dir=str(site))
    new = config_from_dict(
        {"server": {"workers": 2}, "php": {"queue_size": 8}, "timeouts": {"response": 7}, "limits": {"max_header_size": 4096},
         "logging": {"level": "warn"}, "admin": {"listen": ["tcp:0:interface=127.0.0.1"]},
         "compression": {"min_size": 1024}, "static": {"memory_cache_size": 0}},
        source="b.yaml", base_dir=str(site),
    )
    assert changed_sections(old, new) == ["server", "php", "timeouts", "limits", "logging", "admin", "compression", "static"]
    assert changed_sections(old, config_from_dict({}, source="b.yaml", base_dir=str(site))) == []
