"""php-cgi, one process per request: the slow fallback for hosts without php-fpm.

Every request forks and execs PHP, loads php.ini and starts the engine again
(no opcache between requests), so expect a few to a few dozen milliseconds of
overhead per request.  It exists for hosts where php-fpm cannot be installed;
use php-fpm (``php.use_fpm: true``) wherever it can.
"""

from __future__ import annotations

import io
import os
import signal
from typing import Any, Optional, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import BackendClosed, ConnectError, ResponseTimeout
from .interface import Body, Params, ResponseSink

__all__ = ["PHPCGIBackend"]


class PHPCGIBackend:
    """A :class:`fephp.backend.interface.Backend` that runs one php-cgi per request.

    The child's environment is exactly the request's CGI params, nothing from
    fephp's own environment (httpoxy, secrets in the service's env).
    *timeout* is the response timeout: php-cgi silent that long is killed and
    the request fails with :class:`ResponseTimeout` (504).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        binary: str,
        *,
        ini: Optional[dict[str, str]] = None,
        timeout: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self.binary = binary
        self.timeout = timeout
        # The argv is fixed: php-cgi never sees anything from the request on
        # its command line (CVE-2012-1823 came from a query string there).
        self._argv = [binary]
        for key, value in sorted((ini or {}).items()):
            self._argv += ["-d", f"{key}={value}"]
        self._running: set[_CGIProcess] = set()
        self._closed = False

    @property
    def running(self) -> int:
        """How many php-cgi processes are alive."""
        return len(self._running)

    def request(self, params: Params, body: Body, sink: ResponseSink) -> "Deferred[int]":
        """Run one php-cgi for this request; fires with its exit code once its output is done."""
        if self._closed:
            return fail(BackendClosed("the php-cgi backend is closed"))
        child = _CGIProcess(self, sink)
        env = {bytes(k): bytes(v) for k, v in params}
        try:
            if not os.access(self.binary, os.X_OK):
                raise OSError(f"{self.binary} is not an executable file")
            transport = self._reactor.spawnProcess(
                child, self.binary, self._argv, env=env, path=None, usePTY=False
            )
        except Exception as e:
            self.log.error("cannot start php-cgi {binary}: {error}", binary=self.binary, error=str(e))
            child.done.errback(ConnectError(f"cannot start php-cgi: {e}"))
            return child.done
        self._running.add(child)
        child.started(transport, body)
        return child.done

    def _ended(self, child: "_CGIProcess") -> None:
        self._running.discard(child)

    def close(self) -> "Deferred[None]":
        """Refuse new requests and kill the running ones; fires when they have all exited."""
        self._closed = True
        waits = []
        for child in list(self._running):
            waits.append(child.exited)
            child.kill(BackendClosed("fephp is stopping"))
        d: Deferred[Any] = DeferredList(waits)
        return d.addCallback(lambda _: None)


@implementer(IPushProducer)
class _CGIProcess(ProcessProtocol):
    """One php-cgi run: body in, output to the sink, exit code out."""

    log = Logger()

    def __init__(self, backend: PHPCGIBackend, sink: ResponseSink) -> None:
        self._backend = backend
        self._sink = sink
        self._clock: Any = backend._reactor  # IReactorTime
        self.done: Deferred[int] = Deferred(self._cancel)
        self.exited: Deferred[None] = Deferred()
        self._failure: Optional[Exception] = None
        self._timer: Any = None  # IDelayedCall
        self._transport: Any = None  # IProcessTransport
        self._paused = False
        self._got_output = False
        self._ended = False

    # -- life -------------------------------------------------------------------

    def started(self, transport: Any, body: Body) -> None:
        self._transport = transport
        self._sink.response_started(cast(IPushProducer, self))
        self._arm()
        if body is None or body == b"":
            transport.closeStdin()
            return
        source = io.BytesIO(body) if isinstance(body, bytes) else body
        # A pull producer on the child's stdin: only as much of the body is
        # buffered as the pipe will take.
        sending = FileSender().beginFileTransfer(source, transport)
        sending.addCallbacks(lambda _: transport.closeStdin(), lambda _: None)

    def kill(self, reason: Exception) -> None:
        """Fail the request with *reason* (unless it already has an outcome) and SIGKILL php-cgi."""
        if self._failure is None:
            self._failure = reason
        if self._ended:
            return
        try:
            self._transport.signalProcess("KILL")
        except Exception:
            pass  # already exited, not yet reaped

    def _cancel(self, _: Deferred[int]) -> None:
        # Deferred.cancel has already errbacked done with CancelledError.
        self.kill(CancelledError())

    # -- the response timeout -----------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        if not self._paused and not self._ended:
            self._timer = self._clock.callLater(self._backend.timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self.log.warn("php-cgi silent for {timeout} s, killing it", timeout=self._backend.timeout)
        self.kill(ResponseTimeout(f"php-cgi sent nothing for {self._backend.timeout} s"))

    # -- IPushProducer, for the sink ----------------------------------------------

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        # A slow HTTP client is not PHP's fault: the timeout waits while paused.
        self._paused = True
        self._disarm()
        if not self._ended:
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._paused = False
        if not self._ended:
            self._transport.resumeProducing()
            self._arm()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.kill(BackendClosed("the response was abandoned", response_started=self._got_output))

    # -- ProcessProtocol ----------------------------------------------------------

    def outReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self._failure is not None:
            return
        self._got_output = True
        self._arm()
        self._sink.stdout_received(data)
        self._sink.flush()

    def errReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self._failure is not None:
            return
        self._arm()
        self._sink.stderr_received(data)

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        self._ended = True
        self._disarm()
        self._backend._ended(self)
        self.exited.callback(None)
        if self.done.called:
            return  # cancelled
        if self._failure is not None:
            self.done.errback(self._failure)
        elif isinstance(reason.value, ProcessDone):
            self.done.callback(0)
        elif isinstance(reason.value, ProcessTerminated) and reason.value.exitCode is not None:
            self.done.callback(reason.value.exitCode)
        else:
            signal_number = getattr(reason.value, "signal", None)
            name = signal.Signals(signal_number).name if signal_number else "an unknown cause"
            self.log.error("php-cgi died of {cause}", cause=name)
            self.done.errback(
                BackendClosed(f"php-cgi died of {name}", response_started=self._got_output)
            )
