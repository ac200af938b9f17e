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


def test_json_form_writes_one_object_per_line_to_twistds_file(tmp_path) -> None:
    """With logging.format json, twistd's log file gets one JSON object per event, its fields beside the message; reopen starts a new file."""
    import json

    from twisted.logger import textFileLogObserver
    from twisted.python.logfile import LogFile

    from fephp.server.logs import setup_logging

    publisher = LogPublisher()
    stdio = types.SimpleNamespace(stdout=io.StringIO(), stderr=io.StringIO())
    warnings = types.SimpleNamespace(showwarning=None)
    beginner = LogBeginner(publisher, io.StringIO(), stdio, warnings)  # type: ignore[arg-type]
    log = Logger(namespace="fephp.test", observer=publisher)
    files = setup_logging("info", "json", beginner)
    logfile = LogFile.fromFullPath(str(tmp_path / "fephp.log"), rotateLength=None)
    beginner.beginLoggingTo([textFileLogObserver(logfile)], redirectStandardIO=False)
    log.warn("[{request_id}] PHP: {php_stderr}", request_id="r-1", php_stderr="oops", uri=b"/x.php")
    (tmp_path / "fephp.log").rename(tmp_path / "fephp.log.1")
    files.reopen()
    log.info("after")
    (line,) = (tmp_path / "fephp.log.1").read_text().splitlines()
    record = json.loads(line)
    assert {k: record[k] for k in ("level", "namespace", "message", "request_id", "php_stderr", "uri")} == {
        "level": "warn", "namespace": "fephp.test", "message": "[r-1] PHP: oops",
        "request_id": "r-1", "php_stderr": "oops", "uri": "/x.php",
    }
    assert json.loads((tmp_path / "fephp.log").read_text())["message"] == "after"
