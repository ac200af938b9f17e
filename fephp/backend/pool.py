"""A pool of kept FastCGI connections to one backend, on an injected clock.

What it guarantees:

- at most ``size`` connections exist (idle + busy + connecting).  php-fpm
  pins one child to each kept connection, so ``size`` must not exceed the
  pool's ``pm.max_children``; requests beyond it wait here, in a queue of at
  most ``queue_size``, not in php-fpm's listen backlog;
- a connection is handed out again only after a clean END_REQUEST, and
  never once the kernel already holds php-fpm's end of file for it;
- a request whose caller went away keeps its connection (and the php-fpm
  child behind it) counted as *draining* until PHP has ended the script, so
  the next request waits here instead of in php-fpm's backlog;
- a request is never run twice: one that failed before any response byte
  came back is sent once more, on a new connection, only if php-fpm
  provably threw it away unread or its method is idempotent (see
  :func:`should_retry`);
- while the backend is down, connects are retried with backoff as long as
  requests wait, each request failing with :class:`ConnectError` once it has
  waited ``connect_timeout``; the first successful connect ends the outage;
- idle connections are closed after ``idle_timeout`` and forgotten as soon
  as the backend closes them.

A balancer over several pools (:mod:`fephp.backend.balancer`) keeps the one
queue itself and uses :meth:`FastCGIPool.try_request`: a connection now (idle,
or a new connect if there is room) or None, and a failed connect fails the
request at once; ``on_capacity`` tells it when a connection may have become
free.

Errors, all :class:`fephp.backend.errors.BackendError`: ConnectError (502),
BackendClosed and BackendProtocolError (502), ResponseTimeout (504),
PoolOverloaded and QueueTimeout (503), RequestRejected (503 or 502).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import TimeoutError as TxTimeoutError
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._deferreds import Waiters, chained
from .._stats import QUEUE_WAIT_BOUNDS, Histogram
from .errors import BackendClosed, ConnectError, PoolOverloaded, QueueTimeout
from .interface import Body, Params, ResponseSink
from .protocol import FastCGIClientProtocol

__all__ = ["FastCGIPool", "GET_VALUES_NAMES", "IDEMPOTENT_METHODS", "MAX_UNREAD_RESENDS", "should_retry"]

#: The three variables of section 4.1.
GET_VALUES_NAMES = (b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS")
#: RFC 9110 9.2.2: methods whose effect is the same however often a request is repeated.
IDEMPOTENT_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
#: How often one request may be thrown away unread and sent again.  Each
#: time ends a kept connection at its child's last request, so this many in
#: a row means something other than pm.max_requests is at work.
MAX_UNREAD_RESENDS = 8


class _Waiter:
    __slots__ = ("deferred", "since", "timer")

    def __init__(self, deferred: "Deferred[FastCGIClientProtocol]", since: float):
        self.deferred = deferred
        self.since = since
        self.timer: Optional[IDelayedCall] = None


class _ProtocolFactory(Factory):
    noisy = False  # one log line per pooled connection is noise

    def __init__(self, pool: "FastCGIPool") -> None:
        self._pool = pool

    def buildProtocol(self, addr: object) -> FastCGIClientProtocol:  # noqa: N802
        pool = self._pool
        return FastCGIClientProtocol(
            pool._clock,
            response_timeout=pool.response_timeout,
            on_close=pool._connection_closed,
            on_drained=pool._drain_ended,
        )


class FastCGIPool:
    """Kept connections to one FastCGI backend; provides :class:`fephp.backend.interface.Backend`."""

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        *,
        clock: IReactorTime,
        size: int = 16,
        queue_size: int = 1024,
        connect_timeout: float = 5.0,
        response_timeout: Optional[float] = 60.0,
        idle_timeout: Optional[float] = 30.0,
        queue_timeout: float = 30.0,
        backoff: Callable[[int], float] = backoffPolicy(0.05, 0.5, 2.0, jitter=lambda: 0.0),
        name: str = "php-fpm",
        on_capacity: Optional[Callable[[], None]] = None,
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self._endpoint = endpoint
        self._clock = clock
        self.size = size
        self.queue_size = queue_size
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.idle_timeout = idle_timeout
        self.queue_timeout = max(queue_timeout, connect_timeout)
        self._backoff = backoff
        self.name = name
        #: Called (with no argument) whenever a connection may have become free
        #: for :meth:`try_request`: one was put back, closed, or failed to connect.
        self.on_capacity = on_capacity
        self._factory = _ProtocolFactory(self)
        self._idle: list[FastCGIClientProtocol] = []
        self._idle_since: dict[FastCGIClientProtocol, float] = {}
        self._busy: set[FastCGIClientProtocol] = set()
        # Abandoned by their callers, still running in PHP.
        self._draining: set[FastCGIClientProtocol] = set()
        self._connecting = 0
        self._waiters: deque[_Waiter] = deque()
        self._failures = 0
        self._last_error = ""
        self._retry_call: Optional[IDelayedCall] = None
        self._reaper: Optional[IDelayedCall] = None
        self._closed = False
        self._drained: Waiters[None] = Waiters()
        self._closing_when_idle: Optional[Deferred[None]] = None
        # What the admin side reads (figures()), counted since the pool was made.
        #: Requests that found an idle connection at once; the others' waits are in queue_wait.
        self.immediate = 0
        self.queue_wait = Histogram(QUEUE_WAIT_BOUNDS)
        self.connects_failed = 0
        #: Requests sent again on a new connection after a stale kept one (should_retry).
        self.retries = 0
        #: Requests that failed, by the HTTP status their error means.
        self.errors = {502: 0, 503: 0, 504: 0}
        #: Requests the client gave up on (cancelled) before the end.
        self.aborts = 0

    # -- Backend -------------------------------------------------------------

    def request(self, params: Params, body: Body, sink: ResponseSink) -> "Deferred[int]":
        """Run one request on a pooled connection (see the module docstring)."""
        outer = _PooledRequest(self, params, body, sink).start().outer
        assert outer is not None
        return outer

    def send(self, params: Params, body: Body, sink: ResponseSink, on_done: Callable[[Any], object]) -> "_PooledRequest":
        """:meth:`request` without a Deferred: *on_done* is called once with PHP's app status or a Failure.

        Returns the request's handle: its ``cancel()`` is the Deferred's.
        A Deferred costs about 14,000 instructions per request on CPython,
        its callbacks run through Twisted's general loop.
        """
        return _PooledRequest(self, params, body, sink, on_done=on_done).start()

    def try_request(self, params: Params, body: Body, sink: ResponseSink) -> "Optional[Deferred[int]]":
        """Run one request now, or None when every connection is busy (or the pool is closed).

        Never waits in this pool's queue: the request runs on an idle
        connection, or on a new one when there is room, and a connect that
        fails or times out fails it with :class:`ConnectError` at once, with
        no retry here (the caller has other backends to try).  The one retry
        of a request whose kept connection turned out stale still happens.
        """
        if not self.has_room():
            return None
        outer = _PooledRequest(self, params, body, sink, direct=True).start().outer
        assert outer is not None
        return outer

    def has_room(self) -> bool:
        """Whether :meth:`try_request` would start a request now."""
        return not self._closed and (bool(self._idle) or self._total() < self.size)

    def drop_idle(self) -> None:
        """Close the idle connections (to a backend taken out of service: they may lead to a hung host)."""
        idle, self._idle = self._idle, []
        self._idle_since.clear()
        for proto in idle:
            proto.close()

    def close(self) -> "Deferred[None]":
        """Refuse new requests, fail waiting ones, close idle and draining connections.

        Fires once requests in flight have finished and their connections are closed.
        """
        self._closed = True
        for call in (self._retry_call, self._reaper):
            if call is not None and call.active():
                call.cancel()
        self._retry_call = self._reaper = None
        while self._waiters:
            self._fail_waiter(self._waiters.popleft(), ConnectError("the pool is shutting down"))
        self.drop_idle()
        for proto in list(self._draining):
            proto.close()  # nobody waits for their output
        if not self._busy:
            return succeed(None)
        return self._drained.wait()

    # -- introspection ----------------------------------------------------------

    def drain(self) -> "Deferred[None]":
        """Close once every request already given to the pool, waiting ones included, has ended.

        For the old pool of a reload: the new site sends it nothing more, and
        no request it holds is failed for the change.
        """
        if self._closing_when_idle is None:
            self._closing_when_idle = Deferred()
            self._maybe_drained()
        return chained(self._closing_when_idle)

    def _maybe_drained(self) -> None:
        draining = self._closing_when_idle
        if draining is not None and not draining.called and not self._waiters and not self._busy:
            self.close().chainDeferred(draining)

    def figures(self) -> dict[str, Any]:
        """The pool's state and counters, JSON-able (for /metrics and /status)."""
        return {
            "name": self.name,
            "size": self.size,
            "idle": len(self._idle),
            "busy": len(self._busy),
            "connecting": self._connecting,
            "waiting": len(self._waiters),
            "immediate": self.immediate,
            "queue_wait": self.queue_wait.figures(),
            "connects_failed": self.connects_failed,
            "retries": self.retries,
            "errors": {str(k): v for k, v in self.errors.items()},
            "aborts": self.aborts,
        }

    def stats(self) -> dict[str, int]:
        """Connections by state (``idle + busy + draining + connecting <= size``), waiting requests, failed connects."""
        return {
            "idle": len(self._idle),
            "busy": len(self._busy),
            "draining": len(self._draining),
            "connecting": self._connecting,
            "waiting": len(self._waiters),
            "failures": self._failures,
        }

    def probe(self) -> "Deferred[dict[bytes, bytes]]":
        """FCGI_GET_VALUES over a connection of its own (section 4.1).

        php-fpm closes a connection after answering GET_VALUES, so the probe
        never uses or spoils a pooled one.  php-fpm answers only
        ``FCGI_MPXS_CONNS=0``; php-cgi also gives MAX_CONNS and MAX_REQS.
        """
        factory = Factory.forProtocol(
            lambda: FastCGIClientProtocol(self._clock, response_timeout=None)
        )
        factory.noisy = False  # a balancer probes a backend out of service every few seconds
        connecting = self._endpoint.connect(factory)
        connecting.addTimeout(self.connect_timeout, self._clock)

        def ask(proto: FastCGIClientProtocol) -> "Deferred[dict[bytes, bytes]]":
            d = proto.get_values(list(GET_VALUES_NAMES))
            d.addTimeout(self.connect_timeout, self._clock)

            def close(result: Any) -> Any:
                proto.close()
                return result

            return d.addBoth(close)

        return connecting.addCallback(ask)  # type: ignore[call-overload]

    # -- connections ------------------------------------------------------------

    def _total(self) -> int:
        return len(self._idle) + len(self._busy) + len(self._draining) + self._connecting

    def _take_idle(self) -> Optional[FastCGIClientProtocol]:
        """The most recently used idle connection, now busy; None if there is none."""
        idle = self._idle
        while idle:
            proto = idle.pop()
            del self._idle_since[proto]
            if proto.reusable and not proto.peer_gone():
                self._busy.add(proto)
                return proto
            proto.close()
        return None

    def _acquire(self) -> "Deferred[FastCGIClientProtocol]":
        """A connection: an idle one, else a new or released one once it comes, waiting in the queue."""
        if self._closed:
            return fail(ConnectError("the pool is shutting down"))
        proto = self._take_idle()
        if proto is not None:
            return succeed(proto)
        if len(self._waiters) >= self.queue_size:
            return fail(PoolOverloaded(f"{len(self._waiters)} requests already wait for {self.name}"))
        now = self._clock.seconds()
        waiter = _Waiter(Deferred(lambda d: self._forget_waiter(waiter)), now)
        waiter.timer = self._clock.callLater(self.connect_timeout, self._waiter_timed_out, waiter)
        self._waiters.append(waiter)
        self._maybe_connect()
        return waiter.deferred

    def _maybe_connect(self) -> None:
        if (
            self._retry_call is None
            and not self._closed
            and self._connecting < len(self._waiters)
            and self._total() < self.size
        ):
            self._connect()

    def _connect(self) -> None:
        self._connecting += 1
        d = self._endpoint.connect(self._factory)
        d.addTimeout(self.connect_timeout, self._clock)
        d.addCallbacks(self._connected, self._connect_failed)

    def _connect_now(self) -> "Deferred[FastCGIClientProtocol]":
        """A new connection for one request (of :meth:`try_request`, or one sent again), busy once made; ConnectError at once if it fails."""
        self._connecting += 1
        d = self._endpoint.connect(self._factory)
        d.addTimeout(self.connect_timeout, self._clock)

        def connected(proto: FastCGIClientProtocol) -> FastCGIClientProtocol:
            self._connecting -= 1
            self._connect_succeeded()
            if self._closed:
                proto.close()
                self._check_drained()
                raise ConnectError("the pool is shutting down")
            self._busy.add(proto)
            return proto

        def failed(failure: Failure) -> Failure:
            self._connecting -= 1
            if failure.check(CancelledError):
                return failure  # the caller gave up: not the backend's failure
            self._note_connect_failure(failure)
            self._maybe_connect()
            self._capacity()
            return Failure(ConnectError(f"cannot connect to {self.name}: {self._last_error}"))

        return d.addCallbacks(connected, failed)

    def _connect_succeeded(self) -> None:
        if self._failures:
            self.log.info(
                "{name} is reachable again after {failures} failed connects",
                name=self.name,
                failures=self._failures,
            )
        self._failures = 0
        self._last_error = ""

    def _note_connect_failure(self, failure: Failure) -> None:
        self._failures += 1
        self.connects_failed += 1
        if failure.check(TxTimeoutError, CancelledError):
            reason = f"no connection within {self.connect_timeout:g} s"
        else:
            reason = failure.getErrorMessage()
        self._last_error = reason
        if self._failures == 1:
            self.log.warn("cannot connect to {name}: {reason}", name=self.name, reason=reason)

    def _connected(self, proto: FastCGIClientProtocol) -> None:
        self._connecting -= 1
        self._connect_succeeded()
        if self._closed:
            proto.close()
            return
        self._busy.add(proto)
        self._release(proto)
        self._maybe_connect()

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting -= 1
        self._note_connect_failure(failure)
        if not self._busy and not self._idle:
            # A connect that hung for the whole connect timeout ends at the
            # same moment as the waiters' first check: settle them here.
            deadline = self._clock.seconds() - self.connect_timeout
            for waiter in [w for w in self._waiters if w.since <= deadline]:
                self._waiters.remove(waiter)
                self._fail_waiter(waiter, self._connect_error())
        if self._waiters and self._retry_call is None and not self._closed:
            # Never wait so long between attempts that a request's connect
            # timeout passes with no attempt after the backend came back.
            delay = min(self._backoff(self._failures), self.connect_timeout / 2)
            self._retry_call = self._clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self._maybe_connect()

    def _release(self, proto: FastCGIClientProtocol, notify: bool = True) -> None:
        """A request ended on *proto*: hand it on, keep it idle, drop it, or count it draining."""
        self._busy.discard(proto)
        if proto.busy and proto.draining and not self._closed:
            # Its caller is gone but PHP still runs the script: the child
            # stays taken until END_REQUEST (_drain_ended).
            self._draining.add(proto)
            return
        usable = proto.reusable and not self._closed
        if usable and self._waiters:
            # php-fpm may have closed it as it answered, unread by the reactor yet.
            usable = not proto.peer_gone()
            if usable:
                waiter = self._waiters.popleft()
                self._cancel_timer(waiter)
                self._busy.add(proto)
                self.queue_wait.observe(self._clock.seconds() - waiter.since)
                waiter.deferred.callback(proto)
                return
        if usable:
            self._idle.append(proto)
            self._idle_since[proto] = self._clock.seconds()
            self._schedule_reaper()
        else:
            proto.close()
            self._maybe_connect()
        self._check_drained()
        if notify:
            self._capacity()

    def _drain_ended(self, proto: FastCGIClientProtocol) -> None:
        """PHP ended an abandoned request on *proto*: the connection is free again."""
        if proto in self._draining:
            self._draining.discard(proto)
            self._release(proto)

    def _connection_closed(self, proto: FastCGIClientProtocol) -> None:
        if proto in self._idle_since:
            del self._idle_since[proto]
            self._idle.remove(proto)
        elif proto in self._draining:
            self._draining.discard(proto)
            self._check_drained()
        self._maybe_connect()
        self._capacity()

    def _capacity(self) -> None:
        if self.on_capacity is not None and not self._closed:
            self.on_capacity()

    def _count_error(self, error: BaseException) -> None:
        status = getattr(error, "http_status", 502)
        self.errors[status] = self.errors.get(status, 0) + 1

    def _check_drained(self) -> None:
        if self._closed and not self._busy:
            self._drained.fire(None)
        self._maybe_drained()

    # -- waiting ------------------------------------------------------------

    def _cancel_timer(self, waiter: _Waiter) -> None:
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None

    def _forget_waiter(self, waiter: _Waiter) -> None:
        self._cancel_timer(waiter)
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
        self._maybe_drained()

    def _fail_waiter(self, waiter: _Waiter, error: Exception) -> None:
        self._cancel_timer(waiter)
        waiter.deferred.errback(Failure(error))
        self._maybe_drained()

    def _connect_error(self) -> ConnectError:
        return ConnectError(
            f"cannot connect to {self.name} within {self.connect_timeout:g} s: {self._last_error}"
        )

    def _waiter_timed_out(self, waiter: _Waiter) -> None:
        waiter.timer = None
        now = self._clock.seconds()
        if self._failures and not self._busy and not self._idle:
            self._waiters.remove(waiter)
            self._fail_waiter(waiter, self._connect_error())
            return
        remaining = waiter.since + self.queue_timeout - now
        if remaining > 0:
            waiter.timer = self._clock.callLater(remaining, self._waiter_timed_out, waiter)
            return
        self._waiters.remove(waiter)
        self._fail_waiter(
            waiter, QueueTimeout(f"no free connection to {self.name} within {self.queue_timeout:g} s")
        )

    # -- idle connections -------------------------------------------------------

    def _schedule_reaper(self) -> None:
        if self._reaper is None and self.idle_timeout is not None:
            self._reaper = self._clock.callLater(self.idle_timeout, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        assert self.idle_timeout is not None
        now = self._clock.seconds()
        deadline = now - self.idle_timeout
        for proto, since in list(self._idle_since.items()):
            if since <= deadline:
                del self._idle_since[proto]
                self._idle.remove(proto)
                proto.close()
        if self._idle_since:
            oldest = min(self._idle_since.values())
            self._reaper = self._clock.callLater(oldest + self.idle_timeout - now, self._reap)


class _PooledRequest:
    """One request's way through the pool: a connection, the request, maybe one retry."""

    __slots__ = (
        "pool", "params", "body", "sink", "position", "current", "retried", "unread", "outer", "direct", "proto", "reused",
        "on_done", "settled",
    )

    def __init__(
        self,
        pool: FastCGIPool,
        params: Params,
        body: Body,
        sink: ResponseSink,
        *,
        direct: bool = False,
        on_done: Optional[Callable[[Any], object]] = None,
    ) -> None:
        self.pool = pool
        self.direct = direct  # try_request's: never waits in the pool's queue
        self.params = params
        self.body = body
        self.sink = sink
        self.position = _tell(body)
        #: What a cancel cancels: the checkout's Deferred, or the request's handle on its connection.
        self.current: Optional[Any] = None
        #: The connection running the request, and whether it had served before.
        self.proto: Optional[FastCGIClientProtocol] = None
        self.reused = False
        self.retried = False
        self.unread = 0
        #: The caller's: a Deferred (request, try_request), or on_done called once (send).
        self.outer: Optional[Deferred[int]] = Deferred(self._cancel) if on_done is None else None
        self.on_done = on_done
        #: The outcome went to the caller (the outer Deferred's ``called``).
        self.settled = False

    def start(self) -> "_PooledRequest":
        pool = self.pool
        proto = None if pool._closed else pool._take_idle()
        if proto is not None:
            # The common case, with no Deferred for the checkout.
            pool.immediate += 1
            self._run(proto)
        else:
            self._attempt()
        return self

    def cancel(self) -> None:
        """The caller gives up, as Deferred.cancel: the request is cancelled, and fails with CancelledError unless it already ended."""
        if self.outer is not None:
            self.outer.cancel()
            return
        if not self.settled:
            self._cancel(None)
            if not self.settled:
                self._settle(Failure(CancelledError()))

    def _called(self) -> bool:
        outer = self.outer
        return outer.called if outer is not None else self.settled

    def _settle(self, result: Any) -> None:
        """Hand the outcome (an app status, or a Failure) to the caller."""
        outer = self.outer
        if outer is not None:
            if type(result) is Failure:
                outer.errback(result)
            else:
                outer.callback(result)
            return
        self.settled = True
        on_done, self.on_done = self.on_done, None
        # The caller keeps the handle (its cancel() for a client that goes
        # away) in what the sink refers to: let go of the sink, directly and
        # through the request on the connection, so that no cycle is left
        # for the garbage collector.
        self.current = None
        self.sink = None  # type: ignore[assignment]
        assert on_done is not None
        on_done(result)

    def _cancel(self, _: object) -> None:
        self.pool.aborts += 1
        if self.current is not None:
            self.current.cancel()

    def _attempt(self) -> None:
        pool = self.pool
        if self.direct:
            proto = pool._take_idle()
            if proto is not None:
                self._run(proto)
                return
            self.current = pool._connect_now()
        else:
            self.current = pool._acquire()
        self.current.addCallbacks(self._run, self._give_up)

    def _run(self, proto: FastCGIClientProtocol) -> None:
        self.proto = proto
        self.reused = proto.completed > 0
        try:
            # A direct call when it ends, not a Deferred: the outer one is
            # the request's only callback chain.
            self.current = proto.send(self.params, self.body, self.sink, self._done)
        except Exception:
            self.pool._release(proto)
            self._give_up(Failure())

    def _done(self, result: object) -> None:
        pool = self.pool
        proto, reused = self.proto, self.reused
        assert proto is not None
        # A request sent again takes the place of the connection it failed
        # on, which is dead: a new one, connected before that one is let go,
        # so the pool stays in size and the request does not queue behind
        # others, nor land on another kept connection php-fpm may be closing.
        called = self._called()
        resend = not called and type(result) is Failure and self._resend(result.value, reused)  # type: ignore[attr-defined]
        pool._release(proto, notify=not self.direct)
        if self.direct:
            # try_request's: the balancer hears of the free connection only
            # once a resend (if any) has taken its place.
            pool._capacity()
        if called or resend:
            return
        if type(result) is not Failure:
            self._settle(result)
            return
        error = result.value  # type: ignore[attr-defined]
        if not getattr(error, "resendable", False):  # the balancer's to send again, not an error yet
            pool._count_error(error)
        self._settle(result)

    def _resend(self, error: BaseException, reused: bool) -> bool:
        """Send the request again on a new connection if should_retry says so; whether it did."""
        position = self.position
        if not should_retry(
            error,
            reused=reused,
            retried=self.retried,
            unread=self.unread,
            rewindable=position is not None,
            idempotent=_method(self.params) in IDEMPOTENT_METHODS,
        ):
            return False
        assert position is not None and isinstance(error, BackendClosed)
        pool = self.pool
        pool.retries += 1
        if self.direct and not error.never_ran:
            # try_request's (a balancer's): the kept connection may have died
            # with its host, so the balancer sends the request again, to
            # another backend when it has one.
            error.resendable = True
            return False
        pool.log.debug("sending the request again: {error}", error=str(error))
        if error.never_ran:
            self.unread += 1
        else:
            self.retried = True
        if position >= 0:
            self.body.seek(position)  # type: ignore[union-attr]
        self.current = pool._connect_now()
        self.current.addCallbacks(self._run, self._give_up)
        return True

    def _give_up(self, failure: Failure) -> None:
        if not self._called() and not failure.check(CancelledError):
            self.pool._count_error(failure.value)
            self._settle(failure)


def should_retry(
    error: BaseException, *, reused: bool, retried: bool, unread: int, rewindable: bool, idempotent: bool
) -> bool:
    """Whether a request that failed with *error* is sent again, on another connection.

    Only one that failed with BackendClosed before any response byte, with a
    body that can be rewound, and only when running it twice cannot matter:

    - php-fpm provably threw it away unread (``error.never_ran``: its close
      of a kept connection after ``pm.max_requests``, seen on a UNIX
      socket): as if never sent, so again and again, while *unread* (the
      times that already happened to it) stays under MAX_UNREAD_RESENDS;
    - or it went out on a kept connection (*reused*) that php-fpm may have
      been closing as we wrote (after ``pm.max_requests``, on a reload), and
      its method is *idempotent*: once, unless it was *retried* already.

    A child killed mid-script (``request_terminate_timeout``, a crash) ends
    a request the same way as the second case, so a POST is not sent again:
    PHP may have run it.  nginx does not resend one either.
    """
    if not rewindable or not isinstance(error, BackendClosed) or error.response_started:
        return False
    if error.never_ran:
        return unread < MAX_UNREAD_RESENDS
    return reused and idempotent and not retried


def _method(params: Params) -> bytes:
    """REQUEST_METHOD of *params* (b"" without one)."""
    for name, value in params:
        if name == b"REQUEST_METHOD":
            return value
    return b""


def _tell(body: Body) -> Optional[int]:
    """Where a file body starts, so a retry can rewind it.

    -1 for a body that needs no rewinding, None for one that cannot be rewound.
    """
    if body is None or isinstance(body, (bytes, bytearray, memoryview)):
        return -1
    try:
        return body.tell()
    except (AttributeError, OSError, ValueError):
        return None
