"""Several php-fpm backends as one Backend, from fephp's side: one queue, balancing, health checks and failover.

What it guarantees:

- each backend has its own bounded :class:`fephp.backend.pool.FastCGIPool`
  (its php-fpm's ``pm.max_children`` is its capacity); a request that finds
  no free connection on any backend in service waits in one fephp-wide queue
  (at most ``queue_size``, at most ``queue_timeout``) and takes the first
  connection that becomes free on any of them;
- a request goes to the backend in service with the fewest requests
  outstanding per unit of weight; with session affinity, a request carrying
  the session cookie goes to the backend its value hashes to on a
  consistent-hash ring, so that adding or removing a backend moves only that
  backend's share of the sessions.  A session is started by whichever
  backend the request went to, before its id (and so its place on the ring)
  exists: when that is not its place, the response also sets
  ``<cookie>_backend``, naming (by a hash of its address) where the session
  lives, and the session's requests go there while it is in service;
- a backend whose connect fails, that answers with a FastCGI protocol error,
  or that stays silent for the response timeout, is taken out of service and
  checked again after a backoff (one check: php-fpm's ``ping.path`` when
  configured, else FCGI_GET_VALUES on a connection of its own); the first
  check that passes puts it back.  With ``ping.path``, backends in service
  are pinged periodically over a pooled connection too, so a hung host is
  found without waiting for a request to time out on it;
- a request that failed before any byte of it reached PHP (the connect
  failed) goes once to another backend; a request PHP may have started is
  never sent again;
- a backend marked ``drain`` gets nothing new; its requests in flight finish.

While no backend is in service, a request waits for one to come back for at
most ``connect_timeout`` and then fails with :class:`ConnectError` (502).

A backend's state is one :class:`MemberState`: in service; out of service,
until its next check (delays from Twisted's ``backoffPolicy``, as the pool's
reconnects and the supervisor's restarts); checking (the one check in
flight); retired (no longer configured: its pool closes once its requests are
done).  Draining is not a state but the operator's setting
(``BackendConfig.drain``): a draining backend's health is still followed, so
that one drained and then taken back comes back as it really is.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Optional, Sequence

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import TimeoutError as TxTimeoutError
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._deferreds import chained
from .errors import (
    BackendClosed,
    BackendProtocolError,
    ConnectError,
    PoolOverloaded,
    QueueTimeout,
    ResponseTimeout,
)
from .interface import Body, Chunk, Params, ResponseSink
from .pool import FastCGIPool, _tell

__all__ = [
    "AFFINITY_HEAD_LIMIT",
    "BackendConfig",
    "Balancer",
    "DEFAULT_BACKOFF",
    "HashRing",
    "MemberState",
    "backend_token",
    "cookie_value",
    "session_cookie_set",
    "should_fail_over",
    "takes_out_of_service",
    "DOWN_FIRST",
    "DOWN_MAX",
    "RING_POINTS",
]

#: Seconds out of service after a first failure; doubled after each failed check.
DOWN_FIRST = 1.0
#: The longest time between two checks of a backend out of service.
DOWN_MAX = 10.0
#: A backend's check delays: attempt 0 (the first failure) waits DOWN_FIRST, each
#: failed check doubles it, up to DOWN_MAX; no jitter, as the pool and supervisor.
DEFAULT_BACKOFF: Callable[[int], float] = backoffPolicy(DOWN_FIRST, DOWN_MAX, 2.0, jitter=lambda: 0.0)
#: Points on the hash ring per unit of weight: enough that shares stay within a few per cent.
RING_POINTS = 160
#: How much of PHP's CGI head session affinity holds back to find a new session cookie in it.
AFFINITY_HEAD_LIMIT = 16 * 1024


@dataclass(frozen=True)
class BackendConfig:
    """One php-fpm backend as configured (an entry of ``php.backends``, or one address of a ``php.fpm_socket`` list): its address (its name everywhere), weight, pool size, and whether it drains.

    The settings (:mod:`fephp.server.settings`) hold it as written, ``pool_size``
    being the host's whole budget; a balancer gets it with ``pool_size`` this
    process's share (``fephp.server.build.backend_specs``).  It lives here, in
    the lowest layer that reads it, so that the backend layer needs nothing
    from the server layer.
    """

    address: str
    weight: int = 1
    pool_size: int = 16
    drain: bool = False


class MemberState(str, Enum):
    """Where one backend is in the balancer's state machine; the value is what ``stats()`` and the status page show.

    ::

        IN_SERVICE     --a request or a ping says it is broken-->      OUT_OF_SERVICE
        OUT_OF_SERVICE --its backoff delay has passed-->               CHECKING
        CHECKING       --the check passes-->                           IN_SERVICE
        CHECKING       --the check fails, or every connection busy-->  OUT_OF_SERVICE
        any            --no longer configured (reconfigure)-->         RETIRED (final)

    A ``str`` so that the figures sent as JSON (the status page, a worker's
    figures to its parent) carry the value, as the strings did before.
    """

    IN_SERVICE = "up"
    OUT_OF_SERVICE = "down"
    CHECKING = "checking"
    RETIRED = "retired"


# The states as module names: one lookup on the request path (takes_requests), not two.
IN_SERVICE = MemberState.IN_SERVICE
OUT_OF_SERVICE = MemberState.OUT_OF_SERVICE
CHECKING = MemberState.CHECKING
RETIRED = MemberState.RETIRED


def should_fail_over(error: BaseException, *, failed_over: bool, rewindable: bool) -> bool:
    """Whether a request that failed with *error* on one backend goes to another.

    Only when nothing of it can have reached PHP: the connect itself failed
    (:class:`ConnectError`), or php-fpm provably threw it away unread
    (``BackendClosed.never_ran``, which the pool's :func:`should_retry` has
    already resent there as often as it does); or when the pool's
    :func:`should_retry` would have sent it again on a new connection
    (``BackendClosed.resendable``: an idempotent request whose kept
    connection closed under it), which the pool leaves to the balancer so
    that a request whose host just died goes to another.  Never twice
    (*failed_over*), and never with a body that cannot be rewound.
    """
    if failed_over or not rewindable:
        return False
    if isinstance(error, BackendClosed):
        return (error.never_ran or error.resendable) and not error.response_started
    return isinstance(error, ConnectError)


def takes_out_of_service(error: BaseException) -> bool:
    """Whether a request that failed with *error* says its backend is broken.

    A refused or timed-out connect, output that is not FastCGI, or silence
    for the response timeout (a hung host, or a script slower than the
    timeout).  A child that dies under one request, or php-fpm's END_REQUEST
    refusals, are about that request and leave the backend in service.
    """
    return isinstance(error, (ConnectError, BackendProtocolError, ResponseTimeout))


def cookie_value(params: Params, name: bytes) -> Optional[bytes]:
    """The value of cookie *name* in the request's HTTP_COOKIE param, or None."""
    for key, value in params:
        if key == b"HTTP_COOKIE":
            for part in value.split(b";"):
                key_part, sep, found = part.strip().partition(b"=")
                if sep and key_part == name and found:
                    return found
            return None
    return None


