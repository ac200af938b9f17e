"""The server as it runs, from the operator's side: one serving process or the parent of worker processes, each reloadable.

:func:`build_server` makes one of the two shapes for a configuration.  Both
answer SIGHUP (:meth:`reload`: read and check the file again, build what
changed with :mod:`fephp.server.build`'s functions, switch, or keep the
running configuration when anything fails) and SIGUSR1 (:meth:`reopen_logs`),
and both carry the admin listeners of ``admin.listen``.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any, Callable, Iterable, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.logger import Logger

from ..acme import ChallengeTokens, Stored, TlsAlpnResponder
from ..acme.ondemand import OnDemand
from ..backend.balancer import Balancer
from ..process.phpfpm import ManagedPHPFPM
from ..web.site import FrontSite
from .admin import AdminSite, LocalView, PHPFPMStatus, backends_part, server_part
from .build import (
    SiteBackends,
    admin_spare_children,
    backend_specs,
    balancer_keeps,
    build_backend,
    build_fpm_status,
    build_front,
    build_managed_php_fpm,
    build_site,
    build_site_backends,
    build_sites,
    build_sni,
    managed_settings,
    needs_managed,
    pool_settings,
)
from .config import Config, ConfigError, load_config
from .acme import AcmeSite, ChallengeFiles, acme_sites, build_acme, challenge_folder, front_for
from .listeners import Listener
from .service import adopt, release
from .settings import TLSConfig, changed_sections, site_configs
from .watch import WatchService
from .workers import FIRST_LISTEN_FD, SharedListener, WorkersService, WorkerSupervisor, connections_per_worker

__all__ = ["ParentServer", "SingleServer", "build_server"]


def build_server(config: Config, config_text: Optional[str], reactor: Any) -> Service:
    """The whole server for *config*: one serving process, or the parent of ``server.workers`` processes."""
    if config.server.workers > 1:
        return _build_workers_parent(config, config_text or "", reactor)
    return SingleServer(config, config_text, reactor)


class _Reloadable:
    """What both shapes share: the configuration served, one reload at a time, php-fpm's status, the admin listeners.

    A subclass says which configurations it cannot switch to without a
    restart (:meth:`_refusal`) and how to switch (:meth:`_switch`, a
    generator run by inlineCallbacks that returns whether it switched).
    """

    log = Logger()

    def _init_reloadable(self, config: Config, config_text: Optional[str], reactor: Any, admin_site: AdminSite,
                         managed: Optional[ManagedPHPFPM]) -> None:
        self.config = config
        self.config_text = config_text
        self._reactor = reactor
        self.reloads = 0
        self._reloading = False
        self.fpm_status: Optional[PHPFPMStatus] = build_fpm_status(config, reactor, _socket_of(managed))
        self.admin_site = admin_site
        # php.worker.watch (every site's): a change restarts the workers by the reload SIGHUP runs (new ones
        # boot first). The globs are the ones the server started with; a reload does not change what is watched.
        watched = [g for site in site_configs(config) if site.php.worker is not None for g in site.php.worker.watch]
        if watched:
            WatchService(watched, self._watched_change, clock=reactor).setServiceParent(self)  # type: ignore[arg-type]
        self.admin: dict[str, Listener] = {}
        for description in config.admin.listen:
            listener = Listener(reactor, description, admin_site)
            self.admin[description] = listener
            listener.setServiceParent(self)  # type: ignore[arg-type]

    def _watched_change(self) -> None:
        self.reload().addErrback(lambda f: self.log.failure("php.worker.watch: the restart failed", f))

    def reload(self) -> "Deferred[bool]":
        """SIGHUP: switch to the configuration in the file now, or keep this one; fires with whether it switched."""
        if self._reloading:
            self.log.warn("reload: SIGHUP received while a reload is under way; ignored")
            return succeed(False)
        self._reloading = True
        d: Deferred[bool] = self._reload()

        def done(result: Any) -> Any:
            self._reloading = False
            return result

        return d.addBoth(done)

    @inlineCallbacks
    def _reload(self) -> Any:
        loaded = self._read_config()
        if loaded is None:
            return False
        config, text = loaded
        refusal = self._refusal(config)
        if refusal:
            self.log.error("reload: {refusal}; keeping the running configuration", refusal=refusal)
            return False
        switched = yield self._switch(config, text)
        return switched

    def _read_config(self) -> "Optional[tuple[Config, Optional[str]]]":
        """The configuration in the file now, or None (logged) when it does not load."""
        path = self.config.source
        try:
            with open(path, encoding="utf-8") as f:
                text: Optional[str] = f.read()
        except (OSError, UnicodeDecodeError):
            text = None  # load_config says why
        try:
            return load_config(path, text), text
        except ConfigError as e:
            self.log.error("reload: the configuration is not valid, keeping the running one: {error}", error=str(e))
            return None

    def _refusal(self, config: Config) -> Optional[str]:
        raise NotImplementedError

    def _switch(self, config: Config, text: Optional[str]) -> "Deferred[bool]":
        raise NotImplementedError

    @inlineCallbacks
    def _new_php_fpm(self, config: Config, managed: Optional[ManagedPHPFPM], started: list[Service],
                     children: Optional[int] = None) -> Any:
        """The php-fpm *config* runs: *managed* if its settings are unchanged, else a new one, started and ready."""
        if not needs_managed(config):
            return None
        if managed is not None and managed_settings(config) == managed_settings(self.config):
            return managed
        new = build_managed_php_fpm(config, self._reactor, children=children)
        new.startService()
        started.append(new)
        # Nothing switches to it before its php-fpm answers.
        yield new.ready()
        return new

    @inlineCallbacks
    def _undo(self, error: Exception, started: list[Service]) -> Any:
        """A reload failed half way: say why and stop what it started, newest first."""
        self.log.error("reload: {error}; keeping the running configuration", error=str(error) or type(error).__name__)
        for part in reversed(started):
            yield part.stopService()
        return False

    def _serve(self, config: Config, text: Optional[str], managed: Optional[ManagedPHPFPM]) -> None:
        """From now on *config* is the one served: php-fpm's status follows its php-fpm."""
        self.config, self.config_text = config, text
        self.reloads += 1
        old_status = self.fpm_status
        self.fpm_status = build_fpm_status(config, self._reactor, _socket_of(managed))
        if old_status is not None:
            old_status.close()

    def _close_admin_and_status(self, result: Any) -> Any:
        stops = [listener.stopService() for listener in self.admin.values()]
        if self.fpm_status is not None:
            stops.append(self.fpm_status.close())
        return DeferredList(stops).addCallback(lambda _: result)


