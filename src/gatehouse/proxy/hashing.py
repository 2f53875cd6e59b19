"""Consistent hashing of requests onto endpoints: Envoy's ring hash and Maglev.

The key is Pomerium's hash policy (``config/envoyconfig/routes.go``): the SHA-256 of the
session id when the request has a session (Pomerium's ``x-pomerium-routing-key``), else
the client IP. Both tables are built over the endpoints that may get traffic now, so a
key moves only when the set of endpoints changes, and then as few keys as the algorithm
allows. gatehouse hashes with BLAKE2b (Envoy uses xxHash): the same key lands on the
same endpoint in every gatehouse worker and replica, not on the one Envoy would pick.

- Ring hash (Envoy ``RingHashLoadBalancer``, the Ketama idea): each endpoint gets points
  on a 64-bit ring in proportion to its weight, at least ``minimum_ring_size`` points in
  all and at most ``maximum_ring_size``; a key goes to the first point at or after it.
- Maglev (Eisenbud et al., NSDI 2016, weighted as Envoy's ``MaglevTable``): a lookup
  table of a prime size filled by each endpoint in turn along its own permutation, an
  endpoint taking turns in proportion to its weight.
"""

from __future__ import annotations

import array
import bisect
import hashlib
import math
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


def hash64(data: bytes) -> int:
    """A 64-bit hash of ``data``."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring(Generic[T]):
    """A hash ring over ``items`` (named by ``names``, weighted by ``weights``)."""

    __slots__ = ("_items", "_points")

    def __init__(
        self,
        items: Sequence[T],
        names: Sequence[str],
        weights: Sequence[int],
        minimum: int = 1024,
        maximum: int = 8_388_608,
    ) -> None:
        total = sum(weights)
        shares = [w / total for w in weights]
        smallest = min(shares)
        # Envoy: scale so the lightest endpoint gets at least one point, within the bounds.
        scale = min(math.ceil(smallest * minimum) / smallest, float(maximum))
        entries: list[tuple[int, int]] = []
        placed = 0.0
        for index, (name, share) in enumerate(zip(names, shares, strict=True)):
            placed += scale * share
            # Envoy adds points while its count is below the running target.
            for i in range(max(1, math.ceil(placed - 1e-9) - len(entries))):
                entries.append((hash64(f"{name}_{i}".encode()), index))
        entries.sort()
        self._points = [p for p, _ in entries]
        self._items = [items[i] for _, i in entries]

    def pick(self, key: bytes) -> T:
        at = bisect.bisect_left(self._points, hash64(key))
        return self._items[at if at < len(self._items) else 0]

    def __len__(self) -> int:
        return len(self._points)


class Maglev(Generic[T]):
    """A Maglev lookup table of prime size ``size`` over weighted ``items``."""

    __slots__ = ("_items", "_table")

    def __init__(
        self, items: Sequence[T], names: Sequence[str], weights: Sequence[int], size: int = 65537
    ) -> None:
        n = len(items)
        offsets = [hash64(b"offset:" + name.encode()) % size for name in names]
        skips = [hash64(b"skip:" + name.encode()) % (size - 1) + 1 for name in names]
        heaviest = max(weights)
        turns = [w / heaviest for w in weights]
        credit = [0.0] * n
        following = [0] * n
        table: list[int] = [-1] * size
        filled = 0
        while filled < size:
            for i in range(n):
                credit[i] += turns[i]
                if credit[i] < 1.0:
                    continue
                credit[i] -= 1.0
                # The next free slot along this endpoint's permutation.
                while True:
                    slot = (offsets[i] + following[i] * skips[i]) % size
                    following[i] += 1
                    if table[slot] < 0:
                        break
                table[slot] = i
                filled += 1
                if filled == size:
                    break
        # Indices in a compact array (4 bytes an entry), not a list of references.
        self._items = list(items)
        self._table = array.array("I", table)

    def pick(self, key: bytes) -> T:
        return self._items[self._table[hash64(key) % len(self._table)]]

    def __len__(self) -> int:
        return len(self._table)
