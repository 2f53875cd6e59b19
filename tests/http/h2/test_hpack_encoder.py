"""The static-table HPACK encoder: blocks that an independent decoder (``hpack``) reads
back exactly, table size updates when the peer lowers its limit, credentials never
indexed."""

from __future__ import annotations

from hpack import Decoder, NeverIndexedHeaderTuple

from gatehouse.http.h2.hpack_encoder import StaticEncoder, encode_int

RESPONSE = [
    (b":status", b"200"),
    (b"content-type", b"text/plain"),
    (b"date", b"Thu, 03 Dec 2026 13:40:00 GMT"),
    (b"x-request-id", b"0f" * 40),
    (b"set-cookie", b"_pomerium=secret; Secure"),
    (b"content-length", b"2"),
]


def test_blocks_decode_to_the_same_fields_many_times() -> None:
    enc, dec = StaticEncoder(), Decoder()
    for i in range(3):  # cached pieces after the first block
        headers = [*RESPONSE, (b"x-n", b"%d" % i), (b"long", b"v" * 300)]
        assert dec.decode(enc.encode(headers), raw=True) == headers
    # Nothing was put in the decoder's dynamic table.
    assert len(dec.header_table.dynamic_entries) == 0


def test_static_table_fields_are_one_byte() -> None:
    assert StaticEncoder().encode([(b":status", b"200")]) == b"\x88"  # index 8
    assert StaticEncoder().encode([(b":status", b"404")]) == b"\x8d"  # index 13


def test_credentials_are_never_indexed() -> None:
    block = StaticEncoder().encode([(b"set-cookie", b"a=b"), (b"authorization", b"x")])
    fields = Decoder().decode(block, raw=True)
    assert all(isinstance(f, NeverIndexedHeaderTuple) for f in fields)
    assert fields == [(b"set-cookie", b"a=b"), (b"authorization", b"x")]


def test_lowered_table_size_is_announced_once() -> None:
    enc, dec = StaticEncoder(), Decoder()
    dec.max_allowed_table_size = 0  # as after our client's SETTINGS_HEADER_TABLE_SIZE=0
    enc.header_table_size = 100
    enc.header_table_size = 0
    enc.header_table_size = 50  # raised again: the smallest is what must be announced
    block = enc.encode(RESPONSE)
    assert block[:1] == b"\x20"  # dynamic table size update to 0 (RFC 7541 §6.3)
    assert dec.decode(block, raw=True) == RESPONSE
    assert enc.encode(RESPONSE)[:1] != b"\x20"  # only in the first block after the change


def test_raising_the_table_size_needs_no_update() -> None:
    enc = StaticEncoder()
    enc.header_table_size = 65_536
    assert enc.encode([(b":status", b"200")]) == b"\x88"


def test_integers_past_the_prefix() -> None:
    # RFC 7541 C.1.2: 1337 with a 5-bit prefix.
    assert encode_int(1337, 5, 0) == b"\x1f\x9a\x0a"
    assert encode_int(10, 5, 0) == b"\x0a"
    assert encode_int(31, 5, 0x20) == b"\x3f\x00"
