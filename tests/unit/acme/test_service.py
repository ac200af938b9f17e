"""fephp.acme's AcmeService on a Clock: load at start, one order when due, ARI's window, retries with backoff."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Sequence, cast

from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger

from fephp.acme import CAProblem, ChallengeTokens, Http01, Issued, KeyType, Problem, RenewalWindow, Storage, Stored
from fephp.acme.client import AcmeClient
from fephp.acme.service import AcmeService, CertificateState
from tests.support.acme_fakes import JAN_1, issued

NAMES = ("example.test", "www.example.test")
DAY = datetime.timedelta(days=1)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class FakeClient:
    """Stands for AcmeClient: registers, issues 90-day certificates from the clock's now (or fails), gives a window."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.account_url: str | None = None
        self.registrations = 0
        self.orders: list[tuple[tuple[str, ...], x509.Certificate | None]] = []
        self.errors: list[Exception] = []
        self.window: RenewalWindow | None = None
        self.windows_asked = 0
        self.hold: Deferred[None] | None = None

    async def register(self, email: str | None, eab: Any) -> str:
        self.registrations += 1
        self.account_url = "https://ca.test/acct/1"
        return self.account_url

    async def renewal_info(self, certificate: x509.Certificate) -> RenewalWindow | None:
        """The window set, to be asked again in a day; only for the certificate issued before it."""
        self.windows_asked += 1
        if self.window is None or certificate.not_valid_before_utc >= self.window.start:
            return None
        now = EPOCH + datetime.timedelta(seconds=self.clock.seconds())
        return RenewalWindow(self.window.start, self.window.end, None, now + DAY)

    async def obtain(
        self, names: Sequence[str], solvers: Any, key_type: KeyType, replaces: x509.Certificate | None = None
    ) -> Issued:
        self.orders.append((tuple(names), replaces))
        if self.hold is not None:
            await self.hold
        if self.errors:
            raise self.errors.pop(0)
        return issued(names, EPOCH + datetime.timedelta(seconds=self.clock.seconds()))


def service(
    tmp_path: Path, clock: Clock, client: FakeClient, events: list[dict[str, Any]], installed: list[Stored]
) -> AcmeService:
    """An AcmeService of *client* over a storage in *tmp_path*, jitter 0, its log events into *events*, each
    certificate it installs into *installed*."""
    acme = AcmeService(
        client=cast(AcmeClient, client), storage=Storage(tmp_path / "acme"), name_sets=[NAMES],
        solvers=[Http01(ChallengeTokens())], installed=installed.append, clock=clock, jitter=lambda: 0.0,
    )
    acme.log = Logger(observer=cast(ILogObserver, events.append))
    return acme


def at(day: float) -> Clock:
    clock = Clock()
    clock.advance((JAN_1 + day * DAY - EPOCH).total_seconds())
    return clock


def test_nothing_stored_registers_orders_once_installs_and_times_the_renewal(tmp_path: Path) -> None:
    """A first start: one registration, one order, the certificate installed and saved, the next check on day 60."""
    clock = at(0)
    events: list[dict[str, Any]] = []
    client = FakeClient(clock)
    installed: list[Stored] = []
    acme = service(tmp_path, clock, client, events, installed)
    acme.startService()
    [managed] = acme.managed
    assert (client.registrations, client.orders, managed.state) == (1, [(NAMES, None)], CertificateState.VALID)
    assert installed == [managed.stored] == [Storage(tmp_path / "acme").load(NAMES)]
    assert managed.due_at == managed.next_check_at == JAN_1 + 60 * DAY
    assert [call.getTime() for call in clock.getDelayedCalls()] == [(JAN_1 + 60 * DAY - EPOCH).total_seconds()]
    assert [e["log_format"].split(":")[0] for e in events] == ["ACME"]


def test_a_restart_serves_the_stored_certificate_without_a_word_to_the_ca_then_renews_when_due(tmp_path: Path) -> None:
    """Stored and not due: installed at start, no registration, no order; on day 60 one order replacing it."""
    old = issued(list(NAMES), JAN_1)
    stored = Storage(tmp_path / "acme").save(old.names, old.key_pem, old.chain_pem)
    clock = at(10)
    events: list[dict[str, Any]] = []
    client = FakeClient(clock)
    installed: list[Stored] = []
    acme = service(tmp_path, clock, client, events, installed)
    acme.startService()
    assert (installed, client.registrations, client.orders) == ([stored], 0, [])
    clock.advance((50 * DAY).total_seconds() - 1)
    assert client.orders == []
    clock.advance(1)
    assert client.orders == [(NAMES, x509.load_pem_x509_certificate(old.chain_pem))]
    assert installed[-1].not_before == JAN_1 + 60 * DAY
    assert acme.managed[0].due_at == JAN_1 + 120 * DAY