def _bind(descriptions: Iterable[str], current: "dict[str, Any]", make: Callable[[str], Any],
          started: list[Service]) -> "list[Any]":
    """The listeners for *descriptions*: those in *current* kept, the others made and started (added to *started*).

    A new listener binds here, so a port in use fails the reload before anything was switched.
    """
    listeners = []
    for description in descriptions:
        listener = current.get(description)
        if listener is None:
            listener = make(description)
            listener.startService()
            started.append(listener)
        listeners.append(listener)
    return listeners


class _Closing(Service):
    """A backend built by a reload that failed later: stopping it closes it (its workers exit)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def stopService(self) -> "Deferred[None]":  # noqa: N802 - Twisted's name
        closed: Deferred[None] = self.backend.close()
        return closed


def _socket_of(managed: Optional[ManagedPHPFPM]) -> Optional[str]:
    return managed.socket_path if managed is not None else None


def _managed(service: Any) -> Optional[ManagedPHPFPM]:
    return service if isinstance(service, ManagedPHPFPM) else None


class SingleServer(_Reloadable, MultiService):
    """One serving process (a FrontService), its admin listeners, and its reload on SIGHUP.

    :meth:`reload` reads the file again and builds what changed with the
    same functions as at start: a new site always (a new root, routes, log
    settings), a new pool when the php or timeouts settings changed, a new
    managed php-fpm (started and ready before anything switches) when its
    settings changed.  Unchanged listeners keep their sockets; requests in
    flight finish on the old parts, which then close.  A configuration that
    does not load changes nothing.
    """

    def __init__(self, config: Config, config_text: Optional[str], reactor: Any) -> None:
        MultiService.__init__(self)

        # Automatic HTTPS (tls.acme): the services are made once, at start; a reload keeps them.
        self.acme_tokens = ChallengeTokens()
        self.acme_alpn = TlsAlpnResponder(lambda: datetime.datetime.now(datetime.timezone.utc))
        self.acme_sites = acme_sites(config.sites)
        self.on_demand: dict[str, OnDemand] = {}
        #: Certificates obtained on demand, by name set: put again into the SNI map a reload builds.
        self.on_demand_installed: dict[tuple[str, ...], TLSConfig] = {}
        sni = self.sni = build_sni(config, self._alpn(config), self._seen)

        def listeners(site: FrontSite) -> list[Service]:
            # A port that cannot be bound stops twistd with the error, instead
            # of a server that runs and serves nothing.
            return [Listener(reactor, description, site, sni, tls_engine=config.server.tls_engine)
                    for description in config.server.listen]

        self.front = build_front(config, reactor, listeners)
        self.front.site.resource = front_for(self.front.site.resource, self.acme_sites, self.acme_tokens)
        self.front.setServiceParent(self)
        self.acme, self.on_demand = build_acme(
            self.acme_sites, reactor, self.acme_tokens, self._alpn(config), self._acme_installed
        )
        for acme in self.acme:
            acme.setServiceParent(self)
        view = LocalView(
            self.front,
            config=lambda: self.config,
            config_text=lambda: self.config_text,
            fpm=lambda: self.fpm_status,
            reloads=lambda: self.reloads,
            certificates=lambda: [figures for acme in self.acme for figures in acme.figures()],
            on_demand=lambda: {site: on_demand.figures() for site, on_demand in self.on_demand.items()},
        )
        self.view = view
        self._init_reloadable(config, config_text, reactor, AdminSite(view, reactor), _managed(self.front.php_fpm))

    def _alpn(self, config: Config) -> Optional[TlsAlpnResponder]:
        """The TLS-ALPN-01 responder when sites use ACME and the TLS engine is pyOpenSSL's (the standard library's
        ssl has no ALPN callback that could change the certificate: HTTP-01 only there)."""
        return self.acme_alpn if self.acme_sites and config.server.tls_engine == "pyopenssl" else None

    def _acme_installed(self, site: Optional[AcmeSite], stored: Stored) -> None:
        """A certificate from ACME (*site* None: a name on demand): shown from the next handshake on, by the SNI map
        the listeners use now."""
        tls = TLSConfig(str(stored.chain_path), str(stored.key_path))
        if site is None:
            self.on_demand_installed[stored.names] = tls
        if self.sni is not None:
            self.sni.install(site.exact_hosts if site else stored.names, site.default if site else False, tls)

    def _seen(self, site: str, name: str) -> None:
        """A handshake named *name*, of on-demand *site*'s wildcards, without a certificate of its own yet."""
        on_demand = self.on_demand.get(site)
        if on_demand is not None:
            on_demand.seen(name)

    def stopService(self) -> "Deferred[Any]":  # noqa: N802 - Twisted's name
        d: Deferred[Any] = MultiService.stopService(self)

        def close_status(result: Any) -> Any:
            return self.fpm_status.close() if self.fpm_status is not None else result

        return d.addBoth(close_status)

    def reopen_logs(self) -> None:
        """SIGUSR1: the access log opens its file anew."""
        self.front.site.reopen_logs()

    def _refusal(self, config: Config) -> Optional[str]:
        if config.server.workers > 1:
            return "server.workers cannot change from 1 without a restart"
        return None

    @inlineCallbacks
    def _switch(self, config: Config, text: Optional[str]) -> Any:
        old = self.config
        reactor = self._reactor
        front = self.front
        managed = _managed(front.php_fpm)
        started: list[Service] = []
        kept: list[Any] = []
        backend: Any
        app: Any
        try:
            new_managed = yield self._new_php_fpm(config, managed, started)
            retell = balancer_keeps(front.backend, old, config)
            if config.sites or old.sites:
                retell = False
                backend = SiteBackends(build_site_backends(
                    config, reactor, managed=new_managed,
                    keep=_site_keeper(front.backend, old, config, new_managed is managed, kept),
                ))
                for fresh in backend.by_site.values():
                    if all(fresh is not k for k in kept) and hasattr(fresh, "ready"):
                        # A site's PHP workers: nothing switches to them before they have all booted.
                        started.append(_Closing(fresh))
                        yield fresh.ready()
                app, site = build_sites(config, reactor, backend.by_site)
            else:
                if retell:
                    backend = front.backend  # told its new backends below, once nothing can fail
                elif (new_managed is not managed or pool_settings(config) != pool_settings(old)
                      or config.php.worker is not None):
                    # PHP workers are always new ones: a reload is how their code is deployed.
                    backend, _ = build_backend(config, reactor, fpm_socket_path=_socket_of(new_managed))
                    if config.php.worker is not None:
                        # A WorkerBackend, or a mixed site's MixedBackend: both have ready().
                        started.append(_Closing(backend))
                        # Nothing switches to them before they have all booted.
                        yield backend.ready()  # type: ignore[attr-defined]
                else:
                    backend = front.backend
                app, site = build_site(config, reactor, backend)
            sni = build_sni(config, self._alpn(config), self._seen)  # the sites' certificate files read again
            if sni is not None:
                for names, obtained in self.on_demand_installed.items():
                    sni.install(names, False, obtained)
            site.resource = front_for(site.resource, self.acme_sites, self.acme_tokens)
            current: dict[str, Any] = {getattr(l, "description", ""): l for l in front.listeners}
            listeners = _bind(config.server.listen, current,
                              lambda d: Listener(reactor, d, site, sni, tls_engine=config.server.tls_engine), started)
            admin = _bind(config.admin.listen, self.admin, lambda d: Listener(reactor, d, self.admin_site), started)
            admin_new = [listener for listener in admin if listener.description not in self.admin]
        except Exception as e:
            result = yield self._undo(e, started)
            return result
        # Nothing can fail from here on: switch.
        for listener in listeners:
            listener.sni = sni  # taken by Listener.use in the swap
        self.sni = sni
        if isinstance(front.backend, SiteBackends):
            front.backend.keep(kept)  # the retiring set drains only the backends not handed on
        for new_admin in admin_new:
            self.admin[new_admin.description] = new_admin
            adopt(self, new_admin)  # running already: joined without a second start
        for description in [d for d in self.admin if d not in config.admin.listen]:
            self.removeService(self.admin.pop(description))  # stops it
        self._serve(config, text, new_managed)
        front.shutdown_grace = config.server.shutdown_grace
        if retell:
            assert isinstance(backend, Balancer)
            backend.reconfigure(backend_specs(config))
        for listener in listeners:
            listener.tls_engine = config.server.tls_engine  # a kept ssl: listener switches engine with its new site
        retired = front.swap(app=app, site=site, backend=backend, listeners=listeners, php_fpm=new_managed)
        self.log.info(
            "reload: serving the configuration in {file} ({changed}){fpm}",
            file=config.source,
            changed=_changes(old, config),
            fpm="; a new php-fpm took over" if new_managed is not managed else "",
        )
        retired.addErrback(lambda f: self.log.failure("reload: closing the previous configuration's parts", f))
        return True