def backend_token(address: str) -> bytes:
    """What the ``<cookie>_backend`` cookie holds for a backend: a hash of its address, the same in every fephp."""
    return hashlib.blake2b(address.encode(), digest_size=6).hexdigest().encode()


def session_cookie_set(head: bytes, name: bytes) -> Optional[bytes]:
    """The value PHP's CGI *head* sets for cookie *name* (the last one), or None; ``deleted`` counts as none."""
    found = None
    prefix = name + b"="
    for line in head.split(b"\r\n"):
        field, sep, value = line.partition(b":")
        if sep and field.strip().lower() == b"set-cookie":
            value = value.strip()
            if value.startswith(prefix):
                found = value[len(prefix):].split(b";", 1)[0].strip() or None
    return None if found == b"deleted" else found


def _point(data: bytes) -> int:
    # A hash that is the same in every process and on every machine (unlike
    # hash()), so several fephp instances send a session to the same host.
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """A consistent-hash ring of names: each holds RING_POINTS x weight points.

    A key belongs to the first point at or after its own hash, going round;
    adding a name takes keys only from the others' nearest points, removing
    one gives only its own keys away.
    """

    def __init__(self, weights: Sequence[tuple[str, int]]) -> None:
        points = []
        for name, weight in weights:
            for i in range(RING_POINTS * weight):
                points.append((_point(f"{name}#{i}".encode()), name))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._names = [n for _, n in points]

    def walk(self, key: bytes) -> "list[str]":
        """Every name once, in the order a key meets them going round from its hash."""
        if not self._names:
            return []
        start = bisect.bisect_left(self._hashes, _point(key))
        seen: list[str] = []
        count = len(self._names)
        distinct = len(set(self._names))
        for i in range(count):
            name = self._names[(start + i) % count]
            if name not in seen:
                seen.append(name)
                if len(seen) == distinct:
                    break
        return seen


