"""REDbot, an outside HTTP linter, over the example app (examples/app) served by an in-process fephp and the session php-fpm.

REDbot (PyPI ``redbot``) fetches a URL and, from the answer, makes its own
follow-up requests: without Accept-Encoding and with gzip (content
negotiation), with ``If-None-Match`` and ``If-Modified-Since`` when the
answer has validators (a 304's headers against the 200's, RFC 9110
15.4.5), and with ``Range`` when it has ``Accept-Ranges: bytes`` (a 206's
headers against the 200's, RFC 9110 15.3.7).  It runs as its command line
in a child process (it has its own event loop, thor), with the HAR output,
whose entries carry each note's id and level.

redbot needs Python 3.11 or later: on PyPy 3.9 setup.cfg's test extra
leaves it out (its older releases need ``cryptography`` built from source
there) and this module skips.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from tests.support.example_app import example_config
from tests.support.inprocess import InProcessFront, pool

if sys.version_info < (3, 11):
    pytest.skip("redbot needs Python 3.11 or later (setup.cfg's test extra installs it only there)", allow_module_level=True)

pytestmark = pytest.mark.php

#: A bound on one REDbot run: its own requests (up to five) to one local URL.
REDBOT_TIMEOUT = 60.0


@pytest.fixture
def front(php_fpm: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[InProcessFront]:
    """The example app as etc/fephp.yaml serves it (compression on), static files with Cache-Control and Expires.

    With the parameter true, every static file that compression would take
    has an ``x.gz`` beside it, as etc/fephp.yaml's comments suggest.
    """
    config = example_config(tmp_path)
    if getattr(request, "param", False):
        static = Path(config["server"]["root"]) / "static"
        for name in ("style.css", "app.js", "favicon.svg"):
            (static / (name + ".gz")).write_bytes(gzip.compress((static / name).read_bytes()))
    configured = InProcessFront.configured(config, pool(php_fpm.unix_endpoint))
    f = pytest_twisted.blockon(defer.ensureDeferred(configured.start()))
    yield f
    pytest_twisted.blockon(defer.ensureDeferred(f.stop()))


def redbot(url: str) -> dict[str, Any]:
    """REDbot's HAR entry for *url* (blocking: call it from a thread while the reactor serves)."""
    done = subprocess.run(
        [sys.executable, "-m", "redbot.cli", "--output-format", "har", url],
        capture_output=True,
        timeout=REDBOT_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    har = json.loads(done.stdout)
    assert "_red_error" not in har["log"], har["log"]
    (entry,) = har["log"]["entries"]
    return entry  # type: ignore[no-any-return]


#: The notes by which REDbot says a follow-up request ran and was answered well: a gzip
#: one (content negotiation), a Range one (a 206), and the two conditional ones (304s).
FOLLOW_UPS = {"CONNEG_GZIP_GOOD", "RANGE_CORRECT", "INM_304", "IMS_304"}
#: Headers missing from a 206 or a 304 that the 200 carries (RFC 9110 15.3.7, 15.4.5): REDbot rates them WARN only.
MISSING = {"MISSING_HDRS_206", "MISSING_HDRS_304"}
#: A static file's follow-ups: it has validators and Accept-Ranges, so REDbot asks for a 206 and two 304s.
STATIC = {"RANGE_CORRECT", "INM_304", "IMS_304"}

CASES = [
    ("/", 200, {"CONNEG_GZIP_GOOD"}),  # the HTML page, from PHP
    ("/static/style.css", 200, STATIC),  # under compression's min_size: sent as it is, without Vary
    ("/static/app.js", 200, {"CONNEG_GZIP_GOOD", *STATIC}),  # compressed for gzip; its 206 and 304 carry Vary
    ("/static/logo.png", 200, STATIC),  # an image: never compressed
    ("/json", 200, set()),  # JSON from PHP, under min_size
    ("/no/such/page", 404, set()),  # PHP's own 404 page, through the front controller
    ("/no-such-script.php", 404, set()),  # fephp's 404 page: a .php path never falls back to the front controller
]


def notes(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """Every note of *entry* and of its subnotes: (level, id)."""
    found = []
    pending = list(entry["_red_messages"])
    while pending:
        note = pending.pop()
        found.append((note["level"], note["note_id"]))
        pending.extend(note.get("subnotes", ()))
    return found


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("path, status, follow_ups", CASES, ids=[path for path, _, _ in CASES])
async def test_redbot_rates_nothing_bad(front: InProcessFront, path: str, status: int, follow_ups: set[str]) -> None:
    """REDbot rates nothing BAD and finds no header missing from a 206 or a 304, having made the follow-up requests the answer allows."""
    entry = await deferToThread(redbot, front.base + path)
    found = notes(entry)
    assert entry["response"]["status"] == status
    assert [(level, note) for level, note in found if level == "BAD" or note in MISSING] == []
    assert {note for _, note in found} & FOLLOW_UPS == follow_ups


SIBLINGS = [
    ("/static/style.css", {"CONNEG_GZIP_GOOD", *STATIC}),  # under min_size, yet varies: style.css.gz is there
    ("/static/app.js", {"CONNEG_GZIP_GOOD", *STATIC}),
    ("/static/favicon.svg", {"CONNEG_GZIP_GOOD", *STATIC}),
]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("front", [True], indirect=True, ids=["gz-siblings"])
@pytest.mark.parametrize("path, follow_ups", SIBLINGS, ids=[path for path, _ in SIBLINGS])
async def test_redbot_rates_precompressed_files_nothing_bad(front: InProcessFront, path: str, follow_ups: set[str]) -> None:
    """With x.gz beside the static files, REDbot still rates nothing BAD (the identity answer carries the Vary the gzip one does) and misses no header."""
    entry = await deferToThread(redbot, front.base + path)
    found = notes(entry)
    assert entry["response"]["status"] == 200
    assert [(level, note) for level, note in found if level == "BAD" or note in MISSING] == []
    assert {note for _, note in found} & FOLLOW_UPS == follow_ups