def _site_keeper(backends: Any, old: Config, new: Config, same_fpm: bool, kept: "list[Any]") -> Callable[[Any], Any]:
    """For a reload: the running backend of a site whose PHP settings did not change (added to *kept*), else None."""
    from_old: dict[str, Any] = {}
    if isinstance(backends, SiteBackends):
        from_old = backends.by_site
    elif not old.sites:
        from_old = {"default": backends}  # the one site of a configuration without sites
    old_sites = {s.name: s for s in site_configs(old)}

    def keep(site: Any) -> Any:
        before = old_sites.get(site.name)
        backend = from_old.get(site.name)
        if before is None or backend is None or before.php != site.php or old.timeouts != new.timeouts:
            return None
        if site.php.worker is not None:
            return None  # PHP workers are new ones at every reload, as for one site
        if site.php.mode == "managed" and not same_fpm:
            return None  # its pool is in the new php-fpm
        if old.server.workers != new.server.workers:
            return None
        kept.append(backend)
        return backend

    return keep


def _children_for_workers(config: Config) -> int:
    """The managed php-fpm's children with workers: the worker processes' connections together, and the admin side's."""
    per_worker = connections_per_worker(config.php.worker_pool_size, config.server.workers)
    return per_worker * config.server.workers + admin_spare_children(config)


