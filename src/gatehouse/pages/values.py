"""How pages show values: claims as JSON (never Python reprs), times in words.

Templates get plain strings from here and Jinja2 escapes them; nothing in this module
builds HTML.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: JWT and OpenID claims that hold NumericDate values (RFC 7519 §4.1, OpenID Core §2, §5.1).
TIME_CLAIMS = frozenset({"exp", "iat", "nbf", "auth_time", "updated_at"})


@dataclass(frozen=True, slots=True)
class ShownTime:
    """A Unix time for a page: ``text`` to read, ``iso`` for ``<time datetime>``, the epoch."""

    text: str
    iso: str
    epoch: str


@dataclass(frozen=True, slots=True)
class ShownClaim:
    """One claim for a page: its name, its value as text, and the time it means, if any."""

    name: str
    text: str
    time: ShownTime | None = None


def shown_time(epoch: float, now: float | None = None) -> ShownTime:
    """``epoch`` as ``2026-01-31 12:00:00 UTC (in 5 minutes)``."""
    now = time.time() if now is None else now
    stamp = time.gmtime(epoch)
    return ShownTime(
        text=time.strftime("%Y-%m-%d %H:%M:%S UTC", stamp) + f" ({_relative(epoch - now)})",
        iso=time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp),
        epoch=str(int(epoch)),
    )


def _relative(delta_s: float) -> str:
    seconds = abs(int(delta_s))
    if seconds < 60:
        amount = f"{seconds} second" + ("" if seconds == 1 else "s")
    elif seconds < 3600:
        minutes = seconds // 60
        amount = f"{minutes} minute" + ("" if minutes == 1 else "s")
    elif seconds < 86400 * 2:
        hours = seconds // 3600
        amount = f"{hours} hour" + ("" if hours == 1 else "s")
    else:
        amount = f"{seconds // 86400} days"
    return f"in {amount}" if delta_s > 0 else f"{amount} ago"


def claim_text(value: Any) -> str:
    """A claim value as JSON (a string as itself): ``["a", "b"]``, ``true``, ``3``."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def shown_claims(claims: Mapping[str, Any], now: float | None = None) -> list[ShownClaim]:
    """Every claim, sorted by name; NumericDate claims also read as times."""
    out = []
    for name in sorted(claims):
        value = claims[name]
        when = None
        if name in TIME_CLAIMS and isinstance(value, int | float) and not isinstance(value, bool):
            when = shown_time(float(value), now)
        out.append(ShownClaim(name, claim_text(value), when))
    return out


def shown_list(values: Iterable[Any]) -> list[str]:
    """Each value of a list claim as text (for lists shown item by item)."""
    return [claim_text(v) for v in values]
