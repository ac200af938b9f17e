"""fephp's reactor: Twisted's epoll reactor without the log context around each event.

Twisted's epoll reactor hands every ready socket to its protocol inside
``log.callWithLogger``, which asks the connection for its log prefix and
pushes a context dictionary so that anything logged while the event is
handled says which connection it came from.  For a front server that is two
or three socket events per request, and that context costs more than
fephp's own FastCGI encoding.  fephp's log lines name what they are about
themselves (the URI, the backend), so this reactor dispatches events
directly.  Everything else, including the handling of a disconnect or of an
exception raised by a protocol, is Twisted's own code.

``twistd fephp`` installs it unless ``twistd --reactor`` chose another one;
a reactor other code already installed is left alone.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from twisted.internet.main import installReactor

from .._twisted import epoll_poll_and_dispatch

__all__ = ["FrontReactor", "install_if_free"]

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # not Linux: no epoll, and twistd's default reactor stays
    EPollReactor = None  # type: ignore[assignment,misc]


if EPollReactor is not None:

    class FrontReactor(EPollReactor):  # type: ignore[misc,valid-type]
        """An EPollReactor whose poll loop calls each ready socket straight away."""

        def doPoll(self, timeout: Optional[float]) -> None:  # noqa: N802 - Twisted's name
            epoll_poll_and_dispatch(self, timeout)

        doIteration = doPoll

else:  # pragma: no cover - Linux is where fephp is measured and deployed
    FrontReactor = None  # type: ignore[assignment,misc]


def install_if_free() -> Any:
    """Install :class:`FrontReactor` as the global reactor if none is installed yet.

    Returns the reactor in use afterwards, ours or the one already there.
    """
    if "twisted.internet.reactor" not in sys.modules and FrontReactor is not None:
        installReactor(FrontReactor())
    from twisted.internet import reactor

    return reactor
