"""Removing identity headers a client sent, so an upstream only sees ones gatehouse wrote.

Rules (issue 3): every client-sent ``X-Pomerium-Jwt-Assertion*`` and ``X-Pomerium-Claim-*``
header is dropped on every route, whatever the options. On a route that passes identity
headers, the client's ``X-Pomerium-Jwt-Assertion`` (the first one) is kept as
``X-Pomerium-Jwt-Assertion-For``, so a chain of services can see the original caller; the
proxy then adds its own assertion. Works on raw, lower-case header pairs as
:class:`~gatehouse.http.messages.RequestHead` holds them.
"""

from __future__ import annotations

_ASSERTION = b"x-pomerium-jwt-assertion"
_ASSERTION_FOR = b"x-pomerium-jwt-assertion-for"
_PREFIXES = (_ASSERTION, b"x-pomerium-claim-")


def is_identity_header(name: bytes) -> bool:
    """True for a header only gatehouse may write (``name`` lower-case)."""
    return name.startswith(_PREFIXES)


def scrub_identity_headers(
    headers: list[tuple[bytes, bytes]], *, pass_identity_headers: bool
) -> list[tuple[bytes, bytes]]:
    """``headers`` without client identity headers; the input list is never modified.

    Cheap when there is nothing to do: one prefix test per header, and the input list
    itself is returned when no header matches.
    """
    if not any(k.startswith(_PREFIXES) for k, _ in headers):
        return headers
    out: list[tuple[bytes, bytes]] = []
    forwarded: bytes | None = None
    for k, v in headers:
        if not k.startswith(_PREFIXES):
            out.append((k, v))
        elif k == _ASSERTION and forwarded is None:
            forwarded = v
    if pass_identity_headers and forwarded is not None:
        out.append((_ASSERTION_FOR, forwarded))
    return out


__all__ = ["is_identity_header", "scrub_identity_headers"]
