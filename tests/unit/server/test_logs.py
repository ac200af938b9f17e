"""logging.level: the filter put in front of the observers twistd installs."""

from __future__ import annotations

import io
import types

from twisted.logger import LogBeginner, Logger, LogPublisher, formatEvent

from fephp.server.logs import filter_log_level


def test_log_level_filters_the_observers_twistd_installs() -> None:
    """filter_log_level wraps the observers given to the next beginLoggingTo: below the level nothing arrives, buffered or not."""
    publisher = LogPublisher()
    stdio = types.SimpleNamespace(stdout=io.StringIO(), stderr=io.StringIO())
    warnings = types.SimpleNamespace(showwarning=None)
    beginner = LogBeginner(publisher, io.StringIO(), stdio, warnings)  # type: ignore[arg-type]
    log = Logger(namespace="fephp.test", observer=publisher)
    filter_log_level("warn", beginner)
    log.info("buffered info")
    log.warn("buffered warn")
    seen: list[str] = []
    beginner.beginLoggingTo([lambda event: seen.append(formatEvent(event))], redirectStandardIO=False)
    log.debug("debug")
    log.error("error")
    assert seen == ["buffered warn", "error"]
