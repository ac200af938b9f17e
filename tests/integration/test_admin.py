"""The admin listener of a real twistd fephp: /metrics parsed with prometheus_client's parser, /status, /healthz, /readyz, the HTML page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fephp.process.binaries import find_php
from tests.support.daemon import answers, get, listening_on, start_daemon, wait_for, write_config
from tests.support.processes import require_binary

pytestmark = pytest.mark.php


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and sorted labels, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def status(port: int, accept: str = "application/json") -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/status", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as r:
        body = r.read()
        return json.loads(body) if accept == "application/json" else body.decode()


class Daemon:
    def __init__(self, tmp_path: Path, php: str = "  use_fpm: true", admin_extra: str = "") -> None:
        require_binary(find_php("php-fpm"), "php-fpm")
        # Port 0 too, spelled otherwise: the config refuses an admin listener string that is also a public one.
        self.config = write_config(tmp_path, php, f"admin:\n  listen: [\"tcp:port=0:interface=127.0.0.1\"]\n{admin_extra}")
        self.pidfile, self.pid = start_daemon(tmp_path, self.config)
        try:
            self.port, self.admin = listening_on(self.pid, 2)
            log = (tmp_path / "fephp.log").read_text()
            # Which is which, from Twisted's line for each port (the bind order puts the public one first).
            assert (f"FrontSite starting on {self.port}\n" in log, f"AdminSite starting on {self.admin}\n" in log) == (True, True), log
            wait_for(lambda: answers(self.base + "/static/hello.txt"), "the listener")
        except BaseException:
            self.stop()  # the fixture never gets it: not a daemon left behind
            raise

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.pidfile.exists():
            os.kill(self.pid, signal.SIGTERM)
            wait_for(lambda: not self.pidfile.exists(), "the pidfile to go")


@pytest.fixture
def daemon(tmp_path: Path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


def test_metrics_count_requests_pool_and_php_fpm(daemon: Daemon) -> None:
    """After 5 PHP requests and 2 static files one scrape shows them, the pool's connections and php-fpm's own figures."""
    for _ in range(5):
        assert get(daemon.base + "/status.php") == (200, b"status body")
    for _ in range(2):
        assert get(daemon.base + "/static/hello.txt")[0] == 200
    assert get(daemon.base + "/status.php?code=503")[0] == 503
    m = scrape(daemon.admin)
    backend = (("backend", "managed php-fpm"),)
    assert m[("fephp_http_requests_total", (("code", "2xx"), ("kind", "php"), ("method", "GET")))] == 5
    assert m[("fephp_http_requests_total", (("code", "5xx"), ("kind", "php"), ("method", "GET")))] == 1
    assert m[("fephp_http_requests_total", (("code", "2xx"), ("kind", "static"), ("method", "GET")))] >= 2
    assert m[("fephp_http_request_duration_seconds_count", (("kind", "php"),))] == 6
    assert m[("fephp_http_first_byte_seconds_count", (("kind", "php"),))] == 6
    assert m[("fephp_http_response_bytes_total", (("kind", "php"),))] == 6 * len(b"status body")
    assert m[("fephp_pool_size", backend)] == 2
    assert m[("fephp_pool_connections", (*backend, ("state", "idle")))] >= 1
    assert m[("fephp_pool_queue_wait_seconds_count", backend)] == 6
    assert m[("fephp_pool_errors_total", (*backend, ("status", "502")))] == 0
    assert m[("fephp_php_fpm_up", backend)] == 1
    # php-fpm's own count (its scoreboard; it can lag a child's state change).
    assert m[("fephp_php_fpm_processes", (*backend, ("state", "total")))] >= 1
    assert m[("fephp_php_fpm_accepted_connections_total", backend)] >= 2
    assert m[("fephp_php_fpm_restarts_total", backend)] == 0
    assert m[("fephp_info", (("mode", "single"), ("version", "0.1.0")))] == 1


def test_status_merges_pool_and_php_fpm_and_health_answers(daemon: Daemon) -> None:
    """/status is one JSON document with the config's hash, the process and the backend's pool figures beside php-fpm's status; /healthz and /readyz say 200."""
    get(daemon.base + "/status.php")
    doc = status(daemon.admin)
    import hashlib

    assert doc["server"]["config_file"] == str(daemon.config)
    assert doc["server"]["config_sha256"] == hashlib.sha256(daemon.config.read_bytes()).hexdigest()
    assert doc["server"]["uptime_seconds"] >= 0
    (process,) = doc["processes"]
    assert process["pid"] == daemon.pid
    (backend,) = doc["backends"]
    assert backend["kind"] == "managed"
    assert backend["pool"]["size"] == 2
    assert backend["php_fpm"]["process manager"] == "static"
    assert backend["php_fpm"]["pool"].startswith("fephp_")
    assert get(f"http://127.0.0.1:{daemon.admin}/healthz") == (200, b"ok\n")
    assert get(f"http://127.0.0.1:{daemon.admin}/readyz") == (200, b"php-fpm answers\n")
    assert get(f"http://127.0.0.1:{daemon.admin}/nothing")[0] == 404


