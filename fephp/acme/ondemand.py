"""On-demand TLS, from the server's side: names first seen in a TLS handshake, asked of the operator, rate-limited.

A site whose hosts include a wildcard (``*.example.com``) cannot have one
certificate for them all without DNS-01; with on-demand TLS, each name a
client asks for (SNI) is asked of the operator's ``ask`` URL
(``GET <ask>?domain=<name>``: 200 approves, anything else refuses, as
Caddy's ``on_demand_tls``), and an approved one is handed to ``approved``
(the ACME service's :meth:`~fephp.acme.service.AcmeService.add`).  Asks are
limited to ``rate`` per ``period`` seconds (a client inventing names cannot
make fephp ask, nor the CA issue, without bound), and at most ``MAX_NAMES``
names are remembered.  States of one name::

    (seen) -> ASKING -> APPROVED (obtained by the service) | DENIED

A name refused by the rate limit is not remembered: a later handshake
asks again.  The handshake that first names it is served the certificate
the listener has for unknown names; the later ones get the name's own
once it is obtained.
"""

from __future__ import annotations

import collections
import enum
from typing import Any, Callable
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["ASK_TIMEOUT", "MAX_NAMES", "NameState", "OnDemand"]

#: Seconds the ask URL may take to answer; no answer is a refusal.
ASK_TIMEOUT = 10.0
#: Names remembered at most (asked, approved or denied); past that, new names are refused without asking.
MAX_NAMES = 10_000


class NameState(enum.Enum):
    """Where one name seen in a handshake is."""

    ASKING = "asking"
    APPROVED = "approved"
    DENIED = "denied"


class OnDemand:
    """The names of on-demand sites, asked of *ask* at most *rate* times per *period* seconds."""

    log = Logger()

    def __init__(
        self,
        ask: str,
        http: HTTPClient,
        clock: IReactorTime,
        approved: Callable[[str], "Deferred[Any]"],
        *,
        rate: int,
        period: float,
    ) -> None:
        self.ask = ask
        self._http = http
        self._clock = clock
        self._approved = approved
        self.rate = rate
        self.period = period
        self.names: dict[str, NameState] = {}
        #: What became of each name asked so far (fires when asked and, if approved, obtained or failed).
        self.settled: dict[str, Deferred[None]] = {}
        self._asked_at: collections.deque[float] = collections.deque()
        self.refused_by_rate = 0

    def allowed(self, now: float) -> bool:
        """Whether one more ask fits the rate at *now* (asks in the last *period* seconds fewer than *rate*)."""
        while self._asked_at and self._asked_at[0] <= now - self.period:
            self._asked_at.popleft()
        return len(self._asked_at) < self.rate

    def seen(self, name: str) -> None:
        """A handshake named *name* (lowercase, a name of an on-demand site with no certificate of its own yet)."""
        if name in self.names:
            return
        if len(self.names) >= MAX_NAMES:
            return
        now = self._clock.seconds()
        if not self.allowed(now):
            self.refused_by_rate += 1
            self.log.warn("on-demand TLS: {name} not asked: {rate} asks in {period} s already",
                          name=name, rate=self.rate, period=self.period)
            return
        self._asked_at.append(now)
        self.names[name] = NameState.ASKING
        self.settled[name] = ensureDeferred(self._ask(name))

    async def _ask(self, name: str) -> None:
        url = f"{self.ask}{'&' if '?' in self.ask else '?'}domain={quote(name, safe='')}"
        try:
            response = await self._http.get(url, timeout=ASK_TIMEOUT)
            await response.content()  # read (and drop) the body, so that the connection is reused
            code = response.code
        except Exception as e:  # noqa: BLE001 - an ask that cannot be made is a refusal
            self.log.warn("on-demand TLS: asking {url} failed: {error}", url=url, error=str(e))
            code = None
        if code != 200:
            self.names[name] = NameState.DENIED
            self.log.info("on-demand TLS: {name} refused by the ask URL (status {code})", name=name, code=code)
            return
        self.names[name] = NameState.APPROVED
        self.log.info("on-demand TLS: {name} approved by the ask URL", name=name)
        await self._approved(name)

    def figures(self) -> dict[str, Any]:
        """For /status: how many names are in each state, and the asks the rate refused."""
        counts = {state.value: 0 for state in NameState}
        for state in self.names.values():
            counts[state.value] += 1
        return {"ask": self.ask, "names": counts, "refused_by_rate": self.refused_by_rate}

