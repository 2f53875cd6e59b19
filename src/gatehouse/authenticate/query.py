"""Query strings for the URLs the sign-in flow builds and signs.

:func:`query_string` writes exactly what ``urlencode(pairs, quote_via=quote)`` writes
(RFC 3986 percent-encoding, space as ``%20``), but a value made only of characters that
need no quoting (most of them: base64url tokens, times, hashes, names) is taken as it is
instead of going through ``quote`` character by character. A sign-in builds and signs
half a dozen such strings, about sixty values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

#: What ``quote(value, safe="")`` leaves unchanged (RFC 3986 §2.3 unreserved characters).
_UNRESERVED_RE = re.compile(r"[A-Za-z0-9_.~-]*")


def quote_value(value: str) -> str:
    """``quote(value, safe="")``."""
    if _UNRESERVED_RE.fullmatch(value) is not None:
        return value
    return quote(value, safe="")


def query_pair(name: str, value: str) -> str:
    """One ``name=value`` of a query string."""
    return quote_value(name) + "=" + quote_value(value)


def query_string(pairs: Iterable[tuple[str, str]]) -> str:
    """``urlencode(pairs, quote_via=quote)`` for string pairs."""
    return "&".join([query_pair(name, value) for name, value in pairs])
