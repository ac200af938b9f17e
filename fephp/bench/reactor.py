"""The load generator's reactors: Twisted's select and epoll reactors without the log context per event.

Twisted hands every ready socket to its protocol inside
``log.callWithLogger``, which asks the connection for its log prefix and
pushes a context dictionary, so that anything logged while the event is
handled names its connection.  A load generator handles one or two socket
events per request and logs nothing while it runs; that context cost about
as much as the rest of ``fephp bench``'s own work per request in a closed
loop (docs/bench.md).  These reactors dispatch each event directly, through
the loops in ``fephp._twisted`` (the one door to Twisted's private names, a
leaf that imports nothing else of fephp).  Everything else, including how a
disconnect or a protocol's exception is handled, is Twisted's own code.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from twisted.internet.selectreactor import SelectReactor

from .._twisted import epoll_poll_and_dispatch, select_and_dispatch

__all__ = ["BenchSelectReactor", "BenchEPollReactor", "choose", "install"]

#: Up to this many connections the select() reactor is used in rate mode:
#: its timeout has microsecond resolution where epoll's is whole milliseconds,
#: but its cost grows with the number of sockets and it stops at FD_SETSIZE.
SELECT_MAX_CONNECTIONS = 256


class BenchSelectReactor(SelectReactor):
    """A SelectReactor whose loop calls each ready socket straight away."""

    def doSelect(self, timeout: Optional[float]) -> None:  # noqa: N802 - Twisted's name
        select_and_dispatch(self, timeout)

    doIteration = doSelect


try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # pragma: no cover - not Linux: select() everywhere
    BenchEPollReactor: Any = None
else:

    class BenchEPollReactor(EPollReactor):  # type: ignore[no-redef]
        """An EPollReactor whose poll loop calls each ready socket straight away."""

        def doPoll(self, timeout: Optional[float]) -> None:  # noqa: N802 - Twisted's name
            epoll_poll_and_dispatch(self, timeout)

        doIteration = doPoll


def choose(concurrency: int, rate_mode: bool) -> Any:
    """The reactor class for a run: select() when a fixed rate needs its fine timer, else epoll.

    epoll sleeps in whole milliseconds, rounded up, so each timed send of a
    fixed-rate run would leave about half a millisecond late; select() takes
    a microsecond timeout.  A closed loop (``--rps 0``) arms no send timers,
    and there epoll's cheaper wait wins.
    """
    if BenchEPollReactor is None or (rate_mode and concurrency <= SELECT_MAX_CONNECTIONS):
        return BenchSelectReactor
    return BenchEPollReactor


def install(concurrency: int, rate_mode: bool) -> None:
    """Install the reactor :func:`choose` picks, unless a reactor is installed already (tests, embedding)."""
    if "twisted.internet.reactor" in sys.modules:
        return
    from twisted.internet.main import installReactor

    installReactor(choose(concurrency, rate_mode)())
