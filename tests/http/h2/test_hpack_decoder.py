"""``RequestDecoder`` against ``hpack.Decoder``: the same header lists, table and errors for
blocks an independent encoder (``hpack.Encoder``, with its dynamic table) produces."""

from __future__ import annotations

import hpack
import pytest

from gatehouse.http.h2.hpack_decoder import RequestDecoder

REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/"),
    (b":authority", b"app.example.com"),
    (b"user-agent", b"client/1.0"),
    (b"accept", b"*/*"),
]


def pair(limit: int = 65_536) -> tuple[hpack.Decoder, RequestDecoder]:
    plain, fast = hpack.Decoder(), RequestDecoder(hpack.Decoder())
    plain.max_header_list_size = fast.max_header_list_size = limit
    return plain, fast


def table(decoder: hpack.Decoder) -> list[tuple[bytes, bytes]]:
    return list(decoder.header_table.dynamic_entries)


def test_repeated_requests_decode_as_hpack_does() -> None:
    encoder = hpack.Encoder()
    plain, fast = pair()
    blocks = [encoder.encode(REQUEST) for _ in range(4)]
    blocks.append(encoder.encode([*REQUEST[:2], (b":path", b"/next"), *REQUEST[3:]]))
    blocks.append(encoder.encode(REQUEST))
    assert len(blocks[1]) == len(REQUEST)  # from the second on: indexed fields only
    for block in blocks:
        assert [tuple(h) for h in plain.decode(block, raw=True)] == fast.decode(block, raw=True)
        assert table(plain) == table(fast.inner)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b"\x82\x80", id="index-zero"),
        pytest.param(b"\x82\xfe", id="past-the-table"),
        pytest.param(b"\xff\x80\x01", id="multi-byte-index-past-the-table"),
    ],
)
def test_bad_indexes_raise_as_hpack_does(block: bytes) -> None:
    plain, fast = pair()
    with pytest.raises(hpack.HPACKDecodingError) as want:
        plain.decode(block, raw=True)
    with pytest.raises(hpack.HPACKDecodingError) as got:
        fast.decode(block, raw=True)
    assert type(got.value) is type(want.value)


def test_hpack_bomb_of_references_to_one_large_entry_is_refused() -> None:
    """One 4 KB field inserted once, then referenced by one byte each (RFC 7541 §7.3)."""
    encoder = hpack.Encoder()
    plain, fast = pair(limit=16_384)
    first = encoder.encode([(b"x-big", b"v" * 4000)])
    assert plain.decode(first, raw=True) and fast.decode(first, raw=True)
    bomb = bytes([0x80 | 62]) * 20  # 20 references to the dynamic entry: ~80 KB
    with pytest.raises(hpack.OversizedHeaderListError):
        plain.decode(bomb, raw=True)
    with pytest.raises(hpack.OversizedHeaderListError):
        fast.decode(bomb, raw=True)
    assert fast.decode(bomb[:3], raw=True) == [(b"x-big", b"v" * 4000)] * 3


def test_table_larger_than_allowed_is_refused_even_for_indexed_blocks() -> None:
    plain, fast = pair()
    for decoder in (plain, fast):
        decoder.max_allowed_table_size = 256  # SETTINGS_HEADER_TABLE_SIZE lowered
    with pytest.raises(hpack.InvalidTableSizeError):
        plain.decode(b"\x82", raw=True)
    with pytest.raises(hpack.InvalidTableSizeError):
        fast.decode(b"\x82", raw=True)
    # Once the peer's block shrinks the table, indexed blocks decode again.
    update = b"\x3f\xe1\x01"  # dynamic table size update to 256 (§6.3)
    assert fast.decode(update + b"\x82", raw=True) == [(b":method", b"GET")]
    assert fast.decode(b"\x82", raw=True) == [(b":method", b"GET")]
