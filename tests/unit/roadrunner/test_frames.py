"""Golden vectors, split points, malformed headers and round trips of the goridge frame (fephp.roadrunner._frames).

The golden bytes are written out from the layout in the module docstring
(roadrunner-server/goridge pkg/frame/frame.md): byte 0 version << 4 | HL,
byte 1 flags, bytes 2-5 the payload length little endian, bytes 6-9 the
CRC-32 of bytes 0-5, byte 10 the stream bits, byte 11 zero, the options,
the payload.  The CRC values were checked once against PHP's own
``crc32()`` of the same six bytes.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fephp.roadrunner import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_LEN,
    MAX_OPTIONS,
    NEED_DATA,
    Frame,
    FrameFlags,
    FrameReader,
    ProtocolError,
    StreamFlags,
    encode_frame,
    header_crc,
)

#: b"hello" with options [5]: HL 4, flags 0, length 5, CRC-32 of 14 00 05 00 00 00 = 0x1e5b111c.
HELLO = bytes.fromhex("14 00 05000000 1c115b1e 00 00 05000000") + b"hello"
#: The pid question: HL 3, CONTROL | CODEC_JSON = 0x09, length 12, CRC-32 of 13 09 0c 00 00 00 = 0x73460c5f.
PID = bytes.fromhex("13 09 0c000000 5f0c4673 00 00") + b'{"pid":true}'
#: An empty frame with the STOP bit: HL 3, flags 0, length 0, CRC-32 of 13 00 00 00 00 00 = 0x3480d196.
STOP_BIT = bytes.fromhex("13 00 00000000 96d18034 02 00")


def read_all(data: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> list[Frame]:
    reader = FrameReader(max_payload)
    reader.receive_data(data)
    return reader.frames()


def test_hello_with_one_option_is_the_golden_frame() -> None:
    """A payload b"hello" with options [5] encodes to the 21 bytes the layout gives, CRC included."""
    assert encode_frame(b"hello", options=[5]) == HELLO
    assert header_crc(bytes.fromhex("140005000000")) == 0x1E5B111C


def test_control_frame_is_the_golden_frame() -> None:
    """The pid question is a 12-byte header with CONTROL | CODEC_JSON and the JSON payload."""
    assert encode_frame(b'{"pid":true}', flags=FrameFlags.CONTROL | FrameFlags.CODEC_JSON) == PID


def test_stop_bit_frame_is_the_golden_frame() -> None:
    """An empty frame with the STOP stream bit is 12 bytes, 0x02 in byte 10."""
    assert encode_frame(stream=StreamFlags.STOP) == STOP_BIT


def test_golden_frames_decode_to_their_fields() -> None:
    """The three golden frames, read back to back, come out as the frames they encode."""
    assert read_all(HELLO + PID + STOP_BIT) == [
        Frame(b"hello", 0, (5,), 0),
        Frame(b'{"pid":true}', FrameFlags.CONTROL | FrameFlags.CODEC_JSON, (), 0),
        Frame(b"", 0, (), StreamFlags.STOP),
    ]


def test_ten_options_give_header_length_thirteen() -> None:
    """Ten option words make HL 13 (52 header bytes); an eleventh is refused."""
    data = encode_frame(b"x", options=list(range(10)))
    assert data[0] == 0x1D
    assert len(data) == 52 + 1
    assert read_all(data) == [Frame(b"x", 0, tuple(range(10)), 0)]
    with pytest.raises(ValueError):
        encode_frame(b"x", options=list(range(MAX_OPTIONS + 1)))


def test_option_words_are_little_endian_uint32() -> None:
    """Option 0x01020304 is written 04 03 02 01; a negative or 33-bit option is refused."""
    assert encode_frame(options=[0x01020304])[12:16] == bytes.fromhex("04030201")
    with pytest.raises(ValueError):
        encode_frame(options=[-1])
    with pytest.raises(ValueError):
        encode_frame(options=[1 << 32])


@pytest.mark.parametrize("frame", [HELLO, PID, STOP_BIT, encode_frame(b"ab" * 40, options=[1, 2, 3])])
def test_every_split_point_gives_the_same_frame(frame: bytes) -> None:
    """A frame fed in two pieces cut at any offset comes out once, whole, and only at the end."""
    whole = read_all(frame)
    for cut in range(len(frame) + 1):
        reader = FrameReader()
        reader.receive_data(frame[:cut])
        first = reader.next_frame()
        reader.receive_data(frame[cut:])
        if cut < len(frame):
            assert first is NEED_DATA
            assert reader.frames() == whole
        else:
            assert [first] == whole
        assert reader.pending == 0


def test_frames_fed_one_byte_at_a_time() -> None:
    """Three frames fed byte by byte come out in order, each as its last byte arrives."""
    data = HELLO + PID + STOP_BIT
    reader = FrameReader()
    got: list[Frame] = []
    ends = []
    for i in range(len(data)):
        reader.receive_data(data[i : i + 1])
        frames = reader.frames()
        if frames:
            ends.append(i + 1)
        got.extend(frames)
    assert got == read_all(data)
    assert ends == [len(HELLO), len(HELLO) + len(PID), len(data)]


def _corrupt(data: bytes, index: int, value: int) -> bytes:
    return data[:index] + bytes([value]) + data[index + 1 :]


def _with_crc(first6: bytes, rest: bytes = b"\0\0") -> bytes:
    return first6 + header_crc(first6).to_bytes(4, "little") + rest


MALFORMED = {
    "version 0": _with_crc(bytes.fromhex("030000000000")),
    "version 2": _with_crc(bytes.fromhex("230000000000")),
    "header length 2 words": _with_crc(bytes.fromhex("120000000000")),
    "header length 14 words": _with_crc(bytes.fromhex("1e0000000000")),
    "CRC off by one bit": _corrupt(HELLO, 6, HELLO[6] ^ 1),
    "length changed under the CRC": _corrupt(HELLO, 2, 6),
    "flags changed under the CRC": _corrupt(PID, 1, 0x08),
    "PHP's text instead of a frame": b"Could not open input file: worker.php\n",
    "payload over the bound": _with_crc(bytes.fromhex("1300") + (1025).to_bytes(4, "little")),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_headers_are_protocol_errors(name: str) -> None:
    """Each broken header raises ProtocolError with a 502 hint, and the reader refuses anything after it."""
    reader = FrameReader(max_payload=1024)
    reader.receive_data(MALFORMED[name])
    with pytest.raises(ProtocolError) as caught:
        reader.next_frame()
    assert caught.value.error_status_hint == 502
    assert reader.closed is True
    with pytest.raises(ProtocolError):
        reader.receive_data(HELLO)


def test_text_on_stdout_is_shown_in_the_error() -> None:
    """A worker that printed text instead of a frame gets that text in the error message."""
    reader = FrameReader()
    reader.receive_data(b"Could not open input file: worker.php\n")
    with pytest.raises(ProtocolError, match="Could not open input file"):
        reader.next_frame()


def test_payload_over_the_bound_is_refused_at_its_header() -> None:
    """A header announcing 1025 bytes to a reader bounded at 1024 fails before any payload byte arrives."""
    reader = FrameReader(max_payload=1024)
    reader.receive_data(encode_frame(b"y" * 1025)[:HEADER_LEN])
    with pytest.raises(ProtocolError, match="1025 bytes exceeds the bound of 1024"):
        reader.next_frame()


def test_payload_at_the_bound_is_read() -> None:
    """A payload of exactly the bound is a frame."""
    assert read_all(encode_frame(b"y" * 1024), max_payload=1024) == [Frame(b"y" * 1024)]


def test_options_are_not_covered_by_the_crc() -> None:
    """Changing an option word leaves the CRC valid (it covers bytes 0-5 only) and reads the new option."""
    assert read_all(_corrupt(HELLO, 12, 4)) == [Frame(b"hello", 0, (4,), 0)]


@given(
    payload=st.binary(max_size=300),
    flags=st.integers(0, 255),
    options=st.lists(st.integers(0, 0xFFFFFFFF), max_size=MAX_OPTIONS),
    stream=st.integers(0, 255),
    cut=st.integers(0, 400),
)
def test_round_trip(payload: bytes, flags: int, options: list[int], stream: int, cut: int) -> None:
    """Any frame the format can carry decodes to itself, whatever the split."""
    data = encode_frame(payload, flags=flags, options=options, stream=stream)
    assert len(data) == HEADER_LEN + 4 * len(options) + len(payload)
    reader = FrameReader()
    reader.receive_data(data[:cut])
    reader.receive_data(data[cut:])
    assert reader.frames() == [Frame(payload, flags, tuple(options), stream)]
