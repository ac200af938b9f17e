"""The client and responder state machines paired over a fake link (fephp.fastcgi._client).

Bytes written by one end are fed to the other, whole or split at every offset,
and the events must come out the same.
"""

from __future__ import annotations

from typing import Iterable

import pytest

from fephp.fastcgi import (
    HEADER_LEN,
    MAX_CONTENT_LEN,
    AbortRequest,
    BeginRequest,
    ClientConnection,
    EndRequest,
    Event,
    GetValues,
    GetValuesResult,
    Params,
    ProtocolError,
    ProtocolStatus,
    RecordType,
    ResponderConnection,
    Stderr,
    Stdin,
    Stdout,
    UnknownType,
    VIEW_FROM,
    encode_record,
)
from fephp.fastcgi._records import encode_end_request

PARAMS = [
    (b"SCRIPT_FILENAME", b"/srv/app/index.php"),
    (b"REQUEST_METHOD", b"POST"),
    (b"CONTENT_LENGTH", b"11"),
    (b"HTTP_X_LONG", b"y" * 300),
]

#: One record's worth: header, the largest content, the largest padding.
ONE_RECORD = HEADER_LEN + MAX_CONTENT_LEN + 255


class ConnectionPair:
    """A client and a responder with the bytes of each end carried to the other."""

    def __init__(self) -> None:
        self.client = ClientConnection()
        self.server = ResponderConnection()

    def to_server(self, data: bytes) -> list[Event]:
        return self.server.receive_data(data)

    def to_client(self, data: bytes) -> list[Event]:
        return self.client.receive_data(data)


def coalesce(events: Iterable[Event]) -> list[Event]:
    """Join adjacent Stdout (and Stderr) events of one request, so splits may differ in chunking."""
    out: list[Event] = []
    for event in events:
        if out and type(event) in (Stdout, Stderr) and type(out[-1]) is type(event):
            last = out[-1]
            assert isinstance(last, (Stdout, Stderr)) and isinstance(event, (Stdout, Stderr))
            if last.request_id == event.request_id:
                out[-1] = type(event)(event.request_id, bytes(last.data) + bytes(event.data))
                continue
        if type(event) in (Stdout, Stderr):
            event = type(event)(event.request_id, bytes(event.data))  # type: ignore[union-attr]
        out.append(event)
    return out


def client_bytes() -> bytes:
    """What a client writes for one request with an 11-byte body."""
    client = ClientConnection()
    return (
        client.begin_request(1, PARAMS)
        + client.send_stdin(1, b"hello world")
        + client.end_stdin(1)
    )