def _worker_argv(config: Config, listeners: "list[SharedListener]", managed: Optional[ManagedPHPFPM],
                 challenges: Optional[ChallengeFiles] = None) -> Callable[[int], list[str]]:
    workers = config.server.workers

    def argv(index: int) -> list[str]:
        args = [
            sys.executable, "-m", "fephp.server.worker",
            "--config", config.source,
            "--index", str(index),
            "--workers", str(workers),
            "--parent", str(os.getpid()),
        ]
        for i, listener in enumerate(listeners):
            args += ["--listen", f"{FIRST_LISTEN_FD + i}:{listener.family}"]
        if managed is not None:
            args += ["--fpm-socket", managed.socket_path]
        if challenges is not None:
            args += ["--acme-challenges", str(challenges.folder)]
        return args

    return argv


def _build_workers_parent(config: Config, config_text: str, reactor: Any) -> "ParentServer":
    """The parent of ``server.workers`` processes: shared listeners, php-fpm for all, the supervisor."""
    managed = build_managed_php_fpm(config, reactor, children=_children_for_workers(config)) if needs_managed(config) else None
    listeners = [SharedListener(reactor, description) for description in config.server.listen]
    sites = acme_sites(config.sites)
    # tls.acme: the parent obtains (its AcmeServices, made once, kept by reloads); the workers answer HTTP-01.
    challenges = ChallengeFiles(challenge_folder(sites)) if sites else None
    # Not systemd's variables: a worker is not the unit's main process.
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET")}
    supervisor = WorkerSupervisor(
        reactor,
        count=config.server.workers,
        argv=_worker_argv(config, listeners, managed, challenges),
        config_text=config_text,
        listeners=listeners,
        env=env,
        stop_grace=config.server.shutdown_grace + 5.0,
    )
    parent = ParentServer(config, config_text, reactor, listeners, supervisor, managed)
    if challenges is not None:
        parent.acme_challenges = challenges
        parent.acme, _ = build_acme(sites, reactor, challenges, None, parent.acme_installed)
        for acme in parent.acme:
            acme.setServiceParent(parent)
    return parent