class _Member:
    """One backend: its configuration, pool, state (a :class:`MemberState`) and counters.

    ``timer`` is the check to come while OUT_OF_SERVICE; ``config.drain``
    (the operator's) keeps new requests away whatever the state.
    """

    __slots__ = (
        "config", "pool", "state", "outstanding", "failures", "down_since", "reason",
        "timer", "requests", "failed_over", "taken_out", "ping_unanswered", "token",
    )

    def __init__(self, config: BackendConfig, pool: FastCGIPool) -> None:
        self.config = config
        self.pool = pool
        self.state = IN_SERVICE
        self.outstanding = 0
        self.failures = 0  # consecutive: reset when a check passes
        self.down_since = 0.0
        self.reason = ""
        self.timer: Optional[IDelayedCall] = None
        self.requests = 0
        self.failed_over = 0
        self.taken_out = 0
        self.ping_unanswered = False
        self.token = backend_token(config.address)

    @property
    def name(self) -> str:
        return self.config.address

    def takes_requests(self) -> bool:
        return self.state is IN_SERVICE and not self.config.drain

    def shown_state(self) -> str:
        """The state as ``stats()`` shows it: ``drain`` for a draining backend in service."""
        return "drain" if self.config.drain and self.state is IN_SERVICE else self.state.value

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class _PingSink:
    """Keeps the CGI head of a ping's answer (php-fpm answers ``pong``, or 404 where ping.path is not set)."""

    __slots__ = ("head",)

    def __init__(self) -> None:
        self.head = b""

    def response_started(self, producer: IPushProducer) -> None:
        pass

    def stdout_received(self, data: Chunk) -> None:
        if len(self.head) < 1024:  # enough for the head; the body is "pong"
            self.head += data

    def stderr_received(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def status(self) -> int:
        head = self.head.split(b"\r\n\r\n", 1)[0].lower()
        for line in head.split(b"\r\n"):
            if line.startswith(b"status:"):
                try:
                    return int(line[7:].split()[0])
                except (ValueError, IndexError):
                    return 0
        return 200


class Balancer:
    """Several FastCGI backends behind one queue; provides :class:`fephp.backend.interface.Backend`.

    :param backends: the backends, in configuration order, each ``pool_size``
        this process's connections to it.
    :param make_pool: builds the pool of one backend (the balancer sets its
        ``on_capacity``).
    :param session_cookie: the cookie whose value chooses the backend
        (session affinity), or None to balance every request.
    :param ping_path: php-fpm's ``ping.path`` on every backend, or None to
        check backends out of service with FCGI_GET_VALUES alone and not to
        check those in service.
    :param backoff: the delay before a backend's next check, from its
        failures in a row less one (Twisted's ``backoffPolicy``); with
        *ping_path*, at most *ping_interval*.
    """

    log = Logger()

    def __init__(
        self,
        backends: Sequence[BackendConfig],
        make_pool: Callable[[BackendConfig], FastCGIPool],
        *,
        clock: IReactorTime,
        queue_size: int = 1024,
        queue_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        session_cookie: Optional[str] = None,
        ping_path: Optional[str] = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 2.0,
        backoff: Callable[[int], float] = DEFAULT_BACKOFF,
    ) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        self._clock = clock
        self._make_pool = make_pool
        self.queue_size = queue_size
        self.queue_timeout = max(queue_timeout, connect_timeout)
        self.connect_timeout = connect_timeout
        self._cookie = session_cookie.encode() if session_cookie else None
        self._pin_cookie = self._cookie + b"_backend" if self._cookie else None
        self.ping_path = ping_path
        self._ping_params = _ping_params(ping_path) if ping_path else None
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._backoff = backoff
        self._members: list[_Member] = []
        self._by_name: dict[str, _Member] = {}
        self._by_token: dict[bytes, _Member] = {}
        self._retiring: list[_Member] = []
        self._ring = HashRing([])
        self._waiting: deque[_BalancedRequest] = deque()
        self._dispatching = False
        self._dispatch_again = False
        self._rotor = 0
        self._closed = False
        self._ping_call: Optional[IDelayedCall] = None
        self._closing_when_idle: Optional[Deferred[None]] = None
        self.reconfigure(backends)
        if self._ping_params is not None:
            self._ping_call = clock.callLater(ping_interval, self._ping_all)

    # -- Backend --------------------------------------------------------------------------

    def request(self, params: Params, body: Body, sink: ResponseSink) -> "Deferred[int]":
        """Run one request on a backend (see the module docstring)."""
        return _BalancedRequest(self, params, body, sink).start()

    def drain(self) -> "Deferred[None]":
        """Close once every request given to the balancer, waiting ones included, has ended.

        For the old balancer of a reload that built a new one: nothing new
        comes here, and no request it holds is failed for the change.
        """
        if self._closing_when_idle is None:
            self._closing_when_idle = Deferred()
            self._maybe_drained()
        return chained(self._closing_when_idle)

    def _maybe_drained(self) -> None:
        draining = self._closing_when_idle
        if (
            draining is not None
            and not draining.called
            and not self._waiting
            and not any(m.outstanding for m in self._members)
        ):
            self.close().chainDeferred(draining)

    def close(self) -> "Deferred[None]":
        """Refuse new requests, fail waiting ones, close every pool; fires once their requests are done."""
        self._closed = True
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._ping_call = None
        while self._waiting:
            self._waiting.popleft().fail(ConnectError("the balancer is shutting down"))
        closing = []
        for member in self._members + self._retiring:
            member.cancel_timer()
            closing.append(member.pool.close())
        if not closing:
            return succeed(None)
        return DeferredList(closing).addCallback(lambda _: None)

    # -- configuration ----------------------------------------------------------------------

    def reconfigure(self, backends: Sequence[BackendConfig]) -> None:
        """Take a new list of backends: new ones join, removed ones finish their requests and close.

        A backend keeps its pool (and its kept connections and health) when
        only its weight or drain flag changed; a new pool size gives it a new
        pool, the old one finishing what it runs.
        """
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        old = dict(self._by_name)
        members = []
        for backend in backends:
            member = old.pop(backend.address, None)
            if member is not None and member.config.pool_size == backend.pool_size:
                if backend.drain and not member.config.drain:
                    self.log.info("{name} drains: its requests in flight finish, nothing new is sent", name=backend.address)
                member.config = backend
            else:
                if member is not None:
                    self._retire(member)
                member = _Member(backend, self._new_pool(backend))
            members.append(member)
        for member in old.values():
            self._retire(member)
        self._members = members
        self._by_name = {m.name: m for m in members}
        self._by_token = {m.token: m for m in members}
        self._ring = HashRing([(m.name, m.config.weight) for m in members])
        self._dispatch_waiting()

    def _new_pool(self, backend: BackendConfig) -> FastCGIPool:
        pool = self._make_pool(backend)
        pool.on_capacity = self._dispatch_waiting
        return pool

    def _retire(self, member: _Member) -> None:
        member.state = RETIRED
        member.cancel_timer()
        self._retiring.append(member)

        def closed(_: object) -> None:
            self._retiring.remove(member)

        member.pool.close().addCallback(closed)

    # -- introspection ------------------------------------------------------------------------

    @property
    def members(self) -> "list[_Member]":
        return list(self._members)

    def stats(self) -> "dict[str, Any]":
        """The queue and, per backend, its state, weight, requests outstanding, counters and pool figures."""
        return {
            "waiting": len(self._waiting),
            "backends": {
                m.name: {
                    "state": m.shown_state(),
                    "weight": m.config.weight,
                    "outstanding": m.outstanding,
                    "requests": m.requests,
                    "failed_over": m.failed_over,
                    "taken_out": m.taken_out,
                    **m.pool.stats(),
                }
                for m in self._members
            },
        }

    # -- choosing -------------------------------------------------------------------------------

    def _choose(
        self, key: Optional[bytes], exclude: Optional[_Member], pinned: Optional[bytes] = None
    ) -> Optional[_Member]:
        """The backend for a request now, or None (it waits)."""
        if key is not None:
            # The backend the session lives on: the one its _backend cookie
            # names, else its place on the ring, else (while that is out of
            # service or drains) the next one: never one chosen by load,
            # which would scatter the session's requests.
            member = self._by_token.get(pinned) if pinned is not None else None
            if member is not None and member is not exclude and member.takes_requests():
                return member if member.pool.has_room() else None
            home = self._ring_home(key, exclude)
            if home is not None:
                return home if home.pool.has_room() else None
            return None
        best = None
        best_score = 0.0
        members = self._members
        count = len(members)
        start = self._rotor  # ties go round, from the first backend on
        self._rotor = (start + 1) % count
        for i in range(count):
            member = members[(start + i) % count]
            if member is exclude or not member.takes_requests() or not member.pool.has_room():
                continue
            score = (member.outstanding + 1) / member.config.weight
            if best is None or score < best_score:
                best, best_score = member, score
        return best

    def _ring_home(self, key: bytes, exclude: Optional[_Member] = None) -> Optional[_Member]:
        """The first backend taking requests on *key*'s way round the ring."""
        for name in self._ring.walk(key):
            member = self._by_name[name]
            if member is not exclude and member.takes_requests():
                return member
        return None

    def _request_ended(self) -> None:
        if self._closing_when_idle is not None:
            self._maybe_drained()

    def _any_in_service(self, exclude: Optional[_Member] = None) -> bool:
        return any(m.takes_requests() for m in self._members if m is not exclude)

    # -- the queue ------------------------------------------------------------------------------

    def _enqueue(self, request: "_BalancedRequest", front: bool = False) -> None:
        if self._closed:
            request.fail(ConnectError("the balancer is shutting down"))
            return
        if len(self._waiting) >= self.queue_size:
            request.fail(PoolOverloaded(f"{len(self._waiting)} requests already wait for a php-fpm backend"))
            return
        if front:
            self._waiting.appendleft(request)
        else:
            self._waiting.append(request)
        request.arm(self._clock)

    def _forget(self, request: "_BalancedRequest") -> None:
        try:
            self._waiting.remove(request)
        except ValueError:
            pass
        if self._closing_when_idle is not None:
            self._maybe_drained()

    def _dispatch_waiting(self) -> None:
        """Give free connections to waiting requests, first come first served."""
        if not self._waiting:
            return  # after most requests: nothing waits
        if self._dispatching:
            self._dispatch_again = True  # a dispatch below freed or took capacity: look again after it
            return
        self._dispatching = True
        try:
            again = True
            while again:
                self._dispatch_again = False
                self._dispatch_once()
                again = self._dispatch_again
        finally:
            self._dispatching = False

    def _dispatch_once(self) -> None:
        waiting = self._waiting
        if not waiting:
            return
        blocked = False
        for request in list(waiting):
            if blocked and request.key is None and request.excluded is None:
                continue  # one that could go anywhere found nothing: neither will this one
            member = self._choose(request.key, request.excluded, request.pinned)
            if member is None:
                if request.key is None and request.excluded is None:
                    blocked = True
                    if self._cookie is None:
                        return  # without affinity the rest are alike, or can go where this one could not
                continue
            waiting.remove(request)
            request.disarm()
            request.run(member)

    def _waited_too_long(self, request: "_BalancedRequest") -> None:
        """A waiting request's timer: fail it now, or wait the rest of the queue timeout."""
        now = self._clock.seconds()
        if not self._any_in_service(request.excluded):
            self._forget(request)
            request.fail(ConnectError("no php-fpm backend reachable within "
                                      f"{self.connect_timeout:g} s: {self._describe_outage()}"))
            return
        assert request.since is not None
        remaining = request.since + self.queue_timeout - now
        if remaining > 0:
            request.arm(self._clock, remaining)
            return
        self._forget(request)
        request.fail(QueueTimeout(f"no free connection to any php-fpm backend within {self.queue_timeout:g} s"))

    def _describe_outage(self) -> str:
        return "; ".join(f"{m.name}: {'drains' if m.config.drain else m.reason or m.state.value}" for m in self._members)

    # -- health ---------------------------------------------------------------------------------

    def _observe(self, member: _Member, result: object) -> None:
        """What one request's end says about its backend."""
        if type(result) is Failure and member.state is not RETIRED:
            error = result.value  # type: ignore[attr-defined]
            if takes_out_of_service(error):
                self._take_out(member, str(error))

    def _take_out(self, member: _Member, reason: str) -> None:
        if member.state is not IN_SERVICE or self._closed:
            return
        member.state = OUT_OF_SERVICE
        member.down_since = self._clock.seconds()
        member.reason = reason
        member.taken_out += 1
        member.failures += 1
        # Kept connections to a host that hung would hang the next requests too.
        member.pool.drop_idle()
        delay = self._check_delay(member)
        self.log.warn(
            "php-fpm backend {name} taken out of service: {reason}; next check in {delay:g} s",
            name=member.name, reason=reason, delay=delay,
        )
        self._schedule_check(member, delay)

    def _check_delay(self, member: _Member) -> float:
        """How long *member* stays out of service before its next check: the backoff policy at its failures in a row.

        Its first failure is the policy's attempt 0.  With ping.path, no
        longer than ping_interval, the period at which backends in service
        are checked.
        """
        delay = self._backoff(member.failures - 1)
        return min(delay, self.ping_interval) if self._ping_params is not None else delay

    def _schedule_check(self, member: _Member, delay: float) -> None:
        member.cancel_timer()
        member.timer = self._clock.callLater(delay, self._check, member)

    def _check(self, member: _Member) -> None:
        """The one check of a backend out of service."""
        member.timer = None
        if member.state is not OUT_OF_SERVICE or self._closed:
            return
        member.state = CHECKING
        checking = self._ping(member) if self._ping_params is not None else self._probe(member)
        if checking is None:
            # Every connection still busy (requests that hang on it): later.
            member.state = OUT_OF_SERVICE
            self._schedule_check(member, self._check_delay(member))
            return

        def passed(_: object) -> None:
            if member.state is not CHECKING or self._closed:
                return
            out_for = self._clock.seconds() - member.down_since
            member.state = IN_SERVICE
            member.failures = 0
            member.reason = ""
            self.log.info(
                "php-fpm backend {name} back in service after {seconds:.1f} s", name=member.name, seconds=out_for
            )
            self._dispatch_waiting()

        def failed(failure: Failure) -> None:
            if member.state is not CHECKING or self._closed:
                return
            member.state = OUT_OF_SERVICE
            member.failures += 1
            member.reason = _check_failure(failure, self.ping_timeout)
            self._schedule_check(member, self._check_delay(member))

        checking.addCallbacks(passed, failed)

    def _probe(self, member: _Member) -> "Deferred[Any]":
        # Over a connection of its own: fine for a backend we hold no
        # connection to, and php-fpm closes it after answering.
        return member.pool.probe()

    def _ping(self, member: _Member) -> "Optional[Deferred[Any]]":
        """php-fpm's ping.path over a pooled connection; None when every connection is busy."""
        assert self._ping_params is not None
        sink = _PingSink()
        d = member.pool.try_request(self._ping_params, b"", sink)
        if d is None:
            return None
        d.addTimeout(self.ping_timeout, self._clock)

        def answered(app_status: int) -> None:
            status = sink.status()
            if status != 200 and not member.ping_unanswered:
                # php-fpm answers, so it is alive; but its pool does not know
                # ping.path (403 from security.limit_extensions, or 404).
                member.ping_unanswered = True
                self.log.warn(
                    "php-fpm backend {name} answers {status} to {path}: set ping.path = {path} in its pool",
                    name=member.name, status=status, path=self.ping_path,
                )

        return d.addCallback(answered)

    def _ping_all(self) -> None:
        """The periodic ping of every backend in service (ping.path configured)."""
        self._ping_call = self._clock.callLater(self.ping_interval, self._ping_all)
        for member in self._members:
            if member.state is not IN_SERVICE:
                continue
            pinging = self._ping(member)
            if pinging is None:
                continue  # all its connections busy: requests are the check

            def failed(failure: Failure, member: _Member = member) -> None:
                self._take_out(member, _check_failure(failure, self.ping_timeout))

            pinging.addErrback(failed)


def _check_failure(failure: Failure, ping_timeout: float) -> str:
    # Deferred.addTimeout fails with defer's TimeoutError, not error's.
    if failure.check(DeferredTimeout, TxTimeoutError, CancelledError):
        return f"no answer to a check within {ping_timeout:g} s"
    return failure.getErrorMessage()


def _ping_params(path: str) -> "list[tuple[bytes, bytes]]":
    """The CGI environment of a ping: php-fpm matches ping.path against SCRIPT_NAME."""
    raw = path.encode()
    return [
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"REQUEST_METHOD", b"GET"),
        (b"SCRIPT_NAME", raw),
        (b"SCRIPT_FILENAME", raw),
        (b"REQUEST_URI", raw),
        (b"QUERY_STRING", b""),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"CONTENT_LENGTH", b""),
    ]


