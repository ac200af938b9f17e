"""Certificates kept valid for sets of names, from the owner's side: a Twisted service that loads, obtains and renews.

For each name set, at start, the stored certificate is handed to the
``installed`` callback at once (so a restart serves without asking the
CA), then one check runs: nothing when the certificate is not due, else one
order.  A certificate is due at the point of the CA's ARI window (RFC 9773)
the set's jitter picks, or at two thirds of its lifetime less that jitter
(``renewal.py``); the next check is timed for then.  A failed order keeps
the stored certificate, is logged with the CA's problem document, counted,
and retried after ``retry_delays`` (doubling from a minute to six hours,
none past the expiry).  States of one name set (``Managed.state``)::

    LOADING -> (nothing stored) OBTAINING -> VALID -> (due) RENEWING -> VALID
                                    |                        |
                                    +-> FAILED -> (retry) ---+

At most one order is in flight per name set (a check that finds one
running waits for it), and the account is registered once, at the first
order: a restart with every certificate stored sends nothing to the CA.
"""

from __future__ import annotations

import datetime
import enum
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from cryptography import x509
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .._deferreds import Waiters, chained
from .ari import RETRY_AFTER_MIN, RenewalWindow
from .client import AcmeClient, ExternalAccount
from .errors import AcmeError
from .keys import KeyType
from .renewal import renewal_due_at, retry_delays
from .responder import ChallengeSolver
from .storage import Storage, Stored

__all__ = ["AcmeService", "CertificateState", "Managed"]


class CertificateState(enum.Enum):
    """Where one name set's certificate is (see the module's diagram)."""

    LOADING = "loading"
    OBTAINING = "obtaining"
    VALID = "valid"
    RENEWING = "renewing"
    FAILED = "failed"


@dataclass
class Managed:
    """One name set: its state, the certificate serving, when it is due, and the failures since the last success."""

    names: tuple[str, ...]
    jitter: float
    state: CertificateState = CertificateState.LOADING
    stored: Stored | None = None
    window: RenewalWindow | None = None
    due_at: datetime.datetime | None = None
    next_check_at: datetime.datetime | None = None
    #: Failed attempts since the last success, and over the service's life.
    failures: int = 0
    failures_total: int = 0
    last_error: str | None = None
    _retries: Iterator[float] | None = field(default=None, repr=False)
    _timer: IDelayedCall | None = field(default=None, repr=False)
    _running: Deferred[None] | None = field(default=None, repr=False)


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


