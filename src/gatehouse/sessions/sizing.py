"""How many bytes a cached session costs, so caches can be bounded by memory, not count.

A count bound is wrong both ways: a cached record with an IdP's tokens and claims is
~4 KiB, one without ~2 KiB, and how many fit depends on the operator's memory, not on a constant.
:func:`session_bytes` estimates what one cache entry keeps alive — the record, its
strings, its claims, and the cache's own entry and key — from ``sys.getsizeof`` of each
part plus a fixed overhead measured with ``tracemalloc`` (``tests/sessions/
test_session_cache.py`` checks the estimate against a tracemalloc measurement).

It runs when an entry is stored (a store read or a write), never on a cache hit.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .model import Session

#: Bytes per cache entry besides the record's values: the ``Session`` object itself, the
#: cache's entry object, its ordered-dict slot and the key string (measured, CPython 3.11).
ENTRY_OVERHEAD_BYTES = 250
#: Depth past which claim values are charged a flat size (claims are untrusted JSON).
_MAX_DEPTH = 8
_FLAT_BYTES = 64


def json_bytes(value: Any, depth: int = 0) -> int:
    """Approximate memory held by a JSON-like value (str, numbers, lists, dicts)."""
    if isinstance(value, str):
        return sys.getsizeof(value)
    if depth >= _MAX_DEPTH:
        return _FLAT_BYTES
    if isinstance(value, Mapping):
        size = sys.getsizeof(value) if isinstance(value, dict) else 240
        for k, v in value.items():
            size += json_bytes(k, depth + 1) + json_bytes(v, depth + 1)
        return size
    if isinstance(value, list | tuple):
        return sys.getsizeof(value) + sum(json_bytes(v, depth + 1) for v in value)
    return sys.getsizeof(value)


def session_bytes(session: Session) -> int:
    """Approximate memory one cached ``session`` keeps alive (see the module docstring)."""
    size = ENTRY_OVERHEAD_BYTES
    for text in (
        session.id,
        session.user_id,
        session.email,
        session.name,
        session.id_token,
        session.access_token,
        session.refresh_token,
    ):
        if text:  # the empty string is shared
            size += sys.getsizeof(text)
    size += json_bytes(session.groups)
    size += json_bytes(session.claims)
    return size