class _BalancedRequest:
    """One request's way through the balancer: a backend, maybe the queue, maybe one failover."""

    __slots__ = (
        "balancer", "params", "body", "sink", "position", "key", "pinned", "excluded", "failed_over",
        "outer", "current", "since", "timer",
    )

    def __init__(self, balancer: Balancer, params: Params, body: Body, sink: ResponseSink) -> None:
        self.balancer = balancer
        self.params = params
        self.body = body
        self.sink = sink
        self.position = _tell(body)
        cookie = balancer._cookie
        self.key = self.pinned = None
        if cookie is not None:
            self.key = cookie_value(params, cookie)
            if self.key is not None:
                assert balancer._pin_cookie is not None
                self.pinned = cookie_value(params, balancer._pin_cookie)
        self.excluded: Optional[_Member] = None  # the backend it failed on, once failed over
        self.failed_over = False
        self.outer: Deferred[int] = Deferred(self._cancel)
        self.current: Optional[Deferred[int]] = None
        self.since: Optional[float] = None  # when it first waited in the queue
        self.timer: Optional[IDelayedCall] = None

    def start(self) -> "Deferred[int]":
        balancer = self.balancer
        member = None if balancer._closed else balancer._choose(self.key, None, self.pinned)
        if member is not None:
            self.run(member)
        else:
            balancer._enqueue(self)
        return self.outer

    def run(self, member: _Member) -> None:
        sink = self.sink
        if self.balancer._cookie is not None:
            sink = _AffinitySink(sink, self.balancer, member, self.pinned)
        d = member.pool.try_request(self.params, self.body, sink)
        if d is None:  # pragma: no cover - chosen for having room
            self.balancer._enqueue(self, front=True)
            return
        member.outstanding += 1
        member.requests += 1
        self.current = d
        d.addBoth(self._done, member, sink)

    def _done(self, result: object, member: _Member, sink: ResponseSink) -> None:
        member.outstanding -= 1
        if type(sink) is _AffinitySink and type(result) is not Failure:
            sink.release()
        self.current = None
        balancer = self.balancer
        if type(result) is Failure:
            balancer._observe(member, result)
        outer = self.outer
        if outer.called:
            balancer._request_ended()
            return
        if type(result) is not Failure:
            outer.callback(result)  # type: ignore[arg-type]
            balancer._request_ended()
            return
        error = result.value  # type: ignore[attr-defined]
        position = self.position
        if (
            should_fail_over(error, failed_over=self.failed_over, rewindable=position is not None)
            and (isinstance(error, BackendClosed) or any(m is not member and not m.config.drain for m in balancer._members))
        ):
            assert position is not None
            member.failed_over += 1
            balancer.log.debug("{name} failed before PHP saw the request, trying another: {error}",
                               name=member.name, error=str(error))
            if position >= 0:
                self.body.seek(position)  # type: ignore[union-attr]
            # Elsewhere; back to the same backend only when there is no other
            # (its pool's own retry, as without a balancer).
            alone = all(m is member or m.config.drain for m in balancer._members)
            self.excluded = None if alone else member
            self.failed_over = True
            other = balancer._choose(self.key, self.excluded, self.pinned)
            if other is not None:
                self.run(other)
            else:
                balancer._enqueue(self, front=True)
            return
        outer.errback(result)
        balancer._request_ended()

    def arm(self, clock: IReactorTime, delay: Optional[float] = None) -> None:
        balancer = self.balancer
        now = clock.seconds()
        if self.since is None:
            self.since = now
        if delay is None:
            delay = max(0.0, balancer.connect_timeout - (now - self.since))
        self.timer = clock.callLater(delay, balancer._waited_too_long, self)

    def disarm(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def fail(self, error: Exception) -> None:
        self.disarm()
        if not self.outer.called:
            self.outer.errback(Failure(error))

    def _cancel(self, _: object) -> None:
        self.disarm()
        self.balancer._forget(self)
        if self.current is not None:
            self.current.cancel()


class _AffinitySink:
    """A request's sink with session affinity: adds ``<cookie>_backend`` to a head that starts a session away from its ring place.

    It holds the CGI head back (at most AFFINITY_HEAD_LIMIT bytes) until it
    is whole, then passes everything on as it comes.
    """

    __slots__ = ("_sink", "_balancer", "_member", "_pinned", "_head")

    def __init__(self, sink: ResponseSink, balancer: Balancer, member: _Member, pinned: Optional[bytes]) -> None:
        self._sink = sink
        self._balancer = balancer
        self._member = member
        self._pinned = pinned
        self._head: Optional[bytes] = b""  # None once passed on

    def response_started(self, producer: IPushProducer) -> None:
        self._sink.response_started(producer)

    def stdout_received(self, data: Chunk) -> None:
        head = self._head
        if head is None:
            self._sink.stdout_received(data)
            return
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0 and len(head) < AFFINITY_HEAD_LIMIT:
            self._head = head
            return
        self._head = None
        if end >= 0:
            head = head[:end] + self._pin_line(head[:end]) + head[end:]
        self._sink.stdout_received(head)

    def _pin_line(self, head: bytes) -> bytes:
        balancer = self._balancer
        assert balancer._cookie is not None and balancer._pin_cookie is not None
        session = session_cookie_set(head, balancer._cookie)
        member = self._member
        if session is None or self._pinned == member.token or balancer._ring_home(session) is member:
            return b""
        return b"\r\nSet-Cookie: " + balancer._pin_cookie + b"=" + member.token + b"; path=/; HttpOnly; SameSite=Lax"

    def stderr_received(self, data: bytes) -> None:
        self._sink.stderr_received(data)

    def flush(self) -> None:
        if self._head is None:
            self._sink.flush()

    def release(self) -> None:
        """The request ended: pass on a head held back that never completed."""
        head, self._head = self._head, None
        if head:
            self._sink.stdout_received(head)
