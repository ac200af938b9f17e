"""HPACK for fephp's HTTP/2 server, sans-io: a response encoder that keeps no dynamic table, and a decoder that remembers repeated blocks.

:class:`ResponseEncoder` writes each response field as an indexed field
when the static table holds it whole (``:status: 200``), else as a literal
that names its field by the static table's index where it can and is
never added to the dynamic table (RFC 7541 6.2.2, 6.2.3), without Huffman
coding (RFC 7541 5.2 leaves it to the encoder).  As nginx does for its
responses: the encoder keeps no state, so a field's bytes are made once
and kept (within :data:`FIELD_CACHE`; Set-Cookie and X-Request-Id are made
each time and not kept), and no response pays for searching a table of
earlier ones.  A response's block is some bytes longer than
with a dynamic table, next to the body it precedes.

:class:`CachingDecoder` is hpack's decoder, which answers a block it has
decoded before from memory while its dynamic table has not changed since:
a client sending the same request again (the same page, an API polled)
sends the same block of indexed fields, and decoding it again would give
the same list.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

import hpack
from hpack import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

__all__ = ["BLOCK_CACHE", "FIELD_CACHE", "NEVER_INDEXED", "CachingDecoder", "ResponseEncoder", "encode_integer"]

#: Encoded response fields kept, by name and value (never-indexed ones are
#: made each time); past it the cache starts again.
FIELD_CACHE = 1024
#: Decoded request blocks kept per connection.
BLOCK_CACHE = 32

#: RFC 7541 Appendix A: the static table's index of each name (its first
#: entry) and of each whole field.
_NAME_INDEX: "dict[bytes, int]" = {}
_FIELD_INDEX: "dict[tuple[bytes, bytes], int]" = {}
for _i, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _NAME_INDEX.setdefault(_name, _i)
    if _value:
        _FIELD_INDEX.setdefault((_name, _value), _i)

#: Response fields sent as never-indexed literals (RFC 7541 6.2.3), so that
#: no intermediary re-encoding them adds them to its table either: values
#: that change from response to response, and Set-Cookie, which must not
#: be probed through a table (RFC 7541 7.1.3).
NEVER_INDEXED = frozenset(
    (b"date", b"content-length", b"etag", b"last-modified", b"expires", b"set-cookie", b"x-request-id",
     b"content-range", b"age", b"location")
)

#: Fields encoded each time and not kept: no cookie outlives its response
#: in the cache, and a request id is never seen twice.
_NOT_KEPT = frozenset((b"set-cookie", b"x-request-id"))

#: RFC 7541 6.3: a dynamic table size update to 0 (prefix 001, 5-bit integer).
_TABLE_SIZE_ZERO = b"\x20"


def encode_integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 5.1: *value* on a *prefix_bits*-bit prefix, the first byte's other bits from *first*."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(name: bytes, value: bytes, never: bool) -> bytes:
    """One field's bytes: indexed if the static table has it whole, else a literal never put in the dynamic table."""
    never = never or name in NEVER_INDEXED
    whole = None if never else _FIELD_INDEX.get((name, value))
    if whole is not None:
        return encode_integer(whole, 7, 0x80)  # RFC 7541 6.1
    # RFC 7541 6.2.2 (without indexing, 0000) or 6.2.3 (never indexed, 0001): a 4-bit name index.
    first = 0x10 if never else 0x00
    index = _NAME_INDEX.get(name)
    head = encode_integer(index, 4, first) if index is not None else bytes((first,)) + encode_integer(len(name), 7, 0) + name
    return head + encode_integer(len(value), 7, 0) + value


class ResponseEncoder:
    """Encodes fephp's response header lists with no dynamic table (see the module); the place of hpack's Encoder in h2.

    h2 sets :attr:`header_table_size` from the client's
    SETTINGS_HEADER_TABLE_SIZE; the next block then starts with a table
    size update to 0 (RFC 7541 4.2 wants one after a change, and 0 is
    within any limit: the table is never used).
    """

    __slots__ = ("_resized", "_table_size")

    #: Shared by every connection: the bytes depend on the field alone.
    _cache: "ClassVar[dict[tuple[bytes, bytes], bytes]]" = {}

    def __init__(self) -> None:
        self._resized = False
        self._table_size = HeaderTable.DEFAULT_SIZE

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._table_size = value
        self._resized = True

    def encode(self, headers: Iterable[Any], huffman: bool = False) -> bytes:
        """The block for *headers*, (name, value) pairs of bytes; NEVER_INDEXED names and NeverIndexedHeaderTuples are never indexed."""
        cache = self._cache
        out = []
        if self._resized:
            self._resized = False
            out.append(_TABLE_SIZE_ZERO)
        for field in headers:
            name = field[0]
            if name in _NOT_KEPT or type(field) is NeverIndexedHeaderTuple:
                out.append(_field(name, field[1], True))
                continue
            key = (name, field[1])
            data = cache.get(key)
            if data is None:
                data = _field(name, field[1], False)  # never indexed if NEVER_INDEXED says so
                if len(cache) >= FIELD_CACHE:
                    cache.clear()
                cache[key] = data
            out.append(data)
        return b"".join(out)


class _CountedTable(HeaderTable):
    """hpack's dynamic table, counting its changes (an entry added, a new size)."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return HeaderTable.maxsize.fget(self)  # type: ignore[attr-defined]

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.changes += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class CachingDecoder(hpack.Decoder):
    """hpack's Decoder that returns a block's earlier decoding while the dynamic table and the limits are as they were then."""

    def __init__(self, max_header_list_size: int = hpack.hpack.DEFAULT_MAX_HEADER_LIST_SIZE) -> None:
        super().__init__(max_header_list_size)
        self.header_table = self._table = _CountedTable()
        self._blocks: "dict[bytes, tuple[tuple[int, int, int], list[Any]]]" = {}

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table = self._table
        state = (table.changes, self.max_header_list_size, self.max_allowed_table_size)
        kept = self._blocks.get(data) if raw and type(data) is bytes else None
        if kept is not None and kept[0] == state:
            return list(kept[1])
        headers = super().decode(data, raw)
        if raw and type(data) is bytes and table.changes == state[0]:
            # Only indexed fields and literals left out of the table: the same bytes decode the same while it stands.
            blocks = self._blocks
            if len(blocks) >= BLOCK_CACHE:
                blocks.clear()
            blocks[data] = (state, list(headers))
        return headers
