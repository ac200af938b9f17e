"""One serving process as one service, from the server's side: started together, stopped in the order a graceful stop needs."""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..backend.interface import Backend
from ..web.app import PHPApp
from ..web.site import FrontSite

__all__ = ["FrontService", "adopt", "release"]


def adopt(parent: MultiService, service: Any) -> None:
    """Join a running *service* to *parent* without starting it again (a reload's new part)."""
    parent.services.append(service)
    service.parent = parent


def release(parent: MultiService, service: Any) -> None:
    """Take *service* out of *parent* without stopping it: the caller stops it when it may."""
    parent.services.remove(service)
    service.parent = None


class FrontService(MultiService):
    """Listeners, the PHP backend and (in managed mode) php-fpm itself.

    Starting starts php-fpm (if managed) and the listeners together: requests
    that arrive before php-fpm is ready wait in the pool's queue.  Stopping,
    on SIGTERM: stop accepting, give requests in flight ``shutdown_grace``
    seconds, close the backend, then stop php-fpm.
    """

    log = Logger()

    def __init__(
        self,
        *,
        app: PHPApp,
        site: FrontSite,
        backend: Backend,
        listeners: list[Service],
        clock: IReactorTime,
        shutdown_grace: float = 10.0,
        php_fpm: Optional[Service] = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.site = site
        self.backend = backend
        self.listeners = listeners
        self.php_fpm = php_fpm
        self.clock = clock
        self.shutdown_grace = shutdown_grace
        if php_fpm is not None:
            php_fpm.setServiceParent(self)
        for listener in listeners:
            listener.setServiceParent(self)

    _site_started = False

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        # Hold the site started (its access log open) until the drain is
        # over: the last listening port to close would stop it, before the
        # requests still in flight are finished and logged.
        self.site.doStart()
        self._site_started = True
        super().startService()

    def stopService(self) -> "Deferred[Any]":  # noqa: N802 - Twisted's name
        Service.stopService(self)
        return self._stop()

    @inlineCallbacks
    def _stop(self) -> Any:
        yield DeferredList([d for d in (l.stopService() for l in self.listeners) if d is not None])
        deadline = self.clock.seconds() + self.shutdown_grace
        if self.app.in_flight:
            self.log.info(
                "waiting up to {grace} s for {count} requests in flight",
                grace=self.shutdown_grace,
                count=self.app.in_flight,
            )
            idle = self.app.wait_idle()
            idle.addTimeout(self.shutdown_grace, self.clock)
            try:
                yield idle
            except Exception:
                self.log.warn("{count} requests cut off at shutdown", count=self.app.in_flight)
        # Let the last bytes of finished responses (and static downloads)
        # reach their clients before the reactor drops every connection.
        closed = self.site.close_connections()
        closed.addTimeout(max(deadline - self.clock.seconds(), 0.5), self.clock)
        try:
            yield closed
        except Exception:
            self.log.warn("client connections still open at shutdown are dropped")
        if self._site_started:
            self._site_started = False
            self.site.doStop()
        yield self.backend.close()
        if self._retiring:
            yield DeferredList(list(self._retiring))
        if self.php_fpm is not None:
            yield self.php_fpm.stopService()

    # -- a reload ------------------------------------------------------------------

    _retiring: "set[Deferred[Any]]" = set()

    def swap(
        self,
        *,
        app: PHPApp,
        site: FrontSite,
        backend: Backend,
        listeners: list[Any],
        php_fpm: Optional[Service],
    ) -> "Deferred[Any]":
        """Serve new requests with these parts; the old ones finish what they hold, then close (SIGHUP).

        *listeners* are the ones to serve from now on: those already here
        keep their sockets and get the new site (:meth:`Listener.use`), new
        ones are listening already; those left out stop listening.  Open
        client connections move to the new site for their next request.
        Fires once the old parts are closed.
        """
        old_app, old_site, old_backend, old_fpm = self.app, self.site, self.backend, self.php_fpm
        for listener in self.listeners:
            if listener not in listeners:
                self._detach(listener)
                listener.stopService()
        site.doStart()  # held until its own retirement, as at start
        for listener in listeners:
            if listener in self.listeners:
                listener.use(site)
            else:
                self._attach(listener)
        site.adopt_channels(old_site)
        self.app, self.site, self.backend, self.listeners = app, site, backend, list(listeners)
        if php_fpm is not old_fpm and php_fpm is not None:
            self._attach(php_fpm)
        self.php_fpm = php_fpm
        retired = self._retire(
            old_app,
            old_site,
            old_backend if old_backend is not backend else None,
            old_fpm if old_fpm is not php_fpm else None,
        )
        if not retired.called:
            if not self._retiring:
                self._retiring = set()
            self._retiring.add(retired)
            retired.addBoth(self._retired, retired)
        return retired

    def _retired(self, result: Any, d: "Deferred[Any]") -> Any:
        self._retiring.discard(d)
        return result

    def _attach(self, service: Service) -> None:
        adopt(self, service)

    def _detach(self, service: Service) -> None:
        release(self, service)

    @inlineCallbacks
    def _retire(self, app: PHPApp, site: FrontSite, backend: Optional[Backend], php_fpm: Optional[Service]) -> Any:
        if app.in_flight:
            self.log.info("reload: {count} requests finish on the previous configuration", count=app.in_flight)
        yield app.wait_idle()
        site.doStop()
        if backend is not None:
            drain = getattr(backend, "drain", None)
            yield drain() if drain is not None else backend.close()
        if php_fpm is not None:
            self._detach(php_fpm)
            yield php_fpm.stopService()
