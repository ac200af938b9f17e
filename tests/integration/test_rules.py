"""Per-path rules (issue 19 item 4) in a real front over a real php-fpm, asked by a real client: every rule kind, and a rate limit under ``fephp bench``."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread

from tests.support import REPO
from tests.support.bench import bench
from tests.support.daemon import get, listening_on, start_daemon, wait_for, write_config
from tests.support.docroot import make_docroot
from tests.support.h2client import H2Client
from tests.support.inprocess import InProcessFront, pool, stopped_at_teardown
from tests.support.tls import self_signed_pem

pytestmark = pytest.mark.php

#: alice's password, hashed at bcrypt's lowest cost so the test's first check is quick.
PASSWORD = "s3cret-pässword"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
HSTS = "max-age=63072000; includeSubDomains"

RULES: list[dict[str, Any]] = [
    {"headers": {"set": {"Strict-Transport-Security": HSTS}, "remove": ["X-Powered-By"]}},
    {"match": {"regex": r"^/blog/(\d+)/(?P<slug>[^/]+)$"}, "rewrite": "/env.php/${slug}?year=$1"},
    {"match": {"prefix": "/old/"}, "redirect": {"to": "/static/hello.txt", "status": 308}},
    {"match": {"path": "/health"}, "respond": {"status": 200, "body": "healthy\n"}},
    {"match": {"prefix": "/data/"}, "deny": "all"},
    {"match": {"prefix": "/intranet/"}, "allow": ["10.0.0.0/8"]},
    {"match": {"prefix": "/static/", "methods": ["DELETE"]}, "respond": 405},
    {"match": {"prefix": "/env.php"}, "deny": ["203.0.113.0/24"]},
    {"match": {"prefix": "/private/"}, "basic_auth": {"realm": "Staff", "users": {"alice": HASH}}},
    {"match": {"prefix": "/private/"}, "rewrite": "/env.php"},
    {"match": {"prefix": "/limited/"}, "rate_limit": {"rate": 50, "burst": 5}},
    {"match": {"prefix": "/limited/"}, "rewrite": "/static/hello.txt"},
]


@pytest.fixture
def front(php_fpm, tmp_path: Path):
    root = make_docroot(tmp_path)

    async def make(rules: list[dict[str, Any]] = RULES) -> InProcessFront:
        config = {
            "server": {"root": str(root), "trusted_proxies": ["127.0.0.1"]},
            "php": {"fpm_socket": php_fpm.unix_endpoint},
            "logging": {"access_log": str(tmp_path / "access.log")},
            "rules": rules,
        }
        return await InProcessFront.configured(config, pool(php_fpm.unix_endpoint)).start()

    yield from stopped_at_teardown(make)


async def _log_with(path: Path, marker: str, count: int, within: float = 5.0) -> str:
    """The access log once it holds *count* lines with *marker* (it is written within a second), or as it is at *within*."""
    deadline = time.monotonic() + within
    while True:
        text = path.read_text() if path.exists() else ""
        if text.count(marker) >= count or time.monotonic() > deadline:
            return text
        await task.deferLater(reactor, 0.05, lambda: None)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest_twisted.ensureDeferred
async def test_rewrite_keeps_request_uri_for_php(front) -> None:
    """A rewrite with captures runs the new script: PHP sees the client's REQUEST_URI and the rewritten SCRIPT_NAME, PATH_INFO and query."""
    f = await front()
    r = await f.get("/blog/2024/hello-world?x=1")
    assert r.status == 200
    env = json.loads(r.body)
    assert {k: env[k] for k in ("REQUEST_URI", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "DOCUMENT_URI")} == {
        "REQUEST_URI": "/blog/2024/hello-world?x=1",
        "SCRIPT_NAME": "/env.php",
        "PATH_INFO": "/hello-world",
        "QUERY_STRING": "year=2024&x=1",
        "DOCUMENT_URI": "/env.php",
    }


@pytest_twisted.ensureDeferred
async def test_redirect_respond_and_method(front) -> None:
    """redirect answers its status and Location (the query kept), respond its status and body, a method matcher only its method."""
    f = await front()
    moved = await f.get("/old/page?q=2")
    assert (moved.status, moved.header("location")) == (308, "/static/hello.txt?q=2")
    health = await f.get("/health")
    assert (health.status, health.header("content-type"), health.body) == (200, "text/plain; charset=utf-8", b"healthy\n")
    refused = await f.get("/static/hello.txt", method="DELETE")
    assert (refused.status, refused.body) == (405, b"")
    served = await f.get("/static/hello.txt")
    assert served.status == 200


@pytest_twisted.ensureDeferred
async def test_allow_and_deny_by_the_client_behind_a_trusted_proxy(front) -> None:
    """deny and allow judge the client's address after trusted_proxies: X-Forwarded-For from 127.0.0.1 is believed."""
    f = await front()
    assert (await f.get("/data/secret.txt")).status == 403
    assert (await f.get("/intranet/x")).status == 403
    allowed = await f.get("/intranet/x", {"X-Forwarded-For": "10.1.2.3"})
    assert (allowed.status, json.loads(allowed.body)["SCRIPT_NAME"]) == (200, "/index.php")  # on to the front controller
    assert (await f.get("/env.php", {"X-Forwarded-For": "203.0.113.9"})).status == 403
    env = await f.get("/env.php", {"X-Forwarded-For": "198.51.100.4"})
    assert (env.status, json.loads(env.body)["REMOTE_ADDR"]) == (200, "198.51.100.4")


