"""When to renew a certificate and when to try again after a failure, from the certificate owner's side: pure decisions.

A certificate is due at two thirds of its lifetime (30 days before the end
of a 90-day one, as Let's Encrypt advises), brought forward by a jitter of
up to ``JITTER_SHARE`` of the lifetime so that many sites issued together
do not all renew in the same minute.  The jitter is a number in [0, 1)
the caller draws (``random.random`` in the server, a constant in tests).
When the CA suggests a window (ACME Renewal Information, RFC 9773), the
certificate is due at the point of the window that jitter picks instead.
"""

from __future__ import annotations

import datetime
from typing import Callable, Iterator

from twisted.application.internet import backoffPolicy

from .ari import RenewalWindow

__all__ = [
    "JITTER_SHARE",
    "RETRY_FIRST",
    "RETRY_MAX",
    "is_renewal_due",
    "renewal_due_at",
    "retry_delays",
]

#: The most the jitter brings renewal forward, as a share of the lifetime (3 days of 90).
JITTER_SHARE = 1 / 30
#: Seconds before the first retry after a failed order, and the most between two retries.
RETRY_FIRST = 60.0
RETRY_MAX = 6 * 3600.0


def renewal_due_at(
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    jitter: float,
    window: RenewalWindow | None = None,
) -> datetime.datetime:
    """The moment a certificate valid from *not_before* to *not_after* is due for renewal, for a *jitter* in [0, 1):
    inside the CA's suggested *window* when there is one, else at two thirds of the lifetime less the jitter."""
    if window is not None:
        return window.pick(jitter)
    lifetime = not_after - not_before
    return not_before + lifetime * 2 / 3 - lifetime * (JITTER_SHARE * jitter)


def is_renewal_due(
    now: datetime.datetime,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    jitter: float,
    window: RenewalWindow | None = None,
) -> bool:
    """True when a certificate valid from *not_before* to *not_after* should be renewed at *now* (a window wholly
    in the past means at once, RFC 9773 4.2)."""
    return now >= renewal_due_at(not_before, not_after, jitter, window)


def retry_delays(
    now: Callable[[], datetime.datetime], not_after: datetime.datetime, jitter: Callable[[], float]
) -> Iterator[float]:
    """Seconds to wait before each retry of a failed renewal: doubling from RETRY_FIRST to RETRY_MAX (Twisted's
    backoffPolicy, plus *jitter* seconds), none past the expiry while it is ahead; after it, RETRY_MAX apart.
    """
    policy = backoffPolicy(initialDelay=RETRY_FIRST, maxDelay=RETRY_MAX, factor=2.0, jitter=jitter)
    attempt = 0
    while True:
        delay = policy(attempt)
        left = (not_after - now()).total_seconds()
        yield min(delay, left) if left > 0 else delay
        attempt += 1
