"""Golden vectors and round trips for the FastCGI wire format (fephp.fastcgi._records).

The vectors follow the spec's own numbers (FastCGI Specification, 1996):
section 3.3 for the header and padding, 3.4 for name-value pairs, 5.1 and
5.5 for the BEGIN_REQUEST and END_REQUEST bodies, 8 for the constants.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fephp.fastcgi import (
    HEADER_LEN,
    MAX_CONTENT_LEN,
    BeginFlags,
    Header,
    ProtocolError,
    ProtocolStatus,
    RecordType,
    Role,
    decode_name_values,
    encode_name_values,
    encode_record,
    encode_stream,
    padding_for,
)
from fephp.fastcgi._records import (
    MAX_NAME_VALUE_LEN,
    NULL_REQUEST_ID,
    VERSION_1,
    decode_begin_request,
    decode_end_request,
    decode_unknown_type,
    encode_begin_request,
    encode_end_request,
    encode_request_head,
    encode_unknown_type,
)


def split_records(data: bytes) -> list[tuple[Header, bytes]]:
    """Cut *data* into (header, content) pairs, checking that padding is zero bytes."""
    records = []
    pos = 0
    while pos < len(data):
        header = Header.parse(data, pos)
        start = pos + HEADER_LEN
        stop = start + header.content_length
        assert data[stop : stop + header.padding_length] == b"\0" * header.padding_length
        records.append((header, data[start:stop]))
        pos = stop + header.padding_length
    assert pos == len(data)
    return records


# -- constants (section 8) ----------------------------------------------------


def test_record_types_carry_the_spec_numbers() -> None:
    """Each record type has the number section 8 gives it, 1 through 11."""
    assert {t.name: t.value for t in RecordType} == {
        "BEGIN_REQUEST": 1,
        "ABORT_REQUEST": 2,
        "END_REQUEST": 3,
        "PARAMS": 4,
        "STDIN": 5,
        "STDOUT": 6,
        "STDERR": 7,
        "DATA": 8,
        "GET_VALUES": 9,
        "GET_VALUES_RESULT": 10,
        "UNKNOWN_TYPE": 11,
    }


def test_roles_carry_the_spec_numbers() -> None:
    """RESPONDER, AUTHORIZER and FILTER are 1, 2 and 3."""
    assert {r.name: r.value for r in Role} == {"RESPONDER": 1, "AUTHORIZER": 2, "FILTER": 3}


def test_protocol_statuses_carry_the_spec_numbers() -> None:
    """REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED and UNKNOWN_ROLE are 0 to 3."""
    assert {s.name: s.value for s in ProtocolStatus} == {
        "REQUEST_COMPLETE": 0,
        "CANT_MPX_CONN": 1,
        "OVERLOADED": 2,
        "UNKNOWN_ROLE": 3,
    }


def test_keep_conn_is_bit_zero_and_the_wire_constants_match_the_spec() -> None:
    """FCGI_KEEP_CONN is 1, the version is 1, the header 8 bytes, the null request id 0."""
    assert (BeginFlags.KEEP_CONN, BeginFlags.NONE) == (1, 0)
    assert (VERSION_1, HEADER_LEN, MAX_CONTENT_LEN, NULL_REQUEST_ID) == (1, 8, 65535, 0)
    assert MAX_NAME_VALUE_LEN == 2**31 - 1


# -- header and padding (section 3.3) -------------------------------------------


def test_header_packs_to_the_eight_wire_bytes() -> None:
    """A header packs big-endian with the reserved byte zero."""
    header = Header(1, RecordType.STDOUT, 0x0102, 0x1234, 4)
    assert header.pack() == b"\x01\x06\x01\x02\x12\x34\x04\x00"


def test_header_parses_at_an_offset_and_ignores_the_reserved_byte() -> None:
    """Header.parse reads the eight bytes at *offset*, whatever the reserved byte holds."""
    header = Header.parse(b"junk" + b"\x01\x0a\x00\x00\xff\xff\x07\x99", 4)
    assert (
        header.version,
        header.type,
        header.request_id,
        header.content_length,
        header.padding_length,
    ) == (1, 10, 0, 65535, 7)
    assert repr(header) == (
        "Header(version=1, type=10, request_id=0, content_length=65535, padding_length=7)"
    )


@pytest.mark.parametrize(
    "remainder, padding", [(0, 0), (1, 7), (2, 6), (3, 5), (4, 4), (5, 3), (6, 2), (7, 1)]
)
def test_padding_brings_every_length_to_a_multiple_of_eight(remainder: int, padding: int) -> None:
    """For each length mod 8 the padding is the distance to the next multiple of 8."""
    for length in (remainder, remainder + 8, remainder + 65528):
        assert padding_for(length) == padding
        record = encode_record(RecordType.STDOUT, 1, b"x" * length)
        assert len(record) == HEADER_LEN + length + padding
        assert record[6] == padding
        assert record[HEADER_LEN + length :] == b"\0" * padding


def test_encode_record_exact_bytes() -> None:
    """A 3-byte STDOUT record for request 1 is header, content and 5 zero bytes."""
    assert encode_record(RecordType.STDOUT, 1, b"abc") == (
        b"\x01\x06\x00\x01\x00\x03\x05\x00" + b"abc" + b"\0" * 5
    )


def test_empty_record_is_a_bare_header() -> None:
    """An empty record (a stream's end) is eight bytes with no padding."""
    assert encode_record(RecordType.STDIN, 7) == b"\x01\x05\x00\x07\x00\x00\x00\x00"


def test_record_content_above_65535_bytes_is_refused() -> None:
    """contentLength is 16 bits, so encode_record refuses 65536 bytes."""
    assert len(encode_record(RecordType.STDIN, 1, b"x" * 65535)) == 8 + 65535 + 1
    with pytest.raises(ValueError):
        encode_record(RecordType.STDIN, 1, b"x" * 65536)


# -- streams (section 3.3) ------------------------------------------------------------


def test_66000_byte_stream_becomes_65535_and_465_byte_records_and_a_terminator() -> None:
    """Go's fcgi vector: 66000 bytes split as 65535 + pad 1, 465 + pad 7, then an empty record."""
    data = bytes(range(256)) * 257 + bytes(66000 - 256 * 257)
    out = encode_stream(RecordType.STDOUT, 1, data, close=True)
    assert out[:8] == b"\x01\x06\x00\x01\xff\xff\x01\x00"
    assert out[8 : 8 + 65535] == data[:65535]
    assert out[8 + 65535 : 8 + 65536] == b"\0"
    second = 8 + 65536
    assert out[second : second + 8] == b"\x01\x06\x00\x01\x01\xd1\x07\x00"
    assert out[second + 8 : second + 8 + 465] == data[65535:]
    assert out[second + 8 + 465 : second + 8 + 472] == b"\0" * 7
    assert out[second + 480 :] == b"\x01\x06\x00\x01\x00\x00\x00\x00"
    assert len(out) == 8 + 65536 + 8 + 472 + 8


def test_stream_without_close_has_no_terminator() -> None:
    """Without close the stream ends at its last data record."""
    assert encode_stream(RecordType.STDIN, 1, b"hi") == b"\x01\x05\x00\x01\x00\x02\x06\x00hi" + b"\0" * 6


def test_empty_stream_is_nothing_or_only_the_terminator() -> None:
    """Empty data gives no bytes, or just the empty record when the stream is closed."""
    assert encode_stream(RecordType.PARAMS, 1, b"") == b""
    assert encode_stream(RecordType.PARAMS, 1, b"", close=True) == b"\x01\x04\x00\x01\x00\x00\x00\x00"


@given(
    length=st.integers(min_value=0, max_value=3 * MAX_CONTENT_LEN + 9),
    seed=st.binary(min_size=1, max_size=64),
    close=st.booleans(),
    request_id=st.integers(min_value=1, max_value=0xFFFF),
)
def test_stream_round_trip(length: int, seed: bytes, close: bool, request_id: int) -> None:
    """Any data comes back from the records whole, each record full but the last and padded to 8."""
    data = (seed * (length // len(seed) + 1))[:length]
    records = split_records(encode_stream(RecordType.STDERR, request_id, data, close=close))
    data_records = records[:-1] if close else records
    if close:
        terminator = records[-1][0]
        assert (terminator.content_length, terminator.padding_length) == (0, 0)
    assert b"".join(content for _, content in data_records) == data
    assert len(data_records) == -(-length // MAX_CONTENT_LEN)
    for i, (header, content) in enumerate(data_records):
        assert (header.version, header.type, header.request_id) == (1, 7, request_id)
        assert header.padding_length == padding_for(len(content))
        if i < len(data_records) - 1:
            assert header.content_length == MAX_CONTENT_LEN


# -- name-value pairs (section 3.4) -------------------------------------------------


@pytest.mark.parametrize(
    "length, prefix",
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x00\x00\x80"),
        (1000, b"\x80\x00\x03\xe8"),
        (33554431, b"\x81\xff\xff\xff"),
    ],
)
def test_name_value_length_prefixes(length: int, prefix: bytes) -> None:
    """Lengths below 128 take one byte; longer ones four, big-endian with the top bit set."""
    value = b"v" * length
    assert encode_name_values([(b"", value)]) == b"\x00" + prefix + value
    assert encode_name_values([(value, b"")]) == prefix + b"\x00" + value
    assert decode_name_values(b"\x00" + prefix + value) == [(b"", value)]


def test_name_value_pairs_exact_bytes_and_order() -> None:
    """Pairs are written in the order given, each as lengths, name, value."""
    encoded = encode_name_values([(b"SCRIPT_NAME", b"/i.php"), (b"HTTP_X", b"")])
    assert encoded == b"\x0b\x06SCRIPT_NAME/i.php\x06\x00HTTP_X"
    assert encode_name_values({b"SCRIPT_NAME": b"/i.php", b"HTTP_X": b""}) == encoded
    assert decode_name_values(encoded) == [(b"SCRIPT_NAME", b"/i.php"), (b"HTTP_X", b"")]


def test_name_value_length_beyond_31_bits_is_refused() -> None:
    """A name of 2**31 bytes cannot be encoded and raises ValueError before any copying."""

    class Huge(bytes):
        def __len__(self) -> int:
            return 2**31

    with pytest.raises(ValueError):
        encode_name_values([(Huge(), b"")])


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b"\x05", id="value length missing"),
        pytest.param(b"\x80\x00\x00", id="four-byte name length cut"),
        pytest.param(b"\x01\x80\x00", id="four-byte value length cut"),
        pytest.param(b"\x03\x02ab", id="name and value longer than the block"),
        pytest.param(b"\x01\x01ab\x01", id="second pair cut"),
        pytest.param(b"\x80\x00\x00\x80\x00", id="long name missing"),
    ],
)
def test_truncated_name_value_block_is_a_protocol_error(block: bytes) -> None:
    """A block that ends inside a pair is a ProtocolError, never a short read."""
    with pytest.raises(ProtocolError):
        decode_name_values(block)


