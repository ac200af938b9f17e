"""Building from the configuration: the managed php-fpm takes the php section."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import reactor

from fephp.server.build import build_managed_php_fpm
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
