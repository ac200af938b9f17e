"""fephp.web.h2hpack: the response encoder's exact bytes, decoded by hpack, and the decoder's memory of blocks."""

from __future__ import annotations

import hpack
from hpack import NeverIndexedHeaderTuple

from fephp.web.h2hpack import CachingDecoder, ResponseEncoder, encode_integer


def test_integers_follow_rfc_7541_c_1() -> None:
    """10 and 1337 on a 5-bit prefix and 42 on an 8-bit one are RFC 7541 C.1's bytes."""
    assert (encode_integer(10, 5, 0), encode_integer(1337, 5, 0), encode_integer(42, 8, 0)) == (
        b"\x0a", b"\x1f\x9a\x0a", b"\x2a"
    )


def test_a_response_block_is_static_indices_and_unindexed_literals() -> None:
    """:status 200 is index 8, a static name is a literal without indexing by its index, a new name a literal name."""
    block = ResponseEncoder().encode([(b":status", b"200"), (b"content-type", b"text/html"), (b"x-a", b"1")])
    assert block == b"\x88" + b"\x0f\x10\x09text/html" + b"\x00\x03x-a\x011"


def test_never_indexed_fields_stay_never_indexed() -> None:
    """A NeverIndexedHeaderTuple is a never-indexed literal (0001 prefix), even when the static table holds it whole."""
    block = ResponseEncoder().encode([NeverIndexedHeaderTuple(b"date", b"d"), NeverIndexedHeaderTuple(b":status", b"200")])
    assert block == b"\x1f\x12\x01d" + b"\x18\x03200"
    (date, status) = hpack.Decoder().decode(block, raw=True)
    assert (date, status, date.indexable, status.indexable) == ((b"date", b"d"), (b":status", b"200"), False, False)


def test_blocks_decode_to_the_headers_and_leave_the_table_empty() -> None:
    """hpack's decoder reads the same list back from every block and adds nothing to its dynamic table."""
    encoder = ResponseEncoder()
    decoder = hpack.Decoder()
    headers = [(b":status", b"404"), (b"server", b"fephp"), (b"x-long", b"v" * 300)]
    for _ in range(2):
        assert decoder.decode(encoder.encode(headers), raw=True) == headers
    assert list(decoder.header_table.dynamic_entries) == []


def test_a_new_table_size_is_answered_by_a_size_update_to_zero() -> None:
    """After h2 sets the client's SETTINGS_HEADER_TABLE_SIZE, the next block (only) opens with a size update to 0."""
    encoder = ResponseEncoder()
    encoder.header_table_size = 256
    assert (encoder.encode([(b":status", b"200")]), encoder.encode([(b":status", b"200")])) == (b"\x20\x88", b"\x88")


def test_a_repeated_block_is_decoded_from_memory_while_the_table_stands() -> None:
    """The same indexed block gives its first decoding while nothing is added, and the new entry's once one is."""
    client = hpack.Encoder()
    decoder = CachingDecoder()
    decoder.decode(client.encode([(b"x-a", b"1")], huffman=False), raw=True)  # x-a: 1 is now index 62
    assert decoder.decode(b"\xbe", raw=True) == [(b"x-a", b"1")]
    assert decoder.decode(b"\xbe", raw=True) == [(b"x-a", b"1")]
    decoder.decode(client.encode([(b"x-b", b"2")], huffman=False), raw=True)  # index 62 is now x-b: 2
    assert decoder.decode(b"\xbe", raw=True) == [(b"x-b", b"2")]


def test_volatile_and_secret_fields_are_never_indexed_by_name() -> None:
    """Date and Set-Cookie given as plain pairs are never-indexed literals; Server is a literal without indexing."""
    block = ResponseEncoder().encode([(b"set-cookie", b"a=1"), (b"date", b"d"), (b"server", b"fephp")])
    assert block == b"\x1f\x28\x03a=1" + b"\x1f\x12\x01d" + b"\x0f\x27\x05fephp"


def test_no_never_indexed_value_is_kept_past_its_response() -> None:
    """A Set-Cookie value is encoded for its block and not kept in the encoder's cache; Server's field is."""
    ResponseEncoder().encode([(b"set-cookie", b"session=secret"), (b"server", b"kept")])
    cached = ResponseEncoder._cache
    assert ((b"server", b"kept") in cached, any(b"secret" in value for _name, value in cached)) == (True, False)
