"""HPACK encoding of the response header blocks gatehouse sends (RFC 7541), without a
dynamic table.

``hpack.Encoder`` (pure Python) indexes every field into the dynamic table and
Huffman-codes every literal: about a tenth of gatehouse's CPU per HTTP/2 request
(``bench/h2_bench.py``, py-spy). Response fields barely repeat within a connection
(``date``, ``content-length``, request ids), so that table buys little; nginx encodes its
responses the same way, static table only. Without a dynamic table the encoding of a
field depends on the field alone, so each field's bytes are cached and a block is a
join of cached pieces.

Representations used (RFC 7541 §6): a field in the static table → indexed (§6.1); a
name in the static table → literal without indexing, indexed name (§6.2.2); otherwise
literal without indexing, new name. Credentials (cookies, authorization) use the
never-indexed form (§6.2.3, §7.1.3) so that intermediaries keep them out of their
tables too, and are not cached.

The peer's ``SETTINGS_HEADER_TABLE_SIZE`` still matters: lowered below the size the
peer's decoder assumes (4,096 bytes at first), the next block must open with a dynamic
table size update (§4.2, §6.3), even though the table is empty.
"""

from __future__ import annotations

from collections.abc import Iterable

from hpack.table import HeaderTable

#: The decoder's table size until SETTINGS say otherwise (RFC 7541 §4.2, RFC 9113 §6.5.2).
DEFAULT_TABLE_SIZE = 4096
#: Cached encoded fields, shared by all connections (bounded: cleared when full).
FIELD_CACHE_ENTRIES = 4096
#: Fields never cached and sent as never-indexed literals (RFC 7541 §7.1.3).
SENSITIVE = frozenset((b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"))

_STATIC: dict[bytes, tuple[int, dict[bytes, int]]] = HeaderTable.STATIC_TABLE_MAPPING
_cache: dict[tuple[bytes, bytes], bytes] = {}


def encode_int(value: int, prefix_bits: int, flags: int) -> bytes:
    """``value`` as an HPACK integer with a ``prefix_bits`` prefix (RFC 7541 §5.1),
    the high bits of its first byte set to ``flags``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """A string literal, raw (not Huffman-coded: RFC 7541 §5.2 leaves it to the encoder)."""
    return encode_int(len(data), 7, 0) + data


def encode_field(name: bytes, value: bytes) -> bytes:
    """One header field's representation (uncached)."""
    sensitive = name in SENSITIVE
    found = _STATIC.get(name)
    if found is not None:
        if not sensitive:
            index = found[1].get(value)
            if index is not None:
                return encode_int(index, 7, 0x80)
        return encode_int(found[0], 4, 0x10 if sensitive else 0x00) + _string(value)
    return (b"\x10" if sensitive else b"\x00") + _string(name) + _string(value)


def encode_fields(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A header block for ``headers`` (names already lower case, values bytes)."""
    parts = []
    cache = _cache
    for name, value in headers:
        key = (name, value)
        piece = cache.get(key)
        if piece is None:
            piece = encode_field(name, value)
            if name not in SENSITIVE:
                if len(cache) >= FIELD_CACHE_ENTRIES:
                    cache.clear()
                cache[key] = piece
        parts.append(piece)
    return b"".join(parts)


class StaticEncoder:
    """Stands in for ``h2``'s ``hpack.Encoder`` (``encode`` and ``header_table_size``,
    all that ``h2`` uses of it)."""

    def __init__(self) -> None:
        #: The table size the peer's decoder was last told of (or assumes).
        self._size = DEFAULT_TABLE_SIZE
        #: Smallest size set since the last block, to announce in the next (-1: none).
        self._pending = -1

    @property
    def header_table_size(self) -> int:
        return self._size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # Only a lower limit needs announcing: an empty table fits any larger one.
        if value < self._size:
            self._size = value
            if self._pending < 0 or value < self._pending:
                self._pending = value

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        """The header block for ``headers`` (``huffman`` is ignored: literals are raw)."""
        block = encode_fields(headers)
        if self._pending >= 0:
            block = encode_int(self._pending, 5, 0x20) + block
            self._pending = -1
        return block
