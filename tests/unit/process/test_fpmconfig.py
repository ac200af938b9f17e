"""php-fpm's configuration text: the status page and the ping answer a pool exposes to fephp."""

from __future__ import annotations

from fephp.process.fpmconfig import PING_PATH, STATUS_PATH, PoolSpec, render_config


def _pool_lines(pool: PoolSpec) -> list[str]:
    text = render_config([pool], pid_file="/run/x.pid", error_log="/run/x.log")
    return text.split(f"[{pool.name}]\n", 1)[1].splitlines()


def test_a_pool_exposes_its_status_page_and_ping_by_default() -> None:
    """pm.status_path and ping.path (with its answer) are in every pool fephp writes."""
    lines = _pool_lines(PoolSpec("app", "/run/app.sock"))
    assert f"pm.status_path = {STATUS_PATH}" in lines
    assert f"ping.path = {PING_PATH}" in lines
    assert "ping.response = pong" in lines


def test_status_and_ping_can_be_left_out() -> None:
    """A pool given no status or ping path has neither directive."""
    lines = _pool_lines(PoolSpec("app", "/run/app.sock", status_path=None, ping_path=None))
    assert not [line for line in lines if line.startswith(("pm.status_path", "ping."))]


def test_the_paths_are_no_php_script_names() -> None:
    """Neither path ends in .php, so no request for a real script can be taken for them."""
    assert STATUS_PATH.startswith("/") and not STATUS_PATH.endswith(".php")
    assert PING_PATH.startswith("/") and not PING_PATH.endswith(".php")
