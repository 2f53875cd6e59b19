"""Go-style durations (``30s``, ``5m``, ``1h30m``, ``250ms``), as Pomerium's config accepts them.

A bare number is taken as seconds. Values are returned as float seconds.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: Any) -> float:
    """Parse a Go duration string (or a number of seconds) into seconds.

    Raises:
        ValueError: the value is not a duration; the message says why.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h30m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 5m or 1h30m")
    text = value.strip()
    if text == "0":
        return 0.0
    sign = 1.0
    if not text:
        raise ValueError("expected a duration such as 30s, 5m or 1h30m")
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None:
            raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 5m or 1h30m")
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 5m or 1h30m")
    if sign < 0 and total > 0:
        raise ValueError("a duration must not be negative")
    return total


def format_duration(seconds: float) -> str:
    """Format seconds back into the shortest Go-style duration string."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out = []
    whole = int(seconds)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    frac = seconds - whole
    if h:
        out.append(f"{h}h")
    if m:
        out.append(f"{m}m")
    if s or frac or not out:
        out.append(f"{s + frac:g}s")
    return "".join(out)


#: A config field holding a duration, in seconds.
Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