def test_empty_name_value_block_is_no_pairs() -> None:
    """An empty block decodes to no pairs."""
    assert decode_name_values(b"") == []
    assert encode_name_values([]) == b""


@given(
    st.lists(
        st.tuples(st.binary(max_size=300), st.binary(max_size=300)),
        max_size=8,
    )
)
def test_name_value_round_trip(pairs: list[tuple[bytes, bytes]]) -> None:
    """Any list of byte pairs, short or long, duplicates included, decodes to itself."""
    assert decode_name_values(encode_name_values(pairs)) == pairs


# -- request and management bodies (sections 4.2, 5.1, 5.5) -------------------------------


def test_begin_request_exact_bytes() -> None:
    """BEGIN_REQUEST for request 1, RESPONDER, KEEP_CONN."""
    assert encode_begin_request(1, Role.RESPONDER, BeginFlags.KEEP_CONN) == (
        b"\x01\x01\x00\x01\x00\x08\x00\x00" + b"\x00\x01\x01\x00\x00\x00\x00\x00"
    )
    assert encode_begin_request(0x1234, Role.FILTER)[8:] == b"\x00\x03\x00\x00\x00\x00\x00\x00"


def test_begin_request_body_decodes_and_checks_its_length() -> None:
    """The body gives (role, flags); a body that is not 8 bytes is a ProtocolError."""
    assert decode_begin_request(b"\x00\x02\x01\x00\x00\x00\x00\x00") == (2, 1)
    with pytest.raises(ProtocolError):
        decode_begin_request(b"\x00\x01\x01")


