"""The load generator's reactors: Twisted's select and epoll reactors without the log context per event.

Twisted hands every ready socket to its protocol inside
``log.callWithLogger``, which asks the connection for its log prefix and
pushes a context dictionary, so that anything logged while the event is
handled names its connection.  A load generator handles one or two socket
events per request and logs nothing while it runs; that context cost about
half of ``fephp bench``'s CPU per request in a closed loop (docs/bench.md).
These reactors dispatch each event directly.  Everything else, including how
a disconnect or a protocol's exception is handled, is Twisted's own code.

fephp's server reactor does the same for epoll; this module keeps its own
copy because the load generator imports nothing else of fephp.
"""

from __future__ import annotations

import errno
import select
import sys
from typing import Any, Optional

from twisted.internet.selectreactor import SelectReactor

__all__ = ["BenchSelectReactor", "BenchEPollReactor", "choose", "install"]

#: Up to this many connections the select() reactor is used in rate mode:
#: its timeout has microsecond resolution where epoll's is whole milliseconds,
#: but its cost grows with the number of sockets and it stops at FD_SETSIZE.
SELECT_MAX_CONNECTIONS = 256


class BenchSelectReactor(SelectReactor):
    """A SelectReactor whose loop calls each ready socket straight away."""

    def doSelect(self, timeout: Optional[float]) -> None:  # noqa: N802 - Twisted's name
        reads = self._reads
        writes = self._writes
        try:
            r, w, _ = select.select(reads, writes, (), timeout)
        except (ValueError, TypeError, OSError) as e:
            if isinstance(e, OSError) and e.errno == errno.EINTR:
                return
            # A closed descriptor still registered: Twisted's own recovery.
            return SelectReactor.doSelect(self, timeout)
        dispatch = self._doReadOrWrite
        for selectable in r:
            # A socket an earlier event of this batch closed is gone.
            if selectable in reads:
                dispatch(selectable, "doRead")
        for selectable in w:
            if selectable in writes:
                dispatch(selectable, "doWrite")

    doIteration = doSelect


try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # pragma: no cover - not Linux: select() everywhere
    BenchEPollReactor: Any = None
else:

    class BenchEPollReactor(EPollReactor):  # type: ignore[no-redef]
        """An EPollReactor whose poll loop calls each ready socket straight away."""

        def doPoll(self, timeout: Optional[float]) -> None:  # noqa: N802 - Twisted's name
            try:
                events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
            except OSError as e:
                if e.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            dispatch = self._doReadOrWrite
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is not None:
                    dispatch(selectable, fd, event)

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
