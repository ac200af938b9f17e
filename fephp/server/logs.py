"""fephp's own log, from the server's side: the level filter put in front of twistd's observers."""

from __future__ import annotations

from typing import Any, Iterable

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogBeginner,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
)

__all__ = ["filter_log_level"]


def filter_log_level(level: str, beginner: LogBeginner = globalLogBeginner) -> None:
    """Make the log observers twistd is about to install drop events below *level*.

    twistd installs its observer (``--logfile``, syslog or stdout) with
    ``beginner.beginLoggingTo()`` after makeService returns, so the filter
    wraps the observers at that call, once.  Events logged before it (kept by
    the beginner and replayed) are filtered too.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    begin = beginner.beginLoggingTo

    def filtered(observers: Iterable[ILogObserver], *args: Any, **kwargs: Any) -> None:
        beginner.beginLoggingTo = begin  # type: ignore[method-assign]  # once
        begin([FilteringLogObserver(o, [predicate]) for o in observers], *args, **kwargs)

    beginner.beginLoggingTo = filtered  # type: ignore[method-assign]