class _WorkersView:
    """The admin side's figures in the parent: each worker's (asked over its pipe), php-fpm's (asked by the parent)."""

    def __init__(self, parent: "ParentServer") -> None:
        self._parent = parent
        self.started = time.time()

    def snapshot(self) -> "Deferred[dict[str, Any]]":
        parent = self._parent
        fpm = parent.fpm_status
        status = fpm.status() if fpm is not None else succeed(None)
        figures = parent.supervisor.ask_figures()

        def merge(results: Any) -> dict[str, Any]:
            (_, fpm_status), (_, processes) = results
            config = parent.config
            pools = [pool for p in processes for pool in p.get("pools", [])]
            return {
                "server": server_part(
                    config, parent.config_text, self.started, "workers",
                    reloads=parent.reloads, worker_restarts=parent.supervisor.restarts, workers=config.server.workers,
                ),
                "processes": processes,
                "backends": backends_part(config, pools, fpm_status, parent.php_fpm),
                # tls.acme: the parent's AcmeServices, which obtain for every worker.
                "certificates": [figures for acme in parent.acme for figures in acme.figures()],
            }

        both: Deferred[Any] = DeferredList([status, figures], consumeErrors=True)
        return both.addCallback(merge)

    def ready(self) -> "Deferred[tuple[bool, str]]":
        parent = self._parent
        if not parent.supervisor.pids:
            return succeed((False, "no worker process runs"))
        if parent.config.php.worker is not None:
            # PHP workers run in each worker process: ready while none reports them unhealthy.
            return parent.supervisor.ask_figures().addCallback(self._workers_ready)
        return self._fpm_ready()

    def _fpm_ready(self) -> "Deferred[tuple[bool, str]]":
        fpm = self._parent.fpm_status
        if fpm is None:
            return succeed((True, "PHP workers run in each worker process" if self._parent.config.php.workers_only
                            else "php-cgi runs per request"))
        return fpm.ping().addCallback(lambda ok: (ok, "php-fpm answers" if ok else "php-fpm does not answer its ping"))

    def _workers_ready(self, processes: "list[dict[str, Any]]") -> Any:
        for process in processes:
            for pool in process.get("pools", []):
                if pool.get("healthy") is False:
                    return (False, f"{pool['name']} of worker process {process['index']} fail to boot")
        return self._fpm_ready()


