"""Building from the configuration: the managed php-fpm takes the php section."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import reactor

from fephp.backend.balancer import BackendConfig, Balancer
from fephp.backend.pool import FastCGIPool
from fephp.server.build import backend_specs, build_backend, build_managed_php_fpm, build_site
from fephp.server.config import config_from_dict


def test_managed_php_fpm_takes_the_php_section(tmp_path: Path) -> None:
    """build_managed_php_fpm builds the pool from php.*: binary, pool size as max_children, max_requests and ini."""
    (tmp_path / "public").mkdir()
    config = config_from_dict(
        {"php": {"php_fpm_binary": "/bin/true", "worker_pool_size": 3, "max_requests": 50, "ini": {"memory_limit": "1G"}}},
        base_dir=str(tmp_path),
    )
    service = build_managed_php_fpm(config, reactor)
    try:
        text = Path(service.config_path).read_text()
        assert service.binary == "/bin/true"
        assert f"[{service.pool_name}]" in text
        assert f"listen = {service.socket_path}" in text
        assert "pm.max_children = 3" in text
        assert "pm.max_requests = 50" in text
        assert "php_admin_value[memory_limit] = 1G" in text
    finally:
        stopped = service.stopService()
    assert stopped.called  # never started: nothing to wait for
    assert not os.path.exists(service.run_dir)


def test_several_backends_build_one_balancer_with_each_workers_share(tmp_path: Path) -> None:
    """php.backends build a Balancer whose pools hold, in each of server.workers processes, that share of every pool_size."""
    (tmp_path / "public").mkdir()
    config = config_from_dict(
        {"php": {"backends": [{"address": "127.0.0.1:9001", "pool_size": 4}, {"address": "127.0.0.1:9002", "weight": 2, "pool_size": 9}],
                 "session_affinity": True, "ping_path": "/ping"}},
        base_dir=str(tmp_path),
    )
    assert backend_specs(config, workers=2) == [
        BackendConfig("127.0.0.1:9001", 1, 2, False), BackendConfig("127.0.0.1:9002", 2, 4, False),
    ]
    backend, managed = build_backend(config, reactor, workers=2)
    try:
        assert managed is None and isinstance(backend, Balancer)
        assert [(m.name, m.pool.size) for m in backend.members] == [("127.0.0.1:9001", 2), ("127.0.0.1:9002", 4)]
        assert backend.ping_path == "/ping"
    finally:
        backend.close()


def test_one_fpm_socket_stays_one_pool_unless_pinged(tmp_path: Path) -> None:
    """A single php.fpm_socket builds the plain pool; with php.ping_path it becomes a balancer of one."""
    (tmp_path / "public").mkdir()
    plain, _ = build_backend(config_from_dict({"php": {"fpm_socket": "127.0.0.1:9001"}}, base_dir=str(tmp_path)), reactor)
    pinged, _ = build_backend(
        config_from_dict({"php": {"fpm_socket": "127.0.0.1:9001", "ping_path": "/ping"}}, base_dir=str(tmp_path)), reactor
    )
    try:
        assert isinstance(plain, FastCGIPool)
        assert isinstance(pinged, Balancer) and [m.name for m in pinged.members] == ["127.0.0.1:9001"]
    finally:
        plain.close()
        pinged.close()


def test_the_site_takes_the_client_timeouts(tmp_path: Path) -> None:
    """timeouts.keepalive becomes the site's idle timer; client_header, client_body and client_send its slow-client deadlines."""
    (tmp_path / "public").mkdir()
    config = config_from_dict(
        {
            "php": {"fpm_socket": "127.0.0.1:9000"},
            "timeouts": {"keepalive": 5, "client_header": 6, "client_body": 7, "client_send": 8},
        },
        base_dir=str(tmp_path),
    )
    backend, _ = build_backend(config, reactor)
    try:
        _, site = build_site(config, reactor, backend)
        assert (site.timeOut, site.client_header_timeout, site.client_body_timeout, site.client_send_timeout) == (5, 6, 7, 8)
    finally:
        backend.close()