class AcmeService(Service):
    """Keeps a certificate valid for each of *name_sets*, calling *installed* with each one to serve."""

    log = Logger()

    def __init__(
        self,
        *,
        client: AcmeClient,
        storage: Storage,
        name_sets: Sequence[Sequence[str]],
        solvers: Sequence[ChallengeSolver],
        installed: Callable[[Stored], object],
        clock: IReactorTime,
        email: str | None = None,
        eab: ExternalAccount | None = None,
        key_type: KeyType = KeyType.ECDSA_P256,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.storage = storage
        self.solvers = list(solvers)
        self.installed = installed
        self.clock = clock
        self.email = email
        self.eab = eab
        self.key_type = key_type
        self._jitter = jitter
        self.managed = [Managed(names=tuple(sorted(set(n))), jitter=jitter()) for n in name_sets]
        self._registering: Waiters[None] | None = None

    def now(self) -> datetime.datetime:
        return _utc(self.clock.seconds())

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        for managed in self.managed:
            stored = self.storage.load(managed.names)
            if stored is not None:
                managed.stored = stored
                self.installed(stored)
            self.check(managed)

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        super().stopService()
        for managed in self.managed:
            if managed._timer is not None and managed._timer.active():
                managed._timer.cancel()
            managed._timer = None
        return self.idle()

    def idle(self) -> Deferred[None]:
        """Fires once no check started so far is still running (for a stop, and for tests)."""
        running = [m._running for m in self.managed if m._running is not None]
        if not running:
            return succeed(None)
        return DeferredList([chained(d) for d in running]).addCallback(lambda _: None)

    def add(self, names: Sequence[str]) -> Deferred[None]:
        """Keep a certificate valid for *names* too (on-demand TLS): the stored one installed, else one ordered; fires
        once that first check is over.  A name set kept already is checked, not added twice."""
        key = tuple(sorted(set(names)))
        managed = next((m for m in self.managed if m.names == key), None)
        if managed is None:
            managed = Managed(names=key, jitter=self._jitter())
            self.managed.append(managed)
            stored = self.storage.load(key)
            if stored is not None:
                managed.stored = stored
                self.installed(stored)
        return self.check(managed)

    def check(self, managed: Managed) -> Deferred[None]:
        """Run one check of *managed* now, or follow the one running."""
        if managed._timer is not None and managed._timer.active():
            managed._timer.cancel()
        managed._timer = None
        if managed._running is None:
            running: Deferred[None] = ensureDeferred(self._check(managed))
            if running.called:
                return succeed(None)
            managed._running = running
            running.addBoth(self._finished, managed)
        return chained(managed._running)

    def _finished(self, result: Any, managed: Managed) -> None:
        managed._running = None

    async def _check(self, managed: Managed) -> None:
        try:
            await self._renew_if_due(managed)
        except Exception as e:  # noqa: BLE001 - any failure (the CA's, the network's, the disk's) is retried
            self._failed(managed, e)
        else:
            managed.failures, managed._retries, managed.last_error = 0, None, None
            self._schedule(managed, self._next_check(managed))

    async def _renew_if_due(self, managed: Managed) -> None:
        stored = managed.stored
        if stored is not None:
            managed.window = await self._window(managed, stored)
            managed.due_at = renewal_due_at(stored.not_before, stored.not_after, managed.jitter, managed.window)
            if self.now() < managed.due_at:
                managed.state = CertificateState.VALID
                return
        managed.state = CertificateState.OBTAINING if stored is None else CertificateState.RENEWING
        await self._register()
        old = x509.load_pem_x509_certificate(stored.chain_pem) if stored is not None else None
        issued = await self.client.obtain(managed.names, self.solvers, self.key_type, replaces=old)
        managed.stored = self.storage.save(issued.names, issued.key_pem, issued.chain_pem)
        managed.window = None
        managed.due_at = renewal_due_at(managed.stored.not_before, managed.stored.not_after, managed.jitter)
        managed.state = CertificateState.VALID
        self.log.info(
            "ACME: a certificate for {names} valid until {not_after}, renewal due at {due_at}",
            names=list(managed.names),
            not_after=managed.stored.not_after.isoformat(),
            due_at=managed.due_at.isoformat(),
        )
        self.installed(managed.stored)

    async def _window(self, managed: Managed, stored: Stored) -> RenewalWindow | None:
        """The CA's ARI window for *stored* when it offers one; the last one while it is fresh; None when asking fails
        (two thirds of the lifetime then, and the failure logged: ARI only ever brings renewal forward)."""
        if managed.window is not None and self.now() < managed.window.ask_again_at:
            return managed.window
        try:
            return await self.client.renewal_info(x509.load_pem_x509_certificate(stored.chain_pem))
        except Exception as e:  # noqa: BLE001 - see the docstring
            self.log.warn("ACME: no renewal window for {names}: {error}", names=list(managed.names), error=str(e))
            return None

    async def _register(self) -> None:
        """Register the account once (every name set's first order waits on the same registration)."""
        if self.client.account_url is not None:
            return
        if self._registering is not None:
            await self._registering.wait()
            return
        waiting: Waiters[None] = Waiters()
        self._registering = waiting
        try:
            await self.client.register(self.email, self.eab)
        except Exception as e:
            self._registering = None
            waiting.fail(e)
            raise
        self._registering = None
        waiting.fire(None)

    def _next_check(self, managed: Managed) -> datetime.datetime:
        """When to look again: when due, or sooner when the CA asked to be asked again about its window."""
        assert managed.due_at is not None
        if managed.window is not None:
            # Never sooner than a minute from now, whatever the CA's answer said.
            soonest = self.now() + datetime.timedelta(seconds=RETRY_AFTER_MIN)
            return min(managed.due_at, max(managed.window.ask_again_at, soonest))
        return managed.due_at

    def _failed(self, managed: Managed, error: Exception) -> None:
        managed.failures += 1
        managed.failures_total += 1
        managed.state = CertificateState.FAILED
        if isinstance(error, AcmeError):
            managed.last_error, problem = str(error), error.problem
        else:  # the network's or the disk's: say where
            managed.last_error, problem = f"{type(error).__name__} with {self.client.directory_url}: {error}", None
        self.log.error(
            "ACME: obtaining a certificate for {names} failed (attempt {attempt}): {error}",
            names=list(managed.names), attempt=managed.failures, error=managed.last_error,
            problem_type=problem.type if problem else None, problem_detail=problem.detail if problem else None,
            problem_status=problem.status if problem else None,
        )
        if managed._retries is None:
            expiry = managed.stored.not_after if managed.stored is not None else self.now()
            managed._retries = retry_delays(self.now, expiry, self._jitter)
        delay = next(managed._retries)
        self._schedule(managed, self.now() + datetime.timedelta(seconds=delay))

    def _schedule(self, managed: Managed, when: datetime.datetime) -> None:
        managed.next_check_at = when
        if not self.running:
            return
        delay = max(0.0, (when - self.now()).total_seconds())
        managed._timer = self.clock.callLater(delay, self.check, managed)

    def figures(self) -> list[dict[str, Any]]:
        """Each name set's state for /status and /metrics (JSON-able; times as Unix seconds)."""
        now = self.clock.seconds()
        out = []
        for m in self.managed:
            expiry = m.stored.not_after.timestamp() if m.stored is not None else None
            out.append({
                "names": list(m.names),
                "state": m.state.value,
                "not_after": expiry,
                "expiry_seconds": expiry - now if expiry is not None else None,
                "due_at": m.due_at.timestamp() if m.due_at is not None else None,
                "next_check_at": m.next_check_at.timestamp() if m.next_check_at is not None else None,
                "renewal_window": [m.window.start.timestamp(), m.window.end.timestamp()] if m.window else None,
                "failures": m.failures,
                "failures_total": m.failures_total,
                "last_error": m.last_error,
            })
        return out
