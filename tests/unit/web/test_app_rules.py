"""PHPApp's rules hook in a real FrontSite over an in-memory transport: a password checked off the reactor, then the request resumed or refused."""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from fephp.backend.pool import FastCGIPool
from fephp.cgi.routing import Router
from fephp.cgi.rules import BasicAuth, HeaderEdit, Headers, Match, Respond, Rule, RuleSet
from fephp.testing import FakeEndpoint
from fephp.web.app import PHPApp
from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, client_transport

HASH = b"$2b$04$" + b"a" * 53


def check(password: bytes, hashed: bytes) -> bool:
    return password == b"right"


class RulesHookTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root)
        (root / "a.txt").write_text("hello\n")
        self.clock = Clock()
        self.checks: list[tuple[Callable[[], bool], Deferred[bool]]] = []
        self.rules = RuleSet(
            (Rule(Match(), Headers((HeaderEdit("set", b"X-Frame-Options", b"DENY"),))),
             Rule(Match(), BasicAuth("R", (("alice", HASH),)))),
            clock=self.clock.seconds, check_password=check,
        )
        pool = FastCGIPool(FakeEndpoint(self.clock), clock=self.clock, size=1, idle_timeout=None)  # type: ignore[arg-type]
        app = PHPApp(router=Router(root=str(root)), backend=pool, server_software="t", rules=self.rules,
                     in_thread=self.in_thread)
        self.site = FrontSite(app, timeout=None, reactor=self.clock)

    def in_thread(self, call: Callable[[], bool]) -> "Deferred[bool]":
        d: Deferred[bool] = Deferred()
        self.checks.append((call, d))
        return d

    def request(self, password: str) -> tuple[object, StringTransport]:
        channel = self.site.buildProtocol(CLIENT)
        transport = client_transport()
        channel.makeConnection(transport)
        token = base64.b64encode(f"alice:{password}".encode())
        channel.dataReceived(b"GET /a.txt HTTP/1.1\r\nHost: a\r\nAuthorization: Basic " + token + b"\r\n\r\n")
        return channel, transport

    def finish_check(self) -> None:
        call, d = self.checks.pop(0)
        d.callback(call())

    def test_right_password_resumes_the_request_then_is_remembered(self) -> None:
        """Nothing is answered while the check runs; once it passes the file is served with the rule's header, and the next request needs no check."""
        _, transport = self.request("right")
        self.assertEqual((len(self.checks), transport.value()), (1, b""))
        self.finish_check()
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertEqual(head.split(b"\r\n")[0], b"HTTP/1.1 200 OK")
        self.assertIn(b"\r\nX-Frame-Options: DENY", head)
        self.assertEqual(body, b"hello\n")
        _, again = self.request("right")
        self.assertEqual(self.checks, [])
        self.assertEqual(again.value().split(b"\r\n")[0], b"HTTP/1.1 200 OK")
        self.assertEqual(self.rules.pending, 0)

    def test_wrong_password_is_401(self) -> None:
        """A check that fails answers 401 with the challenge, the rule's header on it too."""
        _, transport = self.request("wrong")
        self.finish_check()
        head = transport.value().partition(b"\r\n\r\n")[0]
        self.assertEqual(head.split(b"\r\n")[0], b"HTTP/1.1 401 Unauthorized")
        self.assertIn(b'\r\nWWW-Authenticate: Basic realm="R", charset="UTF-8"', head)
        self.assertIn(b"\r\nX-Frame-Options: DENY", head)

    def test_client_gone_during_the_check(self) -> None:
        """A client that leaves while its password is checked gets nothing written, and the check's slot is given back."""
        channel, transport = self.request("right")
        channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.finish_check()
        self.assertEqual((transport.value(), self.rules.pending), (b"", 0))


class RespondTestCase(SynchronousTestCase):
    def test_204_has_no_content_length(self) -> None:
        """A respond rule's 204 goes out without Content-Length or a body (RFC 9110 8.6), a 200 with its length."""
        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root)
        clock = Clock()
        rules = RuleSet((Rule(Match(path="/empty"), Respond(204)), Rule(Match(path="/ok"), Respond(200, b"ok"))),
                        clock=clock.seconds, check_password=check)
        pool = FastCGIPool(FakeEndpoint(clock), clock=clock, size=1, idle_timeout=None)  # type: ignore[arg-type]
        site = FrontSite(PHPApp(router=Router(root=str(root)), backend=pool, server_software="t", rules=rules),
                         timeout=None, reactor=clock)
        answers = []
        for target in (b"/empty", b"/ok"):
            channel = site.buildProtocol(CLIENT)
            transport = client_transport()
            channel.makeConnection(transport)
            channel.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            answers.append(transport.value())
        head, _, body = answers[0].partition(b"\r\n\r\n")
        self.assertEqual((head.split(b"\r\n")[0], b"Content-Length" in head, body), (b"HTTP/1.1 204 No Content", False, b""))
        head, _, body = answers[1].partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 2\r\n", head + b"\r\n")
        self.assertEqual(body, b"ok")
