"""HTTP Basic authentication (RFC 7617) in front of a WSGI app: the metrics endpoint's
``metrics_basic_auth``, checked as Pomerium's ``RequireBasicAuth`` does (SHA-256 of both
sides compared in constant time, so neither length nor content leaks through timing)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_CHALLENGE = [
    ("WWW-Authenticate", 'Basic realm="Restricted"'),
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", "12"),
]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def credentials(header: str) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` value, or ``None``."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def require_basic_auth(app: WSGIApp, user: str, password: str) -> WSGIApp:
    """``app`` answering 401 with a ``Basic`` challenge unless given ``user:password``."""
    want_user, want_password = _digest(user), _digest(password)

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = credentials(environ.get("HTTP_AUTHORIZATION", ""))
        ok = given is not None
        user_ok = hmac.compare_digest(_digest(given[0] if given else ""), want_user)
        password_ok = hmac.compare_digest(_digest(given[1] if given else ""), want_password)
        if not (ok and user_ok and password_ok):
            start_response("401 Unauthorized", list(_CHALLENGE))
            return [b"Unauthorized"]
        return app(environ, start_response)

    return guarded