@pytest_twisted.ensureDeferred
async def test_headers_on_every_kind_of_response(front) -> None:
    """The headers rule sets HSTS and removes X-Powered-By on PHP's answer, a static file, an error page and a rule's answer."""
    f = await front()
    for target in ("/env.php", "/static/hello.txt", "/no-such-file", "/data/x", "/health"):
        r = await f.get(target)
        assert (r.values("strict-transport-security"), r.values("x-powered-by")) == ([HSTS], []), target


@pytest_twisted.ensureDeferred
async def test_rules_over_http2(front, tmp_path: Path) -> None:
    """Over HTTP/2 the same rules hold: the header edits reach PHP's answer and a rule's refusal, a rewrite reaches PHP."""
    f = await front()
    port = await f.start_tls(self_signed_pem(tmp_path))

    def run() -> list[Any]:
        client = H2Client(port)
        try:
            return [client.get(target) for target in ("/env.php", "/data/x", "/blog/1999/x")]
        finally:
            client.close()

    php, denied, rewritten = await deferToThread(run)
    for response in (php, denied, rewritten):
        headers = dict(response.headers)
        assert (headers.get("strict-transport-security"), "x-powered-by" in headers) == (HSTS, False)
    assert (php.status, denied.status, rewritten.status) == (200, 403, 200)
    assert json.loads(rewritten.body)["REQUEST_URI"] == "/blog/1999/x"


@pytest_twisted.ensureDeferred
async def test_basic_auth(front, tmp_path: Path) -> None:
    """No or wrong credentials: 401 with the challenge; right ones reach PHP (twice, the second remembered); Authorization is never logged."""
    f = await front()
    challenge = 'Basic realm="Staff", charset="UTF-8"'
    none = await f.get("/private/")
    assert (none.status, none.header("www-authenticate")) == (401, challenge)
    wrong = await f.get("/private/", {"Authorization": basic("alice", "wrong")})
    assert (wrong.status, wrong.header("www-authenticate")) == (401, challenge)
    unknown = await f.get("/private/", {"Authorization": basic("mallory", PASSWORD)})
    assert unknown.status == 401
    for _ in range(2):
        right = await f.get("/private/", {"Authorization": basic("alice", PASSWORD)})
        assert right.status == 200
        assert json.loads(right.body)["PHP_AUTH_USER"] == "alice"
    head = await f.get("/private/", {"Authorization": basic("alice", PASSWORD)}, method="HEAD")
    assert (head.status, head.body) == (200, b"")
    log = await _log_with(tmp_path / "access.log", "/private/", 6)
    assert log.count("/private/") == 6
    for secret in (PASSWORD, "wrong", base64.b64encode(f"alice:{PASSWORD}".encode()).decode(), "Basic"):
        assert secret not in log


@pytest_twisted.ensureDeferred
async def test_rate_limit_holds_its_rate_under_an_open_loop(front, tmp_path: Path) -> None:
    """fephp bench offers 250 req/s for 3 s to a rule of 50 req/s: the 200s come at 50/s within 10 %, the rest are 429."""
    f = await front()
    status, stdout, stderr, report = await deferToThread(
        bench, tmp_path, "--url", f"{f.base}/limited/x", "--rps", "250", "-d", "3", "-c", "8", "-q",
    )
    assert status == 0, stderr
    codes = report["status_codes"]
    assert set(codes) == {"200", "429"}, codes
    assert report["error_count"] == 0
    allowed_rate = codes["200"] / report["duration_s"]
    assert abs(allowed_rate - 50) <= 5, (allowed_rate, codes)
    assert codes["429"] >= 500, codes


@pytest_twisted.ensureDeferred
async def test_retry_after(front) -> None:
    """The request past the rate is 429 with Retry-After in whole seconds."""
    f = await front([{"rate_limit": {"rate": 0.5}}])
    assert (await f.get("/static/hello.txt")).status == 200
    limited = await f.get("/static/hello.txt")
    assert (limited.status, limited.header("retry-after")) == (429, "2")


def test_check_config_reports_a_rule_error(tmp_path: Path) -> None:
    """fephp check-config names the file, the line and the rule's key of a bad regex."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"server:\n  root: {tmp_path}\nphp:\n  fpm_socket: 127.0.0.1:9000\nrules:\n"
                   "  - match: {prefix: /a/}\n    deny: all\n  - match: {regex: '(x'}\n    deny: all\n")
    result = subprocess.run([sys.executable, "-m", "fephp.cli", "check-config", str(bad)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip() == (f"error: {bad}, line 8: rules[1].match.regex: not a valid regular expression: "
                                     "missing ), unterminated subpattern at position 0")


def test_a_reload_adds_a_rule(php_fpm, tmp_path: Path) -> None:
    """SIGHUP with a rule added to the file: the running daemon refuses the path from then on and logs that rules changed."""
    config = write_config(tmp_path, f"  fpm_socket: {php_fpm.unix_endpoint}")
    pidfile, pid = start_daemon(tmp_path, config)
    try:
        (port,) = listening_on(pid)
        url = f"http://127.0.0.1:{port}/static/hello.txt"
        assert get(url)[0] == 200
        config.write_text(config.read_text() + "rules:\n  - match: {prefix: /static/}\n    deny: all\n")
        os.kill(pid, signal.SIGHUP)
        log = tmp_path / "fephp.log"
        wait_for(lambda: "(rules changed)" in log.read_text(), "the reload's log line")
        assert get(url)[0] == 403
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), "the pidfile to go")