def test_end_request_exact_bytes() -> None:
    """END_REQUEST carries appStatus in 4 bytes and protocolStatus in 1, then 3 reserved."""
    assert encode_end_request(1, 0x01020304, ProtocolStatus.OVERLOADED) == (
        b"\x01\x03\x00\x01\x00\x08\x00\x00" + b"\x01\x02\x03\x04\x02\x00\x00\x00"
    )


def test_negative_app_status_is_sent_as_its_32_bit_pattern() -> None:
    """An app status of -1 goes out as 0xFFFFFFFF."""
    assert encode_end_request(1, -1, 0)[8:] == b"\xff\xff\xff\xff\x00\x00\x00\x00"


@pytest.mark.parametrize("status", list(ProtocolStatus))
def test_end_request_body_round_trip(status: ProtocolStatus) -> None:
    """Each protocol status survives encoding and decoding with its app status."""
    record = encode_end_request(3, 255, status)
    assert decode_end_request(record[8:]) == (255, int(status))


@pytest.mark.parametrize("length", [0, 4, 7, 9, 16])
def test_end_request_body_of_wrong_length_is_a_protocol_error(length: int) -> None:
    """An END_REQUEST body that is not exactly 8 bytes is a ProtocolError."""
    with pytest.raises(ProtocolError):
        decode_end_request(b"\0" * length)


def test_unknown_type_exact_bytes_and_decoding() -> None:
    """UNKNOWN_TYPE is a management record whose body is the type and 7 reserved bytes."""
    record = encode_unknown_type(99)
    assert record == b"\x01\x0b\x00\x00\x00\x08\x00\x00" + b"\x63" + b"\0" * 7
    assert decode_unknown_type(record[8:]) == 99
    with pytest.raises(ProtocolError):
        decode_unknown_type(b"\x63")


@pytest.mark.parametrize("value_len", [None, 0, 1, 127, 128, 1000, MAX_CONTENT_LEN - 40, MAX_CONTENT_LEN, 70000])
def test_request_head_is_begin_request_and_the_closed_params_stream(value_len: int | None) -> None:
    """encode_request_head gives exactly BEGIN_REQUEST + the PARAMS stream, closed, for no pairs, one record or several."""
    params = [] if value_len is None else [(b"SCRIPT_FILENAME", b"/x.php"), (b"HTTP_X", b"v" * value_len)]
    expected = encode_begin_request(3, Role.RESPONDER, BeginFlags.KEEP_CONN) + encode_stream(
        RecordType.PARAMS, 3, encode_name_values(params), close=True
    )
    assert encode_request_head(3, Role.RESPONDER, BeginFlags.KEEP_CONN, params) == expected
