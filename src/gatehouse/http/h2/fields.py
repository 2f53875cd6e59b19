"""The field rules of an HTTP/2 request's header block (RFC 9113 §8.2, §8.3.1), checked
in one pass.

``h2``'s own inbound validation runs each header list through seven chained generators
(about 8 µs of a request's CPU at 100 streams, ``bench/h2_bench.py``); gatehouse turns
it off and checks here instead, once, while it reads the fields it needs anyway. A
request that breaks a rule is malformed (RFC 9113 §8.1.1): it is refused on its own
stream with a 400 and never reaches a route. Refused:

- field names that are empty, carry upper case or are not tokens (§8.2.1, RFC 9110
  §5.1), values with NUL, CR, LF or another control character, or that begin or end
  with a space or tab (§8.2.1);
- connection-specific fields, and TE other than ``trailers`` (§8.2.2);
- pseudo-header fields that are unknown, repeated, response-only, after a regular
  field, ``:protocol`` outside CONNECT, or a request without ``:method``, ``:scheme``
  or a non-empty ``:path`` (§8.3);
- two Host fields. (Host against ``:authority`` is the caller's check.)

Cookie crumbs are joined into one field (§8.2.3), placed last.
"""

from __future__ import annotations

import re

from ...errors import BadRequest

Header = tuple[bytes, bytes]

#: Connection-specific fields, malformed in HTTP/2 (RFC 9113 §8.2.2).
CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade")
)
#: Request pseudo-header fields (RFC 9113 §8.3.1, RFC 8441 §4 for ``:protocol``).
REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))

#: A field name: lower-case token characters only (RFC 9110 §5.1 and §5.6.2, RFC 9113
#: §8.2.1 for the case).
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
#: What a field value may not hold: control characters but HTAB (RFC 9110 §5.5 — NUL,
#: CR and LF above all, RFC 9113 §8.2.1), or surrounding space or tab.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\A[ \t]|[ \t]\Z")

#: Names and values already found valid, kept apart (a valid value need not be a valid
#: name). A client repeats the same few in every request, and a set lookup costs a
#: fraction of a regular expression search. Bounded: emptied when full; long ones are
#: not kept.
_GOOD_NAMES: set[bytes] = set()
_GOOD_VALUES: set[bytes] = set()
_GOOD_MAX = 4096
_GOOD_BYTES = 128


def _remember(good: set[bytes], item: bytes) -> None:
    if len(item) <= _GOOD_BYTES:
        if len(good) >= _GOOD_MAX:
            good.clear()
        good.add(item)


class RequestFields:
    """The pseudo-header fields of a request and its regular fields, checked."""

    __slots__ = ("authority", "fields", "has_protocol", "host", "method", "path", "scheme")

    def __init__(self) -> None:
        self.method = b""
        self.scheme = b""
        self.path = b""
        self.authority = b""
        self.has_protocol = False
        self.host: bytes | None = None
        #: The regular fields in order, Host excluded, cookies joined at the end.
        self.fields: list[Header] = []


def parse_request(headers: list[Header]) -> RequestFields:
    """Split and check a request's header list (as HPACK decoded it).

    Raises:
        BadRequest: the request is malformed (RFC 9113 §8.1.1).
    """
    out = RequestFields()
    seen: set[bytes] = set()
    fields = out.fields
    cookies: list[bytes] | None = None
    regular = False
    for name, value in headers:
        if value and value not in _GOOD_VALUES:
            if _BAD_VALUE.search(value) is not None:
                raise BadRequest("invalid header value")
            _remember(_GOOD_VALUES, value)
        if name[:1] == b":":
            if regular:
                raise BadRequest("pseudo-header field after a regular field")
            if name in seen or name not in REQUEST_PSEUDO:
                raise BadRequest("repeated or unknown pseudo-header field")
            seen.add(name)
            if name == b":method":
                out.method = value
            elif name == b":path":
                out.path = value
            elif name == b":authority":
                out.authority = value
            elif name == b":scheme":
                out.scheme = value
            else:
                out.has_protocol = True
            continue
        regular = True
        if name not in _GOOD_NAMES:
            if _NAME.match(name) is None:
                raise BadRequest("invalid header name")
            _remember(_GOOD_NAMES, name)
        if name in CONNECTION_SPECIFIC:
            raise BadRequest("connection-specific header field")
        if name == b"te":
            if value.lower() != b"trailers":
                raise BadRequest("TE other than trailers")
        elif name == b"host":
            if out.host is not None:
                raise BadRequest("more than one Host header")
            out.host = value
            continue
        elif name == b"cookie":
            if cookies is None:
                cookies = []
            cookies.append(value)
            continue
        fields.append((name, value))
    if not out.method:
        raise BadRequest("missing :method")
    if out.method != b"CONNECT":
        if out.has_protocol:
            raise BadRequest(":protocol outside CONNECT")
        if not out.scheme or not out.path:
            raise BadRequest("missing :scheme or :path")
    if cookies is not None:
        fields.append((b"cookie", b"; ".join(cookies)))
    return out