def test_the_cas_window_brings_renewal_forward(tmp_path: Path) -> None:
    """An ARI window from day 20 to 22 makes the certificate due on day 20 (jitter 0), not day 60."""
    old = issued(list(NAMES), JAN_1)
    Storage(tmp_path / "acme").save(old.names, old.key_pem, old.chain_pem)
    clock = at(10)
    events: list[dict[str, Any]] = []
    client = FakeClient(clock)
    client.window = RenewalWindow(JAN_1 + 20 * DAY, JAN_1 + 22 * DAY, None, JAN_1)
    installed: list[Stored] = []
    acme = service(tmp_path, clock, client, events, installed)
    acme.startService()
    assert (acme.managed[0].due_at, acme.managed[0].next_check_at) == (JAN_1 + 20 * DAY, JAN_1 + 11 * DAY)
    clock.advance(DAY.total_seconds())  # asked again on day 11, as the CA said
    assert (client.windows_asked, client.orders) == (2, [])
    clock.advance((9 * DAY).total_seconds())
    assert (len(client.orders), acme.managed[0].due_at) == (1, JAN_1 + 80 * DAY)


def test_a_refusal_keeps_the_old_certificate_logs_the_problem_and_retries_with_backoff(tmp_path: Path) -> None:
    """Two refusals: FAILED, the problem in the log and figures, retries after 60 s then 120 s, then success."""
    old = issued(list(NAMES), JAN_1)
    stored = Storage(tmp_path / "acme").save(old.names, old.key_pem, old.chain_pem)
    clock = at(70)
    events: list[dict[str, Any]] = []
    client = FakeClient(clock)
    refusal = CAProblem("POST https://ca.test/new-order answered 429", Problem(
        "urn:ietf:params:acme:error:rateLimited", "too many certificates", 429))
    client.errors = [refusal, refusal]
    installed: list[Stored] = []
    acme = service(tmp_path, clock, client, events, installed)
    acme.startService()
    [managed] = acme.managed
    assert (managed.state, managed.stored, managed.failures) == (CertificateState.FAILED, stored, 1)
    assert len(client.orders) == 1
    assert installed == [stored]
    [event] = [e for e in events if e["log_level"].name == "error"]
    assert (event["problem_type"], event["problem_detail"], event["problem_status"], event["attempt"]) == (
        "urn:ietf:params:acme:error:rateLimited", "too many certificates", 429, 1)
    figures = acme.figures()[0]
    assert figures["last_error"] == (
        "the ACME CA refused the request: POST https://ca.test/new-order answered 429"
        " (rateLimited: too many certificates)")
    assert (figures["state"], figures["failures"], figures["failures_total"]) == ("failed", 1, 1)
    assert figures["expiry_seconds"] == (JAN_1 + 90 * DAY - (JAN_1 + 70 * DAY)).total_seconds()
    clock.advance(59)
    assert len(client.orders) == 1
    clock.advance(1)
    assert (len(client.orders), managed.failures) == (2, 2)
    clock.advance(120)
    assert (len(client.orders), managed.failures, managed.failures_total, managed.state) == (
        3, 0, 2, CertificateState.VALID)
    assert installed[-1] is managed.stored and managed.stored != stored


def test_one_order_at_a_time_and_a_stop_cancels_the_timer(tmp_path: Path) -> None:
    """A check asked while the order is out follows it (no second order); stopping leaves no timer behind."""
    clock = at(0)
    events: list[dict[str, Any]] = []
    client = FakeClient(clock)
    client.hold = Deferred()
    installed: list[Stored] = []
    acme = service(tmp_path, clock, client, events, installed)
    acme.startService()
    followed = acme.check(acme.managed[0])
    assert (len(client.orders), followed.called) == (1, False)
    client.hold.callback(None)
    assert (len(client.orders), followed.called) == (1, True)
    stopped = acme.stopService()
    assert (stopped.called, clock.getDelayedCalls()) == (True, [])


def test_a_window_to_ask_again_about_at_once_is_asked_again_a_minute_later_at_the_soonest(tmp_path: Path) -> None:
    """A CA answer whose Retry-After has passed already cannot make the service ask in a loop: next check in 60 s."""
    old = issued(list(NAMES), JAN_1)
    Storage(tmp_path / "acme").save(old.names, old.key_pem, old.chain_pem)
    clock = at(10)
    client = FakeClient(clock)
    acme = service(tmp_path, clock, client, [], [])

    async def stale(certificate: x509.Certificate) -> RenewalWindow:
        client.windows_asked += 1
        return RenewalWindow(JAN_1 + 20 * DAY, JAN_1 + 22 * DAY, None, JAN_1)

    client.renewal_info = stale  # type: ignore[method-assign]
    acme.startService()
    assert acme.managed[0].next_check_at == JAN_1 + 10 * DAY + datetime.timedelta(seconds=60)
    clock.advance(60)
    assert (client.windows_asked, client.orders) == (2, [])
