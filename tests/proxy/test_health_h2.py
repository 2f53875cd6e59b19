"""The gRPC health answer parser of :mod:`gatehouse.proxy.health_h2`, bytes only: SERVING
is the one healthy reading, and anything truncated, compressed or malformed is UNKNOWN
(unhealthy), never an exception."""

from __future__ import annotations

import pytest

from gatehouse.proxy.health_h2 import SERVING, _serving_status, _varint


def frame(message: bytes, *, compressed: bool = False) -> bytes:
    return (b"\x01" if compressed else b"\x00") + len(message).to_bytes(4, "big") + message


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (frame(b"\x08\x01"), SERVING),
        (frame(b"\x08\x02"), 2),  # NOT_SERVING
        (frame(b""), 0),  # status absent: UNKNOWN
        (frame(b"\x12\x03abc\x08\x01"), SERVING),  # an unknown length-delimited field skipped
        (frame(b"\x08\x01", compressed=True), 0),
        (frame(b"\x08\x01")[:-1], 0),  # truncated message
        (b"\x00\x00\x00", 0),  # truncated prefix
        (frame(b"\x08"), 0),  # key without value
        (frame(b"\x08\xff\xff"), 0),  # unterminated varint
        (frame(b"\x12\x09ab"), 0),  # length past the end
        (frame(b"\x0d\x01\x00\x00\x00"), 0),  # fixed32: not in this message
        (frame(b"\x08" + b"\xff" * 10 + b"\x01"), 0),  # varint longer than 64 bits
    ],
)
def test_serving_status(data: bytes, status: int) -> None:
    assert _serving_status(data) == status


def test_serving_status_fed_one_byte_short_at_every_length() -> None:
    whole = frame(b"\x12\x03abc\x08\x01")
    for n in range(len(whole)):
        assert _serving_status(whole[:n]) == 0


@pytest.mark.parametrize(("n", "encoded"), [(0, b"\x00"), (1, b"\x01"), (300, b"\xac\x02")])
def test_varint(n: int, encoded: bytes) -> None:
    assert _varint(n) == encoded
