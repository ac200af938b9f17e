"""The access log, from the site's side: one line per finished request, combined or JSON, written out within a second.

:func:`combined_line` and :func:`json_line` are pure (a request's facts in,
a line out); :class:`AccessLog` holds the lines of up to
:data:`FLUSH_INTERVAL` seconds (or :data:`MAX_BUFFER` bytes) and writes them
in one go, so a crash loses at most that, and :meth:`AccessLog.reopen` starts
a new file where logrotate moved the old one.

What is never written: Cookie and Authorization (no line has a field for
them), and the values of the query parameters the configuration names
secret (``logging.secret_query``), which :func:`redact_query` replaces.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Optional, Sequence

from .._compat import SLOTS

__all__ = [
    "FLUSH_INTERVAL",
    "MAX_BUFFER",
    "AccessLog",
    "LoggedRequest",
    "combined_line",
    "json_line",
    "logged_request",
    "redact_query",
    "secret_names",
]

#: Seconds a line may wait in memory before it is written.
FLUSH_INTERVAL = 1.0
#: Bytes of lines held before they are written at once.
MAX_BUFFER = 64 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(**SLOTS)
class LoggedRequest:
    """What the access log says about one request.

    Read-only by convention, not a frozen dataclass: one is made per request
    while the access log is on, and a frozen one's ``__init__`` sets each of
    its 13 fields through ``object.__setattr__``.
    """

    time: float  # when it ended, seconds since the epoch
    remote: str  # the client's address ("-" when it has none), as the site's trusted-proxy rules set it
    method: bytes
    uri: bytes  # already redacted
    protocol: bytes
    status: int
    bytes_sent: int
    duration: float  # seconds, from the end of the request head to the end of the response
    php_duration: Optional[float]  # seconds PHP took, None when PHP did not run
    backend: Optional[str]
    request_id: bytes
    referer: Optional[bytes]
    user_agent: Optional[bytes]


def logged_request(exchange: Any, now: float, secret: "frozenset[bytes]") -> LoggedRequest:
    """What the log says of *exchange* (an :class:`fephp.web.exchange.Exchange`), finished at *now* (monotonic)."""
    php = None
    started, ended = exchange.php_started_at, exchange.php_ended_at
    if started is not None and ended is not None:
        php = ended - started
    host = exchange.client.host
    referer = agent = None
    for name, value in exchange.headers:  # the first of each, as the log always took it
        if name == b"referer":
            if referer is None:
                referer = value
        elif name == b"user-agent" and agent is None:
            agent = value
    return LoggedRequest(
        time=time.time(),
        remote=host if host and host != "unix:" else "-",
        method=exchange.method,
        uri=redact_query(exchange.target, secret),
        protocol=exchange.version,
        status=exchange.status,
        bytes_sent=exchange.bytes_sent,
        duration=now - exchange.started_at,
        php_duration=php,
        backend=exchange.backend_name,
        request_id=exchange.request_id or b"-",
        referer=referer,
        user_agent=agent,
    )


def redact_query(uri: bytes, secret: "frozenset[bytes]") -> bytes:
    """*uri* with the value of each query parameter named in *secret* replaced by ``REDACTED``."""
    path, mark, query = uri.partition(b"?")
    if not mark or not secret:
        return uri
    pairs = []
    for pair in query.split(b"&"):
        name, equals, _ = pair.partition(b"=")
        pairs.append(name + b"=REDACTED" if equals and name in secret else pair)
    return path + b"?" + b"&".join(pairs)


def _quoted(value: bytes) -> str:
    """A header or URI for a quoted log field: non-ASCII and control bytes as ``\\xHH``, quotes escaped."""
    text = value.decode("ascii", "backslashreplace")
    if text.isprintable() and '"' not in text:
        return text
    out = []
    for c in text:
        if c == '"':
            out.append('\\"')
        elif c.isprintable():
            out.append(c)
        else:
            out.append("\\x%02x" % ord(c))
    return "".join(out)


_clf_second = -1
_clf_time = ""


def _clf_timestamp(when: float) -> str:
    """``[27/Nov/2026:05:52:01 +0000]``, formatted once a second."""
    global _clf_second, _clf_time
    second = int(when)
    if second != _clf_second:
        t = time.gmtime(second)
        _clf_time = "[%02d/%s/%04d:%02d:%02d:%02d +0000]" % (
            t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec,
        )
        _clf_second = second
    return _clf_time


def combined_line(entry: LoggedRequest, *, duration: bool = False) -> str:
    """The Combined Log Format line Twisted writes (the address quoted), then the request id and, if asked, the total ms."""
    line = '"%s" - - %s "%s %s %s" %d %s "%s" "%s" "%s"' % (
        entry.remote,
        _clf_timestamp(entry.time),
        _quoted(entry.method),
        _quoted(entry.uri),
        _quoted(entry.protocol),
        entry.status,
        entry.bytes_sent or "-",
        _quoted(entry.referer) if entry.referer else "-",
        _quoted(entry.user_agent) if entry.user_agent else "-",
        entry.request_id.decode("ascii"),
    )
    if duration:
        line += " %.3f" % (entry.duration * 1000)
    return line + "\n"


def json_line(entry: LoggedRequest) -> str:
    """One JSON object: the same facts, times in ms, absent headers as null."""
    t = entry.time
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)

    def text(value: Optional[bytes]) -> Optional[str]:
        return None if value is None else value.decode("utf-8", "backslashreplace")

    return json.dumps(
        {
            "time": stamp,
            "remote": entry.remote,
            "method": text(entry.method),
            "uri": text(entry.uri),
            "protocol": text(entry.protocol),
            "status": entry.status,
            "bytes": entry.bytes_sent,
            "duration_ms": round(entry.duration * 1000, 3),
            "php_ms": None if entry.php_duration is None else round(entry.php_duration * 1000, 3),
            "backend": entry.backend,
            "request_id": text(entry.request_id),
            "referer": text(entry.referer),
            "user_agent": text(entry.user_agent),
        },
        separators=(",", ":"),
    ) + "\n"


class AccessLog:
    """Lines held in memory and written at least every :data:`FLUSH_INTERVAL` seconds, to a file or stdout.

    States: open (lines buffered, a flush scheduled while any wait), closed
    (:meth:`close` wrote the rest; lines are dropped).  *call_later* is the
    reactor's (or a test clock's) ``callLater``.
    """

    def __init__(
        self,
        path: str,
        call_later: Callable[..., Any],
        *,
        stdout: Optional[IO[str]] = None,
        flush_interval: float = FLUSH_INTERVAL,
        max_buffer: int = MAX_BUFFER,
    ) -> None:
        self.path = path
        self._call_later = call_later
        self._stdout = stdout
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._lines: list[str] = []
        self._size = 0
        self._timer: Any = None
        self._file: Optional[IO[str]] = None
        self._closed = False
        self._open()

    def _open(self) -> None:
        if self.path == "-":
            self._file = self._stdout if self._stdout is not None else sys.stdout
        else:
            # Line endings as written; appends from several worker processes
            # stay whole lines (O_APPEND, one write per flush).
            self._file = open(self.path, "a", encoding="utf-8", newline="\n")

    def write(self, line: str) -> None:
        if self._closed:
            return
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.max_buffer:
            self.flush()
        elif self._timer is None:
            self._timer = self._call_later(self.flush_interval, self._timed_flush)

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write every held line now."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        lines, self._lines, self._size = self._lines, [], 0
        if lines and self._file is not None:
            self._file.write("".join(lines))
            self._file.flush()

    def reopen(self) -> None:
        """Write what is held to the old file, then open the path anew (after logrotate moved it)."""
        self.flush()
        if self.path != "-" and not self._closed:
            old = self._file
            self._open()
            if old is not None:
                old.close()

    def close(self) -> None:
        self.flush()
        self._closed = True
        if self.path != "-" and self._file is not None:
            self._file.close()
        self._file = None


def secret_names(names: Sequence[str]) -> "frozenset[bytes]":
    """``logging.secret_query`` as the byte strings :func:`redact_query` compares."""
    return frozenset(name.encode("utf-8") for name in names)
