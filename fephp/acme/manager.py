"""A certificate for a name set, from the owner's side: the stored one while it is not due, else a new order saved.

This is the step the server's parent process will run per site at start
and on each renewal timer; workers only ever :meth:`Storage.load`.
"""

from __future__ import annotations

import datetime
from typing import Awaitable, Callable, Sequence

from .client import Issued
from .renewal import is_renewal_due
from .storage import Storage, Stored

__all__ = ["load_or_obtain"]


async def load_or_obtain(
    storage: Storage,
    names: Sequence[str],
    obtain: Callable[[Sequence[str]], Awaitable[Issued]],
    now: datetime.datetime,
    jitter: float,
) -> Stored:
    """The stored certificate for *names* if present and not due at *now*; else ``obtain(names)``, saved and returned.

    A failed order raises (an AcmeError with the CA's problem) and leaves the
    stored certificate as it was, to keep serving until the retry.
    """
    stored = storage.load(names)
    if stored is not None and not is_renewal_due(now, stored.not_before, stored.not_after, jitter):
        return stored
    issued = await obtain(names)
    return storage.save(issued.names, issued.key_pem, issued.chain_pem)
