"""The CGI environment as real php-cgi sees it: build_env's pairs are its whole environment."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fephp.cgi.environ import build_env
from fephp.cgi.response import HeadParser
from fephp.cgi.routing import Script
from tests.support.cgi_requests import FETCH, POST

SERVER_DUMP = r"""<?php
setcookie("sid", "x y");
header("Status: 201 Created");
echo json_encode([
    "server" => $_SERVER,
    "get" => $_GET,
    "post" => $_POST,
    "cookie" => $_COOKIE,
    "input" => file_get_contents("php://input"),
    "env" => getenv(),
]);
"""


@pytest.mark.php
def test_php_cgi_sees_exactly_our_environment(tmp_path: Path) -> None:
    """Real php-cgi run with build_env's pairs as its whole environment sees them in $_SERVER, and its output parses."""
    from tests.support.processes import require_binary

    php_cgi = require_binary(shutil.which("php-cgi"), "php-cgi")
    (tmp_path / "lib" / "exe").mkdir(parents=True)
    (tmp_path / "lib" / "exe" / "fetch.php").write_text(SERVER_DUMP)
    route = Script(str(tmp_path) + FETCH.script_name, FETCH.script_name, FETCH.path_info, FETCH.document_uri)
    facts = dataclasses.replace(POST, headers=[*POST.headers, (b"Proxy", b"http://evil:8080")])
    pairs = build_env(facts, route, document_root=str(tmp_path), server_software="fephp/0.1")
    argv = [php_cgi, "-n", "-d", "variables_order=EGPCS", "-d", "register_argc_argv=0"]
    done = subprocess.run(argv, input=b"a=1&b=2", env=dict(pairs), capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    result = HeadParser().feed(done.stdout)
    assert result is not None
    head, body = result
    assert (head.status, head.reason) == (201, b"Created")
    assert [v for k, v in head.headers if k.lower() == b"set-cookie"] == [b"sid=x%20y"]
    seen = json.loads(body)
    ours = {k.decode(): v.decode() for k, v in pairs}
    php_own = {"PHP_SELF", "REQUEST_TIME", "REQUEST_TIME_FLOAT", "PHP_AUTH_USER", "PHP_AUTH_PW", "AUTH_TYPE"}
    server = {k: str(v) for k, v in seen["server"].items() if k not in php_own}
    assert server == ours
    assert seen["env"] == ours
    assert seen["server"]["PHP_SELF"] == "/lib/exe/fetch.php/x y.png"
    assert (seen["server"]["PHP_AUTH_USER"], seen["server"]["PHP_AUTH_PW"]) == ("u", "p")
    assert seen["get"] == {"media": "a", "w": "10"}
    assert seen["post"] == {"a": "1", "b": "2"}
    assert seen["cookie"] == {"a": "1", "b": "2"}
    assert seen["input"] == "a=1&b=2"