def server_bytes() -> bytes:
    """What a responder writes back: stdout, stderr, more stdout, the stream ends, END_REQUEST."""
    server = ResponderConnection()
    return (
        server.stdout(1, b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        + server.stderr(1, b"PHP Notice: x")
        + server.stdout(1, b"body" * 5, close=True)
        + server.stderr(1, b"", close=True)
        + server.end_request(1, app_status=7)
    )


EXPECTED_SERVER_EVENTS = [
    BeginRequest(1, 1, True),
    Params(1, tuple(PARAMS)),
    Stdin(1, b"hello world"),
    Stdin(1, b"", end=True),
]

EXPECTED_CLIENT_EVENTS = [
    Stdout(1, b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"),
    Stderr(1, b"PHP Notice: x"),
    Stdout(1, b"body" * 5),
    EndRequest(1, 7, ProtocolStatus.REQUEST_COMPLETE),
]


def active_client() -> ClientConnection:
    client = ClientConnection()
    client.begin_request(1, PARAMS)
    return client


# -- the round trip ------------------------------------------------------------------


def test_request_and_response_survive_the_trip() -> None:
    """Params, body, stdout, stderr and END_REQUEST arrive as the other end sent them."""
    pair = ConnectionPair()
    assert pair.to_server(pair.client.begin_request(1, PARAMS)) == [
        BeginRequest(1, 1, True),
        Params(1, tuple(PARAMS)),
    ]
    assert pair.to_server(pair.client.send_stdin(1, b"hello world")) == [Stdin(1, b"hello world")]
    assert pair.to_server(pair.client.end_stdin(1)) == [Stdin(1, b"", end=True)]
    assert pair.to_client(pair.server.stdout(1, b"Status: 200\r\n\r\nok")) == [
        Stdout(1, b"Status: 200\r\n\r\nok")
    ]
    assert pair.to_client(pair.server.stderr(1, b"warning")) == [Stderr(1, b"warning")]
    assert pair.to_client(pair.server.stdout(1, b"", close=True)) == []
    assert pair.to_client(pair.server.end_request(1, app_status=3)) == [EndRequest(1, 3, 0)]
    assert pair.client.active_requests == frozenset()


def test_keep_conn_flag_is_carried() -> None:
    """keep_conn=False clears FCGI_KEEP_CONN in BEGIN_REQUEST."""
    pair = ConnectionPair()
    events = pair.to_server(pair.client.begin_request(2, [], keep_conn=False))
    assert events == [BeginRequest(2, 1, False), Params(2, ())]


def test_params_larger_than_one_record_are_split_and_reassembled() -> None:
    """A 200 KB PARAMS stream goes as several records and arrives as one Params event."""
    pair = ConnectionPair()
    params = [(b"HTTP_BIG_%d" % i, bytes([65 + i]) * 50000) for i in range(4)]
    out = pair.client.begin_request(1, params)
    assert len(out) > 3 * MAX_CONTENT_LEN
    assert pair.to_server(out) == [BeginRequest(1, 1, True), Params(1, tuple(params))]


def test_large_body_and_output_are_split_into_records() -> None:
    """200 KB of STDIN and of STDOUT cross in records of at most 65535 bytes."""
    pair = ConnectionPair()
    pair.to_server(pair.client.begin_request(1, []))
    body = bytes(range(256)) * 800
    stdin_events = pair.to_server(pair.client.send_stdin(1, body))
    assert [len(e.data) for e in stdin_events if isinstance(e, Stdin)] == [65535, 65535, 65535, 8195]
    assert b"".join(e.data for e in stdin_events if isinstance(e, Stdin)) == body
    stdout_events = pair.to_client(pair.server.stdout(1, body, close=True))
    assert coalesce(stdout_events) == [Stdout(1, body)]


def test_request_ids_must_be_in_range_and_not_active() -> None:
    """Request id 0 and 65536 are refused, as is beginning an id twice."""
    client = ClientConnection()
    with pytest.raises(ValueError):
        client.begin_request(0, [])
    with pytest.raises(ValueError):
        client.begin_request(0x10000, [])
    client.begin_request(0xFFFF, [])
    with pytest.raises(ValueError):
        client.begin_request(0xFFFF, [])


def test_stdin_and_abort_need_an_active_request() -> None:
    """send_stdin, end_stdin and abort_request for an id that was never begun raise ValueError."""
    client = ClientConnection()
    with pytest.raises(ValueError):
        client.send_stdin(1, b"x")
    with pytest.raises(ValueError):
        client.end_stdin(1)
    with pytest.raises(ValueError):
        client.abort_request(1)


def test_empty_stdin_piece_writes_nothing() -> None:
    """send_stdin with no data gives no bytes, since an empty record would end the body."""
    assert active_client().send_stdin(1, b"") == b""


def test_abort_request_reaches_the_responder_and_leaves_the_request_active() -> None:
    """ABORT_REQUEST is one empty record; the request stays active until END_REQUEST."""
    pair = ConnectionPair()
    pair.to_server(pair.client.begin_request(1, []))
    out = pair.client.abort_request(1)
    assert out == b"\x01\x02\x00\x01\x00\x00\x00\x00"
    assert pair.to_server(out) == [AbortRequest(1)]
    assert pair.client.active_requests == frozenset({1})
    assert pair.to_client(pair.server.end_request(1)) == [EndRequest(1, 0, 0)]
    assert pair.client.active_requests == frozenset()


# -- split points ------------------------------------------------------------------------


def test_client_output_split_at_every_offset_gives_the_same_events() -> None:
    """The responder's events do not depend on where the client's bytes were cut."""
    data = client_bytes()
    assert ResponderConnection().receive_data(data) == EXPECTED_SERVER_EVENTS
    for cut in range(len(data) + 1):
        server = ResponderConnection()
        events = server.receive_data(data[:cut]) + server.receive_data(data[cut:])
        assert coalesce(events) == EXPECTED_SERVER_EVENTS, cut


def test_client_output_fed_byte_by_byte_gives_the_same_events() -> None:
    """Feeding the responder one byte at a time yields the same events."""
    data = client_bytes()
    server = ResponderConnection()
    events: list[Event] = []
    for i in range(len(data)):
        events += server.receive_data(data[i : i + 1])
    assert coalesce(events) == EXPECTED_SERVER_EVENTS


def test_server_output_split_at_every_offset_gives_the_same_events() -> None:
    """The client's events do not depend on where the responder's bytes were cut."""
    data = server_bytes()
    assert active_client().receive_data(data) == EXPECTED_CLIENT_EVENTS
    for cut in range(len(data) + 1):
        client = active_client()
        events = client.receive_data(data[:cut]) + client.receive_data(data[cut:])
        assert coalesce(events) == EXPECTED_CLIENT_EVENTS, cut
        assert client.idle


def test_server_output_fed_byte_by_byte_gives_the_same_events() -> None:
    """Feeding the client one byte at a time yields the same events, and it is idle only at the end."""
    data = server_bytes()
    client = active_client()
    events: list[Event] = []
    for i in range(len(data)):
        assert not client.idle
        events += client.receive_data(data[i : i + 1])
    assert coalesce(events) == EXPECTED_CLIENT_EVENTS
    assert client.idle


# -- management records (section 4) ---------------------------------------------------------


def test_get_values_and_its_result() -> None:
    """GET_VALUES carries the names with empty values; the result comes back as a map."""
    pair = ConnectionPair()
    query = pair.client.get_values([b"FCGI_MAX_CONNS", b"FCGI_MPXS_CONNS"])
    assert query == (
        b"\x01\x09\x00\x00\x00\x21\x07\x00"
        + b"\x0e\x00FCGI_MAX_CONNS\x0f\x00FCGI_MPXS_CONNS"
        + b"\x00" * 7
    )
    assert pair.to_server(query) == [GetValues((b"FCGI_MAX_CONNS", b"FCGI_MPXS_CONNS"))]
    answer = pair.server.get_values_result({b"FCGI_MPXS_CONNS": b"0"})
    assert pair.to_client(answer) == [GetValuesResult({b"FCGI_MPXS_CONNS": b"0"})]


def test_a_second_get_values_result_answers_no_query() -> None:
    """Each query is answered once; a further result is a ProtocolError."""
    pair = ConnectionPair()
    pair.client.get_values([b"FCGI_MPXS_CONNS"])
    answer = pair.server.get_values_result({b"FCGI_MPXS_CONNS": b"0"})
    pair.to_client(answer)
    with pytest.raises(ProtocolError):
        pair.to_client(answer)


def test_unknown_type_from_the_application() -> None:
    """UNKNOWN_TYPE tells the client which management record type was not understood."""
    pair = ConnectionPair()
    assert pair.to_client(pair.server.unknown_type(42)) == [UnknownType(42)]


def test_responder_reports_a_record_type_it_does_not_know() -> None:
    """The responder turns a record of type 99 into UnknownType(99)."""
    assert ResponderConnection().receive_data(encode_record(99, 0, b"??")) == [UnknownType(99)]


def test_responder_ignores_records_for_unknown_request_ids() -> None:
    """STDIN for a request id that was never begun is dropped (section 3.3)."""
    server = ResponderConnection()
    assert server.receive_data(encode_record(RecordType.STDIN, 5, b"x")) == []


@pytest.mark.parametrize("status", list(ProtocolStatus))
def test_each_protocol_status_is_surfaced(status: ProtocolStatus) -> None:
    """END_REQUEST's protocol status and app status come out in the EndRequest event."""
    pair = ConnectionPair()
    pair.client.begin_request(1, [])
    [event] = pair.to_client(pair.server.end_request(1, app_status=255, protocol_status=status))
    assert event == EndRequest(1, 255, int(status))
    assert event.complete is (status == ProtocolStatus.REQUEST_COMPLETE)


# -- malformed input -------------------------------------------------------------------------


MALFORMED = [
    pytest.param(b"\x02\x06\x00\x01\x00\x00\x00\x00", id="version 2"),
    pytest.param(b"\x00\x06\x00\x01\x00\x00\x00\x00", id="version 0"),
    pytest.param(encode_record(RecordType.BEGIN_REQUEST, 1, b"\0\x01" + b"\0" * 6), id="BEGIN_REQUEST"),
    pytest.param(encode_record(RecordType.PARAMS, 1, b""), id="PARAMS"),
    pytest.param(encode_record(RecordType.STDIN, 1, b"x"), id="STDIN"),
    pytest.param(encode_record(RecordType.ABORT_REQUEST, 1), id="ABORT_REQUEST"),
    pytest.param(encode_record(RecordType.GET_VALUES, 0, b""), id="GET_VALUES"),
    pytest.param(encode_record(99, 1, b""), id="type 99"),
    pytest.param(encode_record(RecordType.STDOUT, 2, b"x"), id="STDOUT for unknown id"),
    pytest.param(encode_record(RecordType.STDOUT, 2, b""), id="empty STDOUT for unknown id"),
    pytest.param(encode_record(RecordType.STDERR, 2, b"x"), id="STDERR for unknown id"),
    pytest.param(encode_end_request(2, 0, 0), id="END_REQUEST for unknown id"),
    pytest.param(encode_record(RecordType.END_REQUEST, 1, b"\0" * 4), id="END_REQUEST body of 4"),
    pytest.param(encode_record(RecordType.END_REQUEST, 1, b"\0" * 9), id="END_REQUEST body of 9"),
    pytest.param(encode_record(RecordType.GET_VALUES_RESULT, 0, b""), id="GET_VALUES_RESULT unasked"),
    pytest.param(encode_record(RecordType.UNKNOWN_TYPE, 1, b"\x63" + b"\0" * 7), id="UNKNOWN_TYPE id 1"),
    pytest.param(encode_record(RecordType.UNKNOWN_TYPE, 0, b"\x63"), id="UNKNOWN_TYPE body of 1"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_input_is_a_protocol_error_and_the_connection_stays_failed(data: bytes) -> None:
    """Anything an application may not send raises ProtocolError, and every later feed raises too."""
    client = active_client()
    with pytest.raises(ProtocolError) as info:
        client.receive_data(data)
    assert info.value.error_status_hint == 502
    assert not client.idle
    with pytest.raises(ProtocolError):
        client.receive_data(b"")
    with pytest.raises(ProtocolError):
        client.receive_data(encode_end_request(1, 0, 0))


def test_stdout_with_no_request_active_is_a_protocol_error() -> None:
    """STDOUT for request 1 on a connection with no request in flight is refused."""
    with pytest.raises(ProtocolError):
        ClientConnection().receive_data(encode_record(RecordType.STDOUT, 1, b"late"))


def test_truncated_get_values_result_is_a_protocol_error() -> None:
    """A GET_VALUES_RESULT whose name-value block is cut short is a ProtocolError."""
    client = ClientConnection()
    client.get_values([b"FCGI_MPXS_CONNS"])
    with pytest.raises(ProtocolError):
        client.receive_data(encode_record(RecordType.GET_VALUES_RESULT, 0, b"\x0f\x01FCGI_MPXS"))


def test_get_values_result_with_a_request_id_is_a_protocol_error() -> None:
    """A management record must carry request id 0."""
    client = ClientConnection()
    client.get_values([b"FCGI_MPXS_CONNS"])
    with pytest.raises(ProtocolError):
        client.receive_data(encode_record(RecordType.GET_VALUES_RESULT, 1, b""))


def test_events_before_a_bad_record_in_the_same_feed_are_not_delivered() -> None:
    """A feed holding good records then a bad one raises; the connection is failed as a whole."""
    client = active_client()
    with pytest.raises(ProtocolError):
        client.receive_data(encode_record(RecordType.STDOUT, 1, b"ok") + encode_record(99, 1))
    assert not client.idle


# -- end of the connection -----------------------------------------------------------------


def test_connection_lost_while_idle_is_fine() -> None:
    """Closing a connection with nothing in flight and nothing half-read reports no error."""
    client = ClientConnection()
    assert client.connection_lost() is None
    client.begin_request(1, [])
    client.receive_data(encode_end_request(1, 0, 0))
    assert client.connection_lost() is None


def test_connection_lost_with_a_request_active_is_a_protocol_error() -> None:
    """Closing before END_REQUEST returns a ProtocolError naming the request."""
    client = active_client()
    client.receive_data(encode_record(RecordType.STDOUT, 1, b"partial"))
    error = client.connection_lost()
    assert isinstance(error, ProtocolError)
    assert str(error) == "connection closed before END_REQUEST (request 1)"


def test_connection_lost_inside_a_record_is_a_protocol_error() -> None:
    """Closing with part of a record buffered returns a ProtocolError."""
    client = ClientConnection()
    client.get_values([b"FCGI_MPXS_CONNS"])
    client.receive_data(b"\x01\x0a\x00\x00\x00\x10")
    error = client.connection_lost()
    assert isinstance(error, ProtocolError)
    assert str(error) == "connection closed in the middle of a record"


# -- bounds and idleness -----------------------------------------------------------------------


@pytest.mark.parametrize("piece", [1000, 4096, 70001])
def test_buffer_never_holds_more_than_one_record(piece: int) -> None:
    """Feeding 1 MB of output in pieces never leaves more than one record's bytes buffered."""
    server = ResponderConnection()
    payload = bytes(range(251)) * 4200
    data = server.stdout(1, payload, close=True) + server.end_request(1)
    client = active_client()
    received = bytearray()
    for start in range(0, len(data), piece):
        for event in client.receive_data(data[start : start + piece]):
            if isinstance(event, Stdout):
                received += event.data
        assert client._reader.pending < ONE_RECORD
        assert client._reader.pending <= HEADER_LEN + MAX_CONTENT_LEN + 7
    assert bytes(received) == payload
    assert client._reader.pending == 0


def test_stdout_comes_out_as_it_arrives_not_when_its_record_is_whole() -> None:
    """Half of a STDOUT record is a Stdout event at once; the rest follows, then the next record."""
    server = ResponderConnection()
    record = server.stdout(1, b"a" * 1000)
    client = active_client()
    assert client.receive_data(record[:508]) == [Stdout(1, b"a" * 500)]
    assert client._reader.pending > 0 and not client.idle
    end = server.stdout(1, b"", close=True) + server.end_request(1)
    assert client.receive_data(record[508:] + end) == [Stdout(1, b"a" * 500), EndRequest(1, 0, 0)]
    assert client._reader.pending == 0 and client.idle


def test_a_stdout_record_whose_padding_is_cut_off() -> None:
    """Content whole, padding still to come: the content is out, the padding is skipped when it comes."""
    server = ResponderConnection()
    record = server.stdout(1, b"abc")  # 8 + 3 + 5 bytes of padding
    assert len(record) == 16
    client = active_client()
    assert client.receive_data(record[:13]) == [Stdout(1, b"abc")]
    assert client._reader.pending > 0
    assert client.receive_data(record[13:15]) == []
    assert client.receive_data(record[15:] + server.end_request(1)) == [EndRequest(1, 0, 0)]
    assert client.idle


def test_big_output_in_socket_sized_reads_is_passed_on_without_waiting_for_whole_records() -> None:
    """64 KiB reads of 64 KiB records: each read's STDOUT bytes come out of that read."""
    server = ResponderConnection()
    payload = bytes(range(256)) * 4096  # 1 MiB
    data = server.stdout(1, payload, close=True) + server.end_request(1)
    client = active_client()
    received = bytearray()
    for start in range(0, len(data), 65536):
        piece = data[start : start + 65536]
        out = [e for e in client.receive_data(piece) if isinstance(e, Stdout)]
        # All of the piece but the record headers and padding is output now.
        assert sum(len(e.data) for e in out) >= len(piece) - 2 * (HEADER_LEN + 7) or start + 65536 >= len(data)
        for e in out:
            received += e.data
    assert bytes(received) == payload and client.idle


def test_idle_tracks_requests_partial_records_and_failure() -> None:
    """idle is true only with no request in flight, no partial record and no protocol error."""
    client = ClientConnection()
    assert client.idle
    client.begin_request(1, [])
    assert not client.idle
    end = encode_end_request(1, 0, 0)
    client.receive_data(end[:5])
    assert not client.idle
    client.receive_data(end[5:])
    assert client.idle
    client.get_values([b"FCGI_MPXS_CONNS"])
    client.receive_data(b"\x01")
    assert not client.idle
    client.receive_data(encode_record(RecordType.GET_VALUES_RESULT, 0)[1:])
    assert client.idle
    with pytest.raises(ProtocolError):
        client.receive_data(b"\x09" + b"\0" * 7)
    assert not client.idle


# -- purity -------------------------------------------------------------------------------------

FORBIDDEN_IMPORTS = {"twisted", "socket", "asyncio", "logging"}




def test_long_stdout_parts_are_views_into_the_read_and_short_ones_bytes() -> None:
    """A STDOUT part of VIEW_FROM bytes or more is a memoryview equal to the content (no copy); shorter parts and STDERR are bytes."""
    client = ClientConnection()
    client.begin_request(1, [])
    server = ResponderConnection()
    long_body = bytes(range(256)) * 40  # 10240 bytes
    wire = (
        server.stdout(1, b"short")
        + server.stdout(1, long_body)
        + server.stderr(1, b"e" * (VIEW_FROM + 1))
        + server.end_request(1)
    )
    events = client.receive_data(wire)
    kinds = [(type(e).__name__, type(e.data).__name__) for e in events[:3]]  # type: ignore[attr-defined]
    assert kinds == [("Stdout", "bytes"), ("Stdout", "memoryview"), ("Stderr", "bytes")]
    assert type(events[3]) is EndRequest
    assert bytes(events[1].data) == long_body  # type: ignore[union-attr]
    # A record cut by the end of a read: its long first part is a view too, the rest follows.
    client = ClientConnection()
    client.begin_request(1, [])
    record = server.stdout(1, long_body)
    first = client.receive_data(record[:8 + VIEW_FROM + 100])
    rest = client.receive_data(record[8 + VIEW_FROM + 100:])
    assert type(first[0].data) is memoryview  # type: ignore[union-attr]
    assert bytes(first[0].data) + bytes(rest[0].data) == long_body  # type: ignore[union-attr]
