"""fephp's own log, from the server's side: the level filter and the form (text or JSON) put in front of twistd's observers, and their reopening.

twistd installs its observer (``--logfile``, syslog or stdout) with
``beginner.beginLoggingTo()`` after makeService returns; :func:`setup_logging`
wraps that call once, so the level filter and the JSON form apply to every
event, those logged before it (kept by the beginner and replayed) included.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable, Optional

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogBeginner,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import provider

from .._twisted import observer_file

__all__ = ["LogFiles", "filter_log_level", "json_log_observer", "setup_logging"]


class LogFiles:
    """The files fephp's log goes to, as twistd opened them; :meth:`reopen` after logrotate moved them."""

    def __init__(self) -> None:
        self.files: list[Any] = []

    def reopen(self) -> None:
        for f in self.files:
            reopen = getattr(f, "reopen", None)  # twistd's LogFile; stdout has none
            if reopen is not None:
                reopen()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def json_log_observer(out: Any) -> ILogObserver:
    """One JSON object per line: time (UTC, ms), level, namespace, system, the message, and the event's own fields."""

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        t = event.get("log_time", time.time())
        record: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000),
            "level": getattr(event.get("log_level"), "name", "info"),
            "namespace": event.get("log_namespace"),
            "system": event.get("log_system"),
            "message": formatEvent(event),
        }
        for key, value in event.items():
            if not key.startswith("log_") and key not in record and key != "format" and key != "message":
                record[key] = value if isinstance(value, (str, int, float, bool, type(None))) else _plain(value)
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        out.write(json.dumps(record, default=_plain) + "\n")
        out.flush()

    return observe


def setup_logging(level: str, form: str = "text", beginner: LogBeginner = globalLogBeginner) -> LogFiles:
    """Make the observers twistd is about to install drop events below *level* and write *form*; returns their files."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    begin = beginner.beginLoggingTo
    files = LogFiles()

    def wrapped(observers: Iterable[ILogObserver], *args: Any, **kwargs: Any) -> None:
        beginner.beginLoggingTo = begin  # type: ignore[method-assign]  # once
        out = []
        for observer in observers:
            f: Optional[Any] = observer_file(observer)
            if f is not None:
                files.files.append(f)
                if form == "json":
                    observer = json_log_observer(f)
            out.append(FilteringLogObserver(observer, [predicate]))
        begin(out, *args, **kwargs)

    beginner.beginLoggingTo = wrapped  # type: ignore[method-assign]
    return files


def filter_log_level(level: str, beginner: LogBeginner = globalLogBeginner) -> None:
    """The level filter alone (text form)."""
    setup_logging(level, "text", beginner)
