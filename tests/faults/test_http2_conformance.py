"""RFC 9113 cases where fephp must answer with the right error code, and keep a stream error a stream error, written as raw frames against fephp as its own process over TLS.

Each case is what an h2spec-style checker sends; fephp runs as
``twistd -n fephp`` with a real php-fpm behind (tests.support.h2target).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.h2attacks import php_runs
from tests.support.h2raw import (
    COMPRESSION_ERROR,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RawH2,
    data,
    goaway,
    headers,
    raw_frame,
)

pytestmark = [pytest.mark.faults, pytest.mark.php]

#: fephp's SETTINGS_MAX_CONCURRENT_STREAMS (fephp.web.http2.MAX_CONCURRENT_STREAMS).
MAX_CONCURRENT_STREAMS = 128


@pytest.fixture
def client(h2_front):
    """A raw HTTP/2 connection to a fresh fephp, closed afterwards."""
    front = h2_front()
    connection = RawH2(front.port)
    yield connection
    connection.close()


def test_the_client_goaway_lets_the_in_flight_stream_finish(client):
    """A client's GOAWAY(NO_ERROR) sent while its request runs in PHP: the answer to that stream still arrives (RFC 9113 6.8)."""
    client.send(headers(1, client.block("/once.php?tag=inflight&ms=300")) + goaway(0))
    answer = client.response(1, 10.0)
    assert (answer.status, answer.body, answer.ended) == (200, b"ran inflight 0", True)


def test_an_undecodable_header_block_is_a_compression_error(client):
    """A header block indexing an entry of the empty dynamic table (index 70) cannot be decoded: GOAWAY(COMPRESSION_ERROR) (RFC 9113 4.3)."""
    client.send(headers(1, b"\x82\x87\xc6"))
    client.read_until(lambda c: c.closed, 5.0)
    assert (client.goaway, client.closed) == (COMPRESSION_ERROR, True)


def test_a_settings_ack_with_a_payload_is_a_frame_size_error(client):
    """SETTINGS with the ACK flag and 6 bytes of payload: GOAWAY(FRAME_SIZE_ERROR) (RFC 9113 6.5)."""
    client.handshake()
    client.send(raw_frame(0x4, 0x1, 0, b"\x00\x04\x00\x00\xff\xff"))
    client.read_until(lambda c: c.closed, 5.0)
    assert (client.goaway, client.closed) == (FRAME_SIZE_ERROR, True)


def test_the_stream_past_max_concurrent_streams_is_refused_alone(client):
    """128 open streams, then a 129th: RST_STREAM(REFUSED_STREAM) on it alone (RFC 9113 5.1.2), and the first stream is then answered on the same connection."""
    client.handshake()
    ids = [2 * i + 1 for i in range(MAX_CONCURRENT_STREAMS + 1)]
    # GETs without END_STREAM: each stays open, waiting for a body.
    client.send(b"".join(headers(s, client.block("/static/hello.txt"), end_stream=False) for s in ids))
    last = ids[-1]
    client.read_until(lambda c: c.stream(last).done, 5.0)
    assert (client.stream(last).reset, client.goaway) == (REFUSED_STREAM, None)
    client.send(data(1, end_stream=True))
    answer = client.response(1, 5.0)
    assert (answer.status, answer.body, client.goaway) == (200, b"plain text\n", None)


def _malformed(client: RawH2, case: str) -> bytes:
    """The header block of a request to once.php?tag=bad that RFC 9113 8.2-8.3 calls malformed, by *case*."""
    authority = f"127.0.0.1:{client.port}"
    base = [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", "/once.php?tag=bad")]
    blocks = {
        "uppercase-name": base + [("X-Upper", "v")],
        "no-path": base[:3],
        "connection-header": base + [("connection", "close")],
        "pseudo-after-regular": base[:3] + [("x-a", "1"), (":path", "/once.php?tag=bad")],
    }
    return client.block("", pseudo=blocks[case])


@pytest.mark.parametrize("case", ["uppercase-name", "no-path", "connection-header", "pseudo-after-regular"])
def test_a_malformed_request_is_a_stream_error(client, docroot: Path, case: str):
    """A malformed request on stream 1 gets RST_STREAM(PROTOCOL_ERROR) or a 400 (RFC 9113 8.1.1), PHP does not run it, and stream 3 on the same connection is answered."""
    client.send(headers(1, _malformed(client, case)) + headers(3, client.block("/once.php?tag=good")))
    client.read_until(lambda c: c.stream(1).done and c.stream(3).done, 10.0)
    first, second = client.stream(1), client.stream(3)
    assert (first.reset == PROTOCOL_ERROR or first.status == 400) is True, (first, client.goaway)
    assert (second.status, second.body, client.goaway) == (200, b"ran good 0", None)
    assert php_runs(docroot, "bad") == 0
