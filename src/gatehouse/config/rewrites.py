"""Route keys that rewrite what goes upstream or comes back: Pomerium's
``rewrite_response_headers`` entries and the Host-from-request rules.

``rewrite_response_headers`` follows Pomerium's Lua filter
(``config/envoyconfig/luascripts/rewrite-headers.lua``): for each entry in order, when the
response has the header, a value starting with ``prefix`` gets that prefix replaced by
``value`` (an empty prefix matches every value, so ``value`` is put in front). The
typical use is a ``Location`` the upstream writes with its internal URL.
"""

from __future__ import annotations

import re

from pydantic import field_validator

from .base import StrictModel

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


def check_header_name(name: str) -> str:
    """``name`` if it is an HTTP field name (RFC 9110 §5.1 token), else ``ValueError``."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name!r} is not a header name")
    return name


class RewriteHeader(StrictModel):
    """One ``rewrite_response_headers`` entry."""

    #: The response header to rewrite (any case).
    header: str
    #: Rewrite only values starting with this (empty: every value).
    prefix: str = ""
    #: What replaces the prefix.
    value: str = ""

    @field_validator("header")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_header_name(value)

    @field_validator("prefix", "value")
    @classmethod
    def _wire_safe(cls, value: str) -> str:
        if _BAD_VALUE.search(value):
            raise ValueError("must not contain CR, LF or NUL")
        return value
