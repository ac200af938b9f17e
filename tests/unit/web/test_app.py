"""PHPApp inside a real FrontSite over an in-memory transport, with a fake php-fpm behind the pool.

HTTP parsing is Twisted's own; the FastCGI side is the real pool and
protocol talking to a ResponderConnection, so what reaches "php-fpm" is checked
as FastCGI events.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from fephp.backend.pool import FastCGIPool
from fephp.cgi.routing import Router
from fephp.fastcgi import BeginRequest, Params, Stdin
from fephp.testing import FakeEndpoint, FakeFastCGIServer
from fephp.web.app import PHPApp
from fephp.web.errors import error_page
from fephp.web.site import FrontSite
from tests.support.channel import CLIENT, client_transport


class ResourceTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root)
        (root / "index.php").write_text("<?php\n")
        (root / "slow.php").write_text("<?php\n")
        self.root = root
        self.clock = Clock()
        self.endpoint = FakeEndpoint(self.clock)
        self.pool = FastCGIPool(self.endpoint, clock=self.clock, size=1, idle_timeout=None)
        self.app = PHPApp(router=Router(root=str(root)), backend=self.pool, server_software="t")
        self.site = FrontSite(self.app, max_body_size=100, timeout=None, reactor=self.clock)

    def connect(self) -> tuple[object, StringTransport]:
        channel = self.site.buildProtocol(CLIENT)
        transport = client_transport()
        channel.makeConnection(transport)
        return channel, transport

    def test_client_disconnect_keeps_the_php_connection_until_the_script_ends(self) -> None:
        """A client that goes away mid-request leaves its FastCGI connection draining: PHP's output is dropped, then the connection serves the next request."""
        channel, _ = self.connect()
        channel.dataReceived(b"GET /slow.php HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.endpoint.last.succeed()
        events = backend.received()
        self.assertIsInstance(events[0], BeginRequest)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(backend.received(), [])
        self.assertFalse(backend.transport.disconnecting)
        self.assertEqual((self.pool.stats()["busy"], self.pool.stats()["draining"]), (0, 1))
        other, transport = self.connect()
        other.dataReceived(b"GET /index.php HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(self.pool.stats()["waiting"], 1)
        backend.send_output(b"Content-Type: text/plain\r\n\r\nlate")
        backend.end()
        self.assertEqual(backend.script(), b"/index.php")
        backend.respond(b"next")
        self.assertTrue(transport.value().endswith(b"\r\n\r\nnext"))
        self.assertEqual(len(self.endpoint.connects), 1)

    def test_response_is_streamed_with_php_headers(self) -> None:
        """PHP's status, headers and body reach the client; hop-by-hop headers do not."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /index.php HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        backend = self.endpoint.last.succeed()
        events = backend.received()
        params = dict(next(e for e in events if isinstance(e, Params)).params)
        self.assertEqual(params[b"CONTENT_LENGTH"], b"3")
        self.assertEqual([e.data for e in events if isinstance(e, Stdin)], [b"abc", b""])
        backend.send_output(
            b"Status: 201 Created\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\nfirst"
        )
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 201 Created\r\n"))
        self.assertIn(b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n", out)
        self.assertEqual(out.count(b"Transfer-Encoding"), 1)  # Twisted's own chunking only
        self.assertTrue(out.endswith(b"5\r\nfirst\r\n"))

    def test_whole_response_in_one_read_gets_a_content_length_and_one_write(self) -> None:
        """PHP's whole answer in one read: a Content-Length, no chunking, head and body in one write."""
        channel, transport = self.connect()
        writes: list[bytes] = []
        write = transport.write
        transport.write = lambda data: (writes.append(data), write(data))  # type: ignore[method-assign]
        channel.dataReceived(b"GET /index.php HTTP/1.1\r\nHost: a\r\n\r\n")
        self.endpoint.last.succeed().respond(b"hello")
        self.assertEqual(len(writes), 1)
        head, _, body = writes[0].partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"\r\nContent-Length: 5", head)
        self.assertNotIn(b"Transfer-Encoding", head)
        self.assertEqual(body, b"hello")

    def test_response_over_several_reads_is_chunked(self) -> None:
        """Output that keeps coming is sent as it arrives, chunked, and ends with the last chunk."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET /index.php HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.endpoint.last.succeed()
        backend.send_output(b"Content-Type: text/plain\r\n\r\nab")
        self.assertTrue(transport.value().endswith(b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"))
        backend.proto.dataReceived(backend.server.stdout(1, b"cd", close=True) + backend.server.end_request(1))
        self.assertTrue(transport.value().endswith(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"))

    def test_no_length_is_invented_for_head_or_a_php_length(self) -> None:
        """HEAD gets no Content-Length of its empty body; PHP's own Content-Length is kept as it is."""
        channel, transport = self.connect()
        channel.dataReceived(b"HEAD /index.php HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.endpoint.last.succeed()
        backend.respond(b"")
        self.assertNotIn(b"Content-Length", transport.value())
        transport.clear()
        channel.dataReceived(b"GET /index.php HTTP/1.1\r\nHost: a\r\n\r\n")  # the kept connection
        backend.proto.dataReceived(
            backend.server.stdout(1, b"Content-Length: 2\r\n\r\nok", close=True) + backend.server.end_request(1)
        )
        out = transport.value()
        self.assertEqual(out.count(b"Content-Length"), 1)
        self.assertIn(b"Content-Length: 2\r\n", out)

    def test_connection_lost_after_head_but_before_any_byte_out_is_a_clean_502(self) -> None:
        """php-fpm dies after a head was read but before anything was sent: the client gets a 502 page."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET /index.php HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.endpoint.last.succeed()
        backend.proto.dataReceived(backend.server.stdout(1, b"Status: 200\r\nContent-Type: text/plain\r\n\r\n"))
        backend.close()
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 502 "), out)
        self.assertIn(error_page(502), out)
        self.assertFalse(transport.disconnecting and out == b"")

    def test_slow_client_pauses_the_backend(self) -> None:
        """When the HTTP transport asks its producer to pause, the FastCGI connection stops reading."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET /index.php HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.endpoint.last.succeed()
        backend.send_output(b"Content-Type: text/plain\r\n\r\nx")
        transport.producer.pauseProducing()
        self.assertEqual(backend.transport.producerState, "paused")
        transport.producer.resumeProducing()
        self.assertEqual(backend.transport.producerState, "producing")

    def test_body_over_limit_is_413_before_any_backend_work(self) -> None:
        """A Content-Length over max_body_size is answered 413 and nothing is connected."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /index.php HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(transport.value().endswith(error_page(413)))
        self.assertEqual(self.endpoint.connects, [])

    def test_bad_cgi_head_is_a_502_with_one_log_line_and_the_connection_serves_again(self) -> None:
        """A CGI head PHP got wrong becomes a 502 page and one error line naming the cause and the URI; nothing escapes, and the FastCGI connection is reused after END_REQUEST."""
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        backend: Optional[FakeFastCGIServer] = None
        for head, cause in [
            (b"X-Ctl: a\x01b\r\n\r\nbody", "control character in the response head"),
            (b"NoColon\r\n\r\nbody", "malformed header line b'NoColon'"),
            (b"X-Big: " + b"a" * 70000, "response head larger than 65536 bytes"),
        ]:
            with self.subTest(cause=cause):
                del events[:]
                channel, transport = self.connect()
                channel.dataReceived(b"GET /index.php?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
                if backend is None:
                    backend = self.endpoint.last.succeed()
                backend.received()
                backend.send_output(head)
                out = transport.value()
                self.assertTrue(out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out[:100])
                self.assertTrue(out.endswith(error_page(502)))
                lines = [formatEvent(e).partition("] ")[2] for e in events if e.get("log_level") >= LogLevel.warn]
                self.assertEqual(lines, [f"/index.php?q=1: 502 (CGIResponseError: {cause})"])
                self.assertEqual([e for e in events if "log_failure" in e], [])
                self.assertEqual(self.pool.stats()["draining"], 1)
                backend.send_output(b"rest of the body")
                backend.end()
                self.assertEqual(self.pool.stats()["idle"], 1)
        self.assertEqual(len(self.endpoint.connects), 1)

    def test_truncated_cgi_head_is_502(self) -> None:
        """A response that ends inside the CGI head becomes a 502 page."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET /index.php HTTP/1.1\r\nHost: a\r\n\r\n")
        backend = self.endpoint.last.succeed()
        backend.received()
        backend.proto.dataReceived(
            backend.server.stdout(1, b"Content-Type: text/pl", close=True) + backend.server.end_request(1)
        )
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertTrue(out.endswith(error_page(502)))