class ParentServer(_Reloadable, WorkersService):
    """The parent of ``server.workers``: WorkersService, its admin listeners, and its reload on SIGHUP.

    :meth:`reload` validates the file, binds new listeners (unchanged ones
    keep their sockets), starts a new managed php-fpm when its settings
    changed and waits until it is ready, then replaces the workers one at
    a time (:meth:`WorkerSupervisor.replace`); the old php-fpm and the
    listeners no longer configured close once the old workers are gone.
    """

    def __init__(self, config: Config, config_text: str, reactor: Any, listeners: "list[SharedListener]",
                 supervisor: WorkerSupervisor, managed: Optional[ManagedPHPFPM]) -> None:
        WorkersService.__init__(self, listeners, supervisor, managed)
        self._init_reloadable(config, config_text, reactor, AdminSite(_WorkersView(self), reactor), managed)
        #: tls.acme: the ACME services (HTTP-01 only: the workers' TLS engine cannot answer TLS-ALPN-01), and where
        #: the workers read their HTTP-01 answers.
        self.acme: list[Any] = []
        self.acme_challenges: Optional[ChallengeFiles] = None

    def acme_installed(self, site: Optional[AcmeSite], stored: Stored) -> None:
        """A certificate from ACME, stored: every worker loads the stored ones again ("certs")."""
        self.supervisor.reload_certificates()

    def stopService(self) -> "Deferred[Any]":  # noqa: N802 - Twisted's name
        acme = DeferredList([service.stopService() for service in self.acme if service.running])
        d: Deferred[Any] = WorkersService.stopService(self)
        return DeferredList([acme, d]).addBoth(self._close_admin_and_status)

    def reopen_logs(self) -> None:
        self.supervisor.reopen_logs()

    def _refusal(self, config: Config) -> Optional[str]:
        if config.server.workers < 2 or config.admin.listen != self.config.admin.listen:
            return "server.workers down to 1 and admin.listen need a restart with workers"
        return None

    @inlineCallbacks
    def _switch(self, config: Config, text: Optional[str]) -> Any:
        assert text is not None
        reactor = self._reactor
        managed = _managed(self.php_fpm)
        started: list[Service] = []
        current = {listener.description: listener for listener in self.listeners}
        try:
            new_managed = yield self._new_php_fpm(config, managed, started, children=_children_for_workers(config))
            listeners = _bind(config.server.listen, current, lambda d: SharedListener(reactor, d), started)
        except Exception as e:
            result = yield self._undo(e, started)
            return result
        changed = _changes(self.config, config)
        self._serve(config, text, new_managed)
        self.log.info("reload: replacing {count} workers one at a time", count=self.supervisor.count)
        try:
            yield self.supervisor.replace(
                count=config.server.workers,
                argv=_worker_argv(config, listeners, new_managed, self.acme_challenges),
                config_text=text,
                listeners=listeners,
            )
        except Exception as e:
            self.log.error("reload: {error}; the workers not yet replaced keep the previous configuration", error=str(e))
        gone = [listener for listener in self.listeners if listener not in listeners]
        self.listeners = listeners
        for part in started:
            if isinstance(part, SharedListener):
                adopt(self, part)  # running already: joined without a second start
        for old_listener in gone:
            release(self, old_listener)
            yield old_listener.stopService()
        if new_managed is not managed:
            if new_managed is not None:
                adopt(self, new_managed)
            self.php_fpm = new_managed
            if managed is not None:
                release(self, managed)
                yield managed.stopService()
        self.log.info(
            "reload: serving the configuration in {file} ({changed})", file=config.source, changed=changed
        )
        return True


def _changes(old: Config, new: Config) -> str:
    """What a reload's log line says changed: "php, static changed", or "nothing changed"."""
    changed = changed_sections(old, new)
    return ", ".join(changed) + " changed" if changed else "nothing changed"