def test_the_public_listener_serves_no_admin_endpoint(daemon: Daemon) -> None:
    """/metrics, /status and /readyz on the public port are the app's (its front controller answers 200), never the admin answers."""
    for path in ("/metrics", "/status", "/readyz"):
        status_code, body = get(daemon.base + path)
        assert (status_code, json.loads(body)) == (200, {
            "script": "index.php", "REQUEST_URI": path, "QUERY_STRING": "", "SCRIPT_NAME": "/index.php",
            "PATH_INFO": "", "DOCUMENT_URI": "/index.php", "GET": [],
        })
    # The same paths on the admin port are the admin's: what the public port must not give.
    assert get(f"http://127.0.0.1:{daemon.admin}/readyz") == (200, b"php-fpm answers\n")


def test_readyz_fails_while_php_fpm_is_down(tmp_path: Path, own_php_fpm) -> None:
    """With an external pool that is not running, /readyz is 503 and /healthz still 200; once it runs, /readyz is 200."""
    fpm = own_php_fpm
    d = Daemon(tmp_path, php=f"  fpm_socket: {fpm.unix_endpoint}\n  status_path: /fephp-fpm-status\n  ping_path: /fephp-fpm-ping")
    try:
        admin = f"http://127.0.0.1:{d.admin}"
        assert get(admin + "/readyz")[0] == 503
        assert get(admin + "/healthz") == (200, b"ok\n")
        assert scrape(d.admin)[("fephp_php_fpm_up", (("backend", fpm.unix_endpoint),))] == 0
        fpm.start()
        wait_for(lambda: get(admin + "/readyz")[0] == 200, "/readyz to say ready")
    finally:
        d.stop()


def test_the_html_status_page_renders_in_chromium(daemon: Daemon, tmp_path: Path) -> None:
    """Headless Chromium renders /status for a browser: the figures in their tables, the bars drawn, a refresh every few seconds; the screenshot is a real picture."""
    chromium = require_binary(shutil.which("chromium"), "chromium")
    for _ in range(3):
        get(daemon.base + "/status.php")
    page = status(daemon.admin, accept="text/html")
    assert '<meta http-equiv="refresh" content="5">' in page and "<script" not in page and "http" not in page.split("<body>")[0].replace('http-equiv', '')
    url = f"http://127.0.0.1:{daemon.admin}/status"
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    flags = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    shot = tmp_path / "status.png"
    # Chromium's Accept for a page is text/html: the HTML form, as a person sees it.
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,700", url], capture_output=True, timeout=90, check=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, timeout=90, check=True).stdout.decode()
    assert "<h1>fephp 0.1.0</h1>" in dom
    process_row = dom.split('<tr class="process">', 1)[1].split("</tr>", 1)[0]
    assert f"<td>{daemon.pid}</td>" in process_row
    assert '<td class="requests">' in process_row
    requests = int(process_row.split('<td class="requests">', 1)[1].split("<", 1)[0])
    assert requests >= 3
    backend_row = dom.split('<tr class="backend">', 1)[1].split("</tr>", 1)[0]
    assert "<td>managed php-fpm</td>" in backend_row
    # The bars' lengths are the figures: no request in flight, so no busy connection and no queue.
    assert '<td class="busy">0 / 2 <span class="bar busy" title="busy connections"><span style="width:0.0%">' in backend_row
    assert '<td class="queue">0 <span class="bar queue" title="waiting requests"><span style="width:0.0%">' in backend_row
    assert '<td class="fpm">' in backend_row  # php-fpm's active / total children
    if os.environ.get("FEPHP_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["FEPHP_KEEP_SCREENSHOT"])
