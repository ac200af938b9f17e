"""fephp's reactor: Twisted's epoll reactor without the log context around each event.

Twisted's epoll reactor hands every ready socket to its protocol inside
``log.callWithLogger``, which asks the connection for its log prefix and pushes
a context dictionary so that anything logged while the event is handled says
which connection it came from.  For a front server that is two or three socket
events per request, and that context costs more than fephp's own FastCGI
encoding: about a sixth of the CPU fephp spends on a small PHP request.
fephp's log lines name what they are about themselves (the URI, the
backend), so this reactor dispatches events directly.  Everything else,
including the handling of a disconnect or of an exception raised by a
protocol, is Twisted's own code.

``twistd fephp`` installs it unless ``twistd --reactor`` chose another one;
a reactor other code already installed is left alone.
"""

from __future__ import annotations

import errno
import sys
from typing import Any, Optional

__all__ = ["FrontReactor", "install_if_free"]

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # not Linux: no epoll, and twistd's default reactor stays
    EPollReactor = None  # type: ignore[assignment,misc]


if EPollReactor is not None:

    class FrontReactor(EPollReactor):  # type: ignore[misc,valid-type]
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
                # A socket an earlier event of this batch closed is gone.
                if selectable is not None:
                    dispatch(selectable, fd, event)

        doIteration = doPoll

else:  # pragma: no cover - Linux is where fephp is measured and deployed
    FrontReactor = None  # type: ignore[assignment,misc]


def install_if_free() -> Any:
    """Install :class:`FrontReactor` as the global reactor if none is installed yet.

    Returns the reactor in use afterwards, ours or the one already there.
    """
    if "twisted.internet.reactor" not in sys.modules and FrontReactor is not None:
        from twisted.internet.main import installReactor

        installReactor(FrontReactor())
    from twisted.internet import reactor

    return reactor
