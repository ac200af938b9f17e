"""PHP workers kept booted, from fephp's side: a pool of PHP CLI processes speaking RoadRunner's protocol over pipes.

:class:`WorkerBackend` provides :class:`fephp.backend.interface.Backend`, so
the PHP resource runs it as it runs the FastCGI pool: the CGI environment
the resource builds becomes RoadRunner's request context
(:func:`worker_context`), and the worker's answer (status, headers, body
frames) becomes CGI output for the sink (:func:`cgi_head`).

What it guarantees:

- ``count`` workers are kept running (spawned with Twisted's process
  support: the protocol on the child's stdin and stdout, its stderr logged);
  each runs one request at a time;
- requests beyond the idle workers wait in a queue of at most
  ``queue_size`` (503 when full, 503 after ``queue_timeout``), as in the
  FastCGI pool;
- a request that runs longer than ``exec_timeout`` gets 504 and its worker
  is killed (SIGKILL) and replaced, never given another request;
- a worker is retired gracefully (the stop control frame) and replaced after
  ``max_jobs`` requests, when its RSS passes ``max_memory``, after ``ttl``
  seconds of life or ``idle_ttl`` seconds without a request
  (:func:`restart_reason`);
- a worker that exits before the pid handshake is a boot failure; after
  ``max_consecutive_failures`` in a row the backend is unhealthy
  (:meth:`WorkerBackend.health`) and waiting requests fail with 502 until a
  worker boots again; boots are retried with backoff.

The states of one worker (:class:`WorkerState`)::

    BOOTING --pid handshake answered--> IDLE --a request--> BUSY --the response ended--> IDLE
    BUSY --the response ended, restart_reason--> STOPPING --exited--> GONE
    IDLE --ttl, idle_ttl, close()--> STOPPING
    BUSY --exec_timeout--> KILLED --exited--> GONE
    any --exited--> GONE
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import deque
from enum import Enum
from typing import Any, Callable, Mapping, Optional, Sequence, cast
from urllib.parse import quote

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._deferreds import Waiters, chained
from .._stats import QUEUE_WAIT_BOUNDS, Histogram
from ..roadrunner import (
    DEFAULT_MAX_PAYLOAD,
    ClientConnection,
    ClientState,
    Event,
    InformationalResponse,
    JobError,
    Ping,
    ProtocolError,
    ResponseBody,
    ResponseEnd,
    ResponseHead,
    UploadedFile,
    WorkerReady,
    WorkerStopping,
    cookies_from_headers,
    encode_request_context,
)
from ..cgi.multipart import FilePart, MultipartError, MultipartLimits, ParsedBody, boundary_of, parse_multipart
from .errors import BackendClosed, BackendError, BackendProtocolError, ConnectError, PoolOverloaded, QueueTimeout, ResponseTimeout
from .interface import Body, Params, ResponseSink

__all__ = [
    "RESTART_REASONS",
    "BadRequestBody",
    "RequestTooLarge",
    "WorkerBackend",
    "WorkerJobFailed",
    "WorkerState",
    "cgi_head",
    "read_rss",
    "restart_reason",
    "multipart_form",
    "worker_context",
]

#: Why a worker was replaced, as /status and /metrics count them.
RESTART_REASONS = (
    "max_jobs", "max_memory", "ttl", "idle_ttl", "exec_timeout", "crash", "boot_failure", "worker_stop", "error",
)
#: Seconds a worker told to stop may take to exit before it is killed.
STOP_GRACE = 5.0
#: Lines of a worker's stderr logged apart from a request are cut to this many characters.
_LOG_LINE = 2000


class WorkerJobFailed(BackendError):
    """The worker reported its job failed (an ERROR frame) before any response: 500, as RoadRunner answers."""

    http_status = 500


class RequestTooLarge(BackendError):
    """The request does not fit in one frame of the protocol (fephp.roadrunner's payload bound)."""

    http_status = 413


class BadRequestBody(BackendError):
    """A multipart/form-data body the front could not parse for the worker (PHP's command line parses none)."""

    http_status = 400


class WorkerState(Enum):
    """Where one worker process is; the one field its life is kept in."""

    BOOTING = "booting"
    IDLE = "idle"
    BUSY = "busy"
    #: Told to stop (the stop control frame); it leaves its loop and exits.
    STOPPING = "stopping"
    #: Killed (SIGKILL) in the middle of a request.
    KILLED = "killed"
    GONE = "gone"


# -- the request: CGI params in, RoadRunner's context out ------------------------------------------

#: CGI variables that name a request header without the HTTP_ prefix (RFC 3875 4.1.2, 4.1.3).
_CONTENT = {b"CONTENT_TYPE": "Content-Type", b"CONTENT_LENGTH": "Content-Length"}
#: HTTP_* copies of those two (nginx's and fephp's environment has both) and Host, which Go keeps out of
#: RoadRunner's header map (the URI carries it).
_SKIPPED_HEADERS = frozenset((b"HTTP_CONTENT_TYPE", b"HTTP_CONTENT_LENGTH", b"HTTP_HOST"))


def _header_name(variable: bytes) -> str:
    """``HTTP_X_REQUEST_ID`` -> ``X-Request-Id`` (Go's canonical form, as RoadRunner sends names)."""
    return "-".join(part.capitalize() for part in variable[5:].decode("latin-1").split("_"))


def multipart_form(
    params: Params, body: Body, upload_dir: str, limits: MultipartLimits = MultipartLimits()
) -> Optional[ParsedBody]:
    """A multipart/form-data body parsed into its fields and uploads (files in *upload_dir*), or None for another body.

    PHP's command-line mode does not parse a POST body as php-fpm does, so
    the front does it and the worker gets RoadRunner's ``uploads`` and the
    form (:func:`worker_context`).  :class:`MultipartError` for a malformed one.
    """
    if body is None:
        return None
    content_type = next((value for name, value in params if name == b"CONTENT_TYPE"), b"")
    boundary = boundary_of(content_type) if content_type[:19].lower() == b"multipart/form-data" else None
    if boundary is None:
        return None
    raw = bytes(body) if isinstance(body, (bytearray, memoryview)) else body
    return parse_multipart(raw, boundary, upload_dir, limits)


def _uploads(tree: object) -> Any:
    """The uploads tree with RoadRunner's UploadedFile at its leaves."""
    if isinstance(tree, FilePart):
        return UploadedFile(tree.name, tree.mime, tree.size, tree.tmp_name, tree.error)
    if isinstance(tree, dict):
        return {key: _uploads(sub) for key, sub in tree.items()}
    assert isinstance(tree, list)
    return [_uploads(sub) for sub in tree]


def worker_context(params: Params, body: Body, form: Optional[ParsedBody] = None) -> "tuple[bytes, bytes]":
    """The request context (JSON) and the payload body that carry one request to a worker.

    *params* is the CGI environment :mod:`fephp.web.php` builds (client
    address after ``trusted_proxies``, HTTPS, the request id among the
    headers); *body* is read whole (it is bounded by ``limits.max_body_size``
    before it gets here).  The request id also goes in the attributes as
    ``requestId``.  With *form* (:func:`multipart_form`) the context is
    ``parsed`` and carries the uploads, and the payload is the form as JSON
    (RoadRunner's handler does the same with a form it parsed).
    """
    env = dict(params)
    https = b"HTTPS" in env or env.get(b"REQUEST_SCHEME") == b"https"
    scheme = "https" if https else "http"
    host = env.get(b"HTTP_HOST", b"").decode("latin-1")
    if not host:
        port = env.get(b"SERVER_PORT", b"").decode("latin-1")
        host = env.get(b"SERVER_NAME", b"localhost").decode("latin-1")
        if port and port != ("443" if https else "80"):
            host = f"{host}:{port}"
    # RoadRunner's uri is Go's URL.String(): the target as received, bytes outside ASCII escaped.
    target = quote(env.get(b"REQUEST_URI", b"/"), safe="/?#[]@!$&'()*+,;=:%-._~")
    headers: list[tuple[str, bytes]] = []
    for name, value in params:
        if name in _CONTENT:
            if value:
                headers.append((_CONTENT[name], value))
        elif name[:5] == b"HTTP_" and name not in _SKIPPED_HEADERS:
            headers.append((_header_name(name), value))
    cookie = env.get(b"HTTP_COOKIE")
    request_id = env.get(b"HTTP_X_REQUEST_ID")
    context = encode_request_context(
        method=env.get(b"REQUEST_METHOD", b"GET").decode("latin-1"),
        uri=f"{scheme}://{host}{target}",
        headers=headers,
        remote_addr=env.get(b"REMOTE_ADDR", b"").decode("latin-1"),
        protocol=env.get(b"SERVER_PROTOCOL", b"HTTP/1.1").decode("latin-1"),
        raw_query=env.get(b"QUERY_STRING", b"").decode("latin-1"),
        cookies=cookies_from_headers([cookie]) if cookie else (),
        attributes={"requestId": request_id.decode("latin-1")} if request_id else None,
        parsed=form is not None,
        uploads=_upload_map(form),
    )
    if form is not None:
        return context, json.dumps(form.form.to_plain(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return context, _read_body(body)


def _upload_map(form: Optional[ParsedBody]) -> Optional[dict[str, Any]]:
    if form is None or not form.uploads.items:
        return None
    tree = _uploads(form.uploads.to_plain())
    return {str(i): sub for i, sub in enumerate(tree)} if isinstance(tree, list) else tree  # type: ignore[no-any-return]


def _read_body(body: Body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    return body.read()


def cgi_head(status: int, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The worker's status and headers as the CGI response head the sink parses (RFC 3875 6.3.3).

    A header named Status from the worker is dropped: the status is the context's.
    """
    out = [b"Status: %d\r\n" % status]
    for name, value in headers:
        if name.lower() != b"status":
            out.append(name + b": " + value + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def read_rss(pid: int) -> Optional[int]:
    """A process's resident set in bytes, from /proc/<pid>/statm (its second field, in pages); None if unreadable."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def restart_reason(
    *,
    jobs: int,
    max_jobs: int,
    rss: Optional[int],
    max_memory: int,
    age: float,
    ttl: float,
    reusable: bool,
) -> Optional[str]:
    """Why a worker that just ended a request is retired instead of kept, or None to keep it.

    *reusable* is the codec's word that the worker may take another request
    (a failure in the middle of a stream, or a worker that asked to stop, is not).
    Limits of 0 are off.
    """
    if not reusable:
        return "error"
    if max_jobs and jobs >= max_jobs:
        return "max_jobs"
    if max_memory and rss is not None and rss > max_memory:
        return "max_memory"
    if ttl and age >= ttl:
        return "ttl"
    return None


# -- one request ------------------------------------------------------------------------------------


@implementer(IPushProducer)
class _Job:
    """One request's way through the backend: queued, then run on one worker; the producer its sink pauses."""

    def __init__(self, backend: "WorkerBackend", params: Params, body: Body, sink: ResponseSink) -> None:
        self.backend = backend
        self.params = params
        self.body = body
        self.sink = sink
        self.deferred: Deferred[int] = Deferred(self._cancel)
        self.since = backend._clock.seconds()
        self.timer: Optional[IDelayedCall] = None
        self.worker: Optional[_Worker] = None
        #: The caller went away: the worker finishes (or stops its stream), the output is dropped.
        self.abandoned = False
        self.got_output = False
        #: The context and payload, made once (a job a stopping worker gave back runs again on another).
        self.prepared: Optional[tuple[bytes, bytes]] = None
        #: A multipart body's parsed form: its upload files are removed once no worker can read them.
        self.form: Optional[ParsedBody] = None

    def remove_files(self) -> None:
        """The request is over for the worker (answered, failed, or the worker gone): its upload files go."""
        if self.form is not None:
            self.form.remove_files()

    # IPushProducer: a slow client pauses the worker's stdout (the worker blocks on its pipe).
    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        worker = self.worker
        if worker is not None and worker.job is self and worker.transport is not None:
            cast(Any, worker.transport).pauseProducing()  # twisted.internet.process.Process has it

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        worker = self.worker
        if worker is not None and worker.job is self and worker.transport is not None:
            cast(Any, worker.transport).resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.abandon()

    def _cancel(self, _: object) -> None:
        self.backend.aborts += 1
        self.abandon()

    def abandon(self) -> None:
        """The caller is gone: leave the queue, or let the worker end (stopping a stream) with nobody listening."""
        if self.abandoned:
            return
        self.abandoned = True
        worker = self.worker
        if worker is None:
            self.backend._forget_waiter(self)
            return
        if worker.job is self:
            self.resumeProducing()  # nobody reads: let the worker's output drain
            if worker.client.state is ClientState.STREAMING:
                worker.write(worker.client.stop_stream())

    def fail(self, error: Exception) -> None:
        if not self.deferred.called:
            self.backend._count_error(error)
            self.deferred.errback(Failure(error))

    def succeed(self) -> None:
        if not self.deferred.called:
            self.deferred.callback(0)


# -- one worker process -----------------------------------------------------------------------------


class _Worker(ProcessProtocol):
    """One PHP worker process: fephp's end of its pipes, on the codec's ClientConnection."""

    log = Logger()

    def __init__(self, backend: "WorkerBackend") -> None:
        self.backend = backend
        self.client = ClientConnection(max_payload=backend.max_payload)
        self.state = WorkerState.BOOTING
        self.pid = 0
        self.jobs = 0
        self.job: Optional[_Job] = None
        self.born = backend._clock.seconds()
        #: The boot timeout, the exec timeout, the idle ttl or the stop grace: one at a time.
        self.timer: Optional[IDelayedCall] = None
        self.ttl_call: Optional[IDelayedCall] = None
        self.expired = False
        self._err = b""

    # -- output to the worker --------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.state is not WorkerState.GONE:
            self.transport.write(data)

    def set_timer(self, delay: Optional[float], call: Callable[[], None]) -> None:
        self.cancel_timer()
        if delay:
            self.timer = self.backend._clock.callLater(delay, call)

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def kill(self) -> None:
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except Exception:
            pass  # exited already, not reaped yet

    # -- ProcessProtocol ----------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.pid = getattr(self.transport, "pid", 0) or 0
        self.write(self.client.start())
        self.set_timer(self.backend.boot_timeout, self._boot_timed_out)

    def outReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.state in (WorkerState.KILLED, WorkerState.GONE):
            return
        try:
            events = self.client.receive_data(data)
        except ProtocolError as e:
            self._broken(str(e))
            return
        for event in events:
            self._event(event)
        job = self.job
        if job is not None and job.got_output and not job.abandoned:
            job.sink.flush()

    def errReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        job = self.job
        if job is not None and not job.abandoned:
            job.sink.stderr_received(data)
            return
        # Apart from a request (at boot, between requests): fephp's log, line by line.
        lines = (self._err + data).split(b"\n")
        self._err = lines.pop()[-_LOG_LINE:]
        for line in lines:
            if line.strip():
                self.log.warn("PHP worker {pid}: {php_stderr}", pid=self.pid,
                              php_stderr=line[:_LOG_LINE].decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        if self._err.strip():
            self.log.warn("PHP worker {pid}: {php_stderr}", pid=self.pid, php_stderr=self._err.decode("utf-8", "replace"))
            self._err = b""
        self.cancel_timer()
        if self.ttl_call is not None and self.ttl_call.active():
            self.ttl_call.cancel()
        was = self.state
        self.state = WorkerState.GONE
        self.backend._worker_ended(self, was, reason)

    # -- the codec's events --------------------------------------------------------

    def _event(self, event: Event) -> None:
        job = self.job
        if isinstance(event, WorkerReady):
            self.cancel_timer()
            self.backend._booted(self)
        elif job is None:
            return  # WorkerReady is the only event outside a request (the codec refuses others)
        elif isinstance(event, ResponseHead):
            job.got_output = True
            if not job.abandoned:
                job.sink.stdout_received(cgi_head(event.status, event.headers))
        elif isinstance(event, ResponseBody):
            job.got_output = True
            if not job.abandoned:
                job.sink.stdout_received(event.data)
        elif isinstance(event, Ping):
            self.write(self.client.pong())
        elif isinstance(event, ResponseEnd):
            job.succeed()
            self.backend._job_ended(self)
        elif isinstance(event, JobError):
            self.log.error("PHP worker {pid}: the request failed: {message}", pid=self.pid, message=event.message[:_LOG_LINE])
            if event.response_started:
                job.fail(BackendClosed("the worker failed in the middle of its response", response_started=True))
            else:
                job.fail(WorkerJobFailed(f"the worker's job failed: {event.message[:200]}"))
            self.backend._job_ended(self)
        elif isinstance(event, WorkerStopping):
            # The request was not run: another worker takes it (RoadRunner's static_pool does the same).
            self.job = None
            self.backend._worker_asked_to_stop(self, job)
        elif isinstance(event, InformationalResponse):
            pass  # a 103 from the worker: the front's own Early Hints cover it

    def _broken(self, error: str) -> None:
        self.log.error("PHP worker {pid} broke the protocol: {error}", pid=self.pid, error=error)
        job = self.job
        if job is not None:
            job.fail(BackendProtocolError(f"the worker broke the protocol: {error}"))
        self.backend._kill(self, "error")

    def _boot_timed_out(self) -> None:
        self.timer = None
        self.log.error("PHP worker {pid} did not answer the pid handshake within {timeout} s; killing it",
                       pid=self.pid, timeout=self.backend.boot_timeout)
        self.kill()

    def exec_timed_out(self) -> None:
        self.timer = None
        job = self.job
        backend = self.backend
        self.log.error("PHP worker {pid}: request running over exec_timeout ({timeout} s); killing the worker",
                       pid=self.pid, timeout=backend.exec_timeout)
        if job is not None:
            job.fail(ResponseTimeout(f"the worker ran the request for over {backend.exec_timeout:g} s"))
        backend._kill(self, "exec_timeout")


# -- the backend ------------------------------------------------------------------------------------


def _spawner(reactor: Any, argv: Sequence[str], env: Mapping[str, str], cwd: Optional[str]) -> Callable[[ProcessProtocol], Any]:
    def spawn(proto: ProcessProtocol) -> Any:
        # fds 0 and 1 are the protocol's, 2 the worker's stderr.
        return reactor.spawnProcess(proto, argv[0], list(argv), env=dict(env), path=cwd,
                                    childFDs={0: "w", 1: "r", 2: "r"})

    return spawn


class WorkerBackend:
    """``count`` PHP worker processes for one site; provides :class:`fephp.backend.interface.Backend`.

    *argv* is the command that runs one worker (the php binary, its ``-d``
    settings, the worker script); *env* is its whole environment (nothing
    of fephp's own is inherited).  *spawn* replaces the reactor's
    spawnProcess in unit tests; *rss* replaces :func:`read_rss`.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Optional[str] = None,
        count: int = 1,
        max_jobs: int = 0,
        max_memory: int = 0,
        ttl: float = 0.0,
        idle_ttl: float = 0.0,
        exec_timeout: float = 60.0,
        boot_timeout: float = 60.0,
        max_consecutive_failures: int = 3,
        queue_size: int = 1024,
        queue_timeout: float = 30.0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        upload_dir: Optional[str] = None,
        form_limits: MultipartLimits = MultipartLimits(),
        name: str = "php workers",
        spawn: Optional[Callable[[ProcessProtocol], Any]] = None,
        rss: Callable[[int], Optional[int]] = read_rss,
        backoff: Callable[[int], float] = backoffPolicy(0.1, 5.0, 2.0, jitter=lambda: 0.0),
    ) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self._clock: IReactorTime = reactor
        self.argv = tuple(argv)
        self.count = count
        self.max_jobs = max_jobs
        self.max_memory = max_memory
        self.ttl = ttl
        self.idle_ttl = idle_ttl
        self.exec_timeout = exec_timeout
        self.boot_timeout = boot_timeout
        self.max_consecutive_failures = max_consecutive_failures
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.max_payload = max_payload
        #: Where a multipart body's files go for the worker (``tempfile.gettempdir()`` unless given).
        self.upload_dir = upload_dir or tempfile.gettempdir()
        #: Bounds on such a body (``php.worker.max_form_*``): past one, 400.
        self.form_limits = form_limits
        self.name = name
        self._spawn = spawn or _spawner(reactor, argv, env, cwd)
        self._rss = rss
        self._backoff = backoff
        self._workers: set[_Worker] = set()  # every process not GONE
        self._idle: list[_Worker] = []
        self._waiters: deque[_Job] = deque()
        self._respawn: Optional[IDelayedCall] = None
        self._closed = False
        self._gone: Waiters[None] = Waiters()
        self._ready: Waiters[None] = Waiters()
        self._was_ready = False
        self._closing_when_idle: Optional[Deferred[None]] = None
        #: Boot failures in a row (reset by a worker that boots).
        self.consecutive_failures = 0
        self._last_failure = ""
        # What the admin side reads (figures()).
        self.immediate = 0
        self.queue_wait = Histogram(QUEUE_WAIT_BOUNDS)
        self.errors = {500: 0, 502: 0, 503: 0, 504: 0}
        self.aborts = 0
        self.restarts = {reason: 0 for reason in RESTART_REASONS}
        self.boots = 0
        # Spawned once the reactor runs: twistd builds the service before it forks into a daemon,
        # and children of the process that exits would never be reaped by the one that serves.
        when_running = getattr(reactor, "callWhenRunning", None)
        if when_running is not None:
            when_running(self._fill)
        else:
            self._fill()

    # -- Backend -----------------------------------------------------------------------

    def request(self, params: Params, body: Body, sink: ResponseSink) -> "Deferred[int]":
        """Run one request on an idle worker, or wait in the queue for one."""
        if self._closed:
            return fail(ConnectError("the PHP workers are shutting down"))
        job = _Job(self, params, body, sink)
        worker = self._take_idle()
        if worker is not None:
            self.immediate += 1
            self._run(worker, job)
            return job.deferred
        if not self.healthy:
            error = self._unavailable()
            self._count_error(error)
            return fail(error)
        if len(self._waiters) >= self.queue_size:
            error2 = PoolOverloaded(f"{len(self._waiters)} requests already wait for {self.name}")
            self._count_error(error2)
            return fail(error2)
        job.timer = self._clock.callLater(self.queue_timeout, self._queue_timed_out, job)
        self._waiters.append(job)
        return job.deferred

    def close(self) -> "Deferred[None]":
        """Refuse new requests, fail waiting ones, stop the idle workers and kill the busy ones.

        Fires once every worker process has exited.
        """
        self._closed = True
        if self._respawn is not None and self._respawn.active():
            self._respawn.cancel()
        self._respawn = None
        while self._waiters:
            job = self._waiters.popleft()
            self._cancel_timer(job)
            job.fail(ConnectError("the PHP workers are shutting down"))
        for worker in list(self._workers):
            if worker.state in (WorkerState.IDLE, WorkerState.BOOTING):
                self._retire(worker, None)
            elif worker.state is WorkerState.BUSY:
                # The server's stop gave requests in flight shutdown_grace already (a reload's old
                # backend closes only once they have ended): what still runs is cut.
                if worker.job is not None:
                    worker.job.fail(BackendClosed("fephp is stopping", response_started=worker.job.got_output))
                worker.state = WorkerState.KILLED
                worker.cancel_timer()
                worker.kill()
        if not self._workers:
            return succeed(None)
        return self._gone.wait()

    def drain(self) -> "Deferred[None]":
        """Close once every request given to the backend, waiting ones included, has ended (a reload's old backend)."""
        if self._closing_when_idle is None:
            self._closing_when_idle = Deferred()
            self._maybe_drained()
        return chained(self._closing_when_idle)

    def ready(self) -> "Deferred[None]":
        """Fires once ``count`` workers have booted; fails once the backend is unhealthy (a reload waits on it)."""
        if self._was_ready:
            return succeed(None)
        if not self.healthy:
            return fail(self._unavailable())
        return self._ready.wait()

    # -- health and figures ---------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False after ``max_consecutive_failures`` boot failures in a row, until a worker boots."""
        return self.consecutive_failures < self.max_consecutive_failures

    def health(self) -> "tuple[bool, str]":
        """Whether the backend can serve now, and why (for /readyz)."""
        if not self.healthy:
            return False, (f"{self.name}: {self.consecutive_failures} workers in a row failed to boot"
                           f" ({self._last_failure})")
        ready = sum(1 for w in self._workers if w.state in (WorkerState.IDLE, WorkerState.BUSY))
        if not ready:
            return False, f"{self.name}: no worker has booted yet"
        return True, f"{self.name}: {ready} of {self.count} workers ready"

    def pids(self) -> "list[int]":
        """The pids of the workers that serve (idle or busy)."""
        return sorted(w.pid for w in self._workers if w.state in (WorkerState.IDLE, WorkerState.BUSY))

    def figures(self) -> "dict[str, Any]":
        """The workers' state and counters, JSON-able, in the FastCGI pool's shape (for /metrics and /status)."""
        states = [w.state for w in self._workers]
        return {
            "name": self.name,
            "kind": "workers",
            "size": self.count,
            "idle": states.count(WorkerState.IDLE),
            "busy": states.count(WorkerState.BUSY),
            "connecting": states.count(WorkerState.BOOTING),
            "waiting": len(self._waiters),
            "immediate": self.immediate,
            "queue_wait": self.queue_wait.figures(),
            "connects_failed": self.restarts["boot_failure"],
            "retries": 0,
            "errors": {str(k): v for k, v in self.errors.items()},
            "aborts": self.aborts,
            "restarts": dict(self.restarts),
            "healthy": self.healthy,
        }

    # -- workers -------------------------------------------------------------------------

    def _live(self) -> int:
        """Workers that serve or will: the retiring ones (STOPPING, KILLED) are replaced already."""
        return sum(1 for w in self._workers if w.state in (WorkerState.BOOTING, WorkerState.IDLE, WorkerState.BUSY))

    def _fill(self) -> None:
        """Spawn workers up to ``count`` (none while a boot failure's backoff runs)."""
        while not self._closed and self._respawn is None and self._live() < self.count:
            worker = _Worker(self)
            self._workers.add(worker)
            try:
                self._spawn(worker)
            except Exception as e:
                self._workers.discard(worker)
                worker.state = WorkerState.GONE
                self._boot_failed(f"cannot start {self.argv[0]}: {e}")
                return

    def _booted(self, worker: _Worker) -> None:
        if self.consecutive_failures:
            self.log.info("{name}: a worker booted after {n} failures", name=self.name, n=self.consecutive_failures)
        self.consecutive_failures = 0
        self.boots += 1
        if self._closed:
            self._retire(worker, None)
            return
        if self.ttl:
            worker.ttl_call = self._clock.callLater(self.ttl, self._ttl_expired, worker)
        self._release(worker)
        if not self._was_ready and self._live() >= self.count and all(
            w.state is not WorkerState.BOOTING for w in self._workers
        ):
            self._was_ready = True
            self._ready.fire(None)

    def _boot_failed(self, why: str) -> None:
        self.consecutive_failures += 1
        self.restarts["boot_failure"] += 1
        self._last_failure = why
        self.log.error("{name}: a worker failed to boot ({n} in a row): {why}",
                       name=self.name, n=self.consecutive_failures, why=why)
        if not self.healthy:
            error = self._unavailable()
            self._ready.fail(error)
            if not any(w.state in (WorkerState.IDLE, WorkerState.BUSY) for w in self._workers):
                while self._waiters:
                    job = self._waiters.popleft()
                    self._cancel_timer(job)
                    job.fail(error)
        if not self._closed and self._respawn is None:
            self._respawn = self._clock.callLater(self._backoff(self.consecutive_failures), self._respawn_now)

    def _respawn_now(self) -> None:
        self._respawn = None
        self._fill()

    def _unavailable(self) -> ConnectError:
        return ConnectError(f"{self.name}: {self.consecutive_failures} workers in a row failed to boot ({self._last_failure})")

    def _take_idle(self) -> Optional[_Worker]:
        """The most recently used idle worker, now busy; None if there is none."""
        if not self._idle:
            return None
        worker = self._idle.pop()
        worker.cancel_timer()
        worker.state = WorkerState.BUSY
        return worker

    def _run(self, worker: _Worker, job: _Job) -> None:
        worker.state = WorkerState.BUSY
        worker.job = job
        job.worker = worker
        try:
            if job.prepared is None:
                job.form = multipart_form(job.params, job.body, self.upload_dir, self.form_limits)
                job.prepared = worker_context(job.params, job.body, job.form)
            frame = worker.client.send_request(*job.prepared)
        except MultipartError as e:
            worker.job = None
            job.remove_files()
            job.fail(BadRequestBody(f"the multipart body is malformed: {e}"))
            self._release(worker)
            return
        except (ValueError, OSError) as e:
            worker.job = None
            job.remove_files()
            error = RequestTooLarge(str(e)) if "exceeds the frame bound" in str(e) else BackendError(f"cannot send the request: {e}")
            job.fail(error)
            self._release(worker)
            return
        job.sink.response_started(cast(IPushProducer, job))
        worker.write(frame)
        worker.set_timer(self.exec_timeout, worker.exec_timed_out)

    def _job_ended(self, worker: _Worker) -> None:
        """The worker's response ended (or its job failed): keep it for the next request, or retire it."""
        worker.cancel_timer()
        job, worker.job = worker.job, None
        if job is not None:
            job.worker = None
            job.remove_files()
        worker.jobs += 1
        if worker.state is not WorkerState.BUSY:
            return
        reason = restart_reason(
            jobs=worker.jobs,
            max_jobs=self.max_jobs,
            rss=self._rss(worker.pid) if self.max_memory else None,
            max_memory=self.max_memory,
            age=self._clock.seconds() - worker.born,
            ttl=self.ttl,
            reusable=worker.client.idle,
        )
        if reason is None and worker.expired:
            reason = "ttl"
        if reason is not None:
            self._retire(worker, reason)
        else:
            self._release(worker)

    def _worker_asked_to_stop(self, worker: _Worker, job: Optional[_Job]) -> None:
        worker.cancel_timer()
        self._retire(worker, "worker_stop")
        if job is not None and not job.abandoned and not job.deferred.called:
            job.worker = None
            next_worker = self._take_idle()
            if next_worker is not None:
                self._run(next_worker, job)
            else:
                self._waiters.appendleft(job)
                job.timer = self._clock.callLater(self.queue_timeout, self._queue_timed_out, job)

    def _release(self, worker: _Worker) -> None:
        """*worker* is free: give it the next waiting request, or keep it idle."""
        if self._closed:
            self._retire(worker, None)
            return
        while self._waiters:
            job = self._waiters.popleft()
            self._cancel_timer(job)
            if job.deferred.called:
                continue
            self.queue_wait.observe(self._clock.seconds() - job.since)
            self._run(worker, job)
            return
        worker.state = WorkerState.IDLE
        self._idle.append(worker)
        if self.idle_ttl:
            worker.set_timer(self.idle_ttl, lambda: self._idle_expired(worker))
        self._maybe_drained()

    def _retire(self, worker: _Worker, reason: Optional[str]) -> None:
        """Stop *worker* gracefully (the stop frame, then EOF; SIGKILL after STOP_GRACE) and spawn its replacement."""
        if worker in self._idle:
            self._idle.remove(worker)
        if reason is not None:
            self.restarts[reason] += 1
            self.log.info("{name}: retiring worker {pid} ({reason})", name=self.name, pid=worker.pid, reason=reason)
        state = worker.client.state
        worker.state = WorkerState.STOPPING
        if state in (ClientState.NEW, ClientState.HANDSHAKE, ClientState.IDLE, ClientState.RETIRED):
            worker.write(worker.client.stop())
        try:
            worker.transport.closeStdin()  # type: ignore[union-attr]
        except Exception:
            pass
        worker.set_timer(STOP_GRACE, worker.kill)
        self._fill()
        self._maybe_drained()

    def _kill(self, worker: _Worker, reason: str) -> None:
        """SIGKILL *worker* (stuck, or broken) and spawn its replacement; it is never given another request."""
        if worker in self._idle:
            self._idle.remove(worker)
        self.restarts[reason] += 1
        worker.state = WorkerState.KILLED
        worker.cancel_timer()
        worker.kill()
        self._fill()

    def _worker_ended(self, worker: _Worker, was: WorkerState, reason: Failure) -> None:
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        job, worker.job = worker.job, None
        if job is not None:
            job.remove_files()
            job.fail(BackendClosed(f"the PHP worker {worker.pid} exited in the middle of the request",
                                   response_started=job.got_output))
        if was is WorkerState.BOOTING:
            self._boot_failed(f"the worker exited before the pid handshake: {reason.getErrorMessage()}")
        elif was in (WorkerState.IDLE, WorkerState.BUSY):
            self.restarts["crash"] += 1
            self.log.error("{name}: worker {pid} exited unasked: {why}", name=self.name, pid=worker.pid,
                           why=reason.getErrorMessage())
            self._fill()
        if not self._workers and self._closed:
            self._gone.fire(None)
        self._maybe_drained()

    def _ttl_expired(self, worker: _Worker) -> None:
        worker.ttl_call = None
        if worker.state is WorkerState.IDLE:
            self._retire(worker, "ttl")
        else:
            worker.expired = True

    def _idle_expired(self, worker: _Worker) -> None:
        worker.timer = None
        if worker.state is WorkerState.IDLE:
            self._retire(worker, "idle_ttl")

    # -- the queue -----------------------------------------------------------------------

    def _cancel_timer(self, job: _Job) -> None:
        if job.timer is not None and job.timer.active():
            job.timer.cancel()
        job.timer = None

    def _forget_waiter(self, job: _Job) -> None:
        self._cancel_timer(job)
        try:
            self._waiters.remove(job)
        except ValueError:
            pass
        self._maybe_drained()

    def _queue_timed_out(self, job: _Job) -> None:
        job.timer = None
        try:
            self._waiters.remove(job)
        except ValueError:
            return
        job.fail(QueueTimeout(f"no free PHP worker within {self.queue_timeout:g} s"))
        self._maybe_drained()

    def _count_error(self, error: BaseException) -> None:
        if isinstance(error, CancelledError):
            return
        status = getattr(error, "http_status", 502)
        self.errors[status] = self.errors.get(status, 0) + 1

    def _maybe_drained(self) -> None:
        draining = self._closing_when_idle
        if (
            draining is not None
            and not draining.called
            and not self._waiters
            and not any(w.job is not None for w in self._workers)
        ):
            self.close().chainDeferred(draining)

