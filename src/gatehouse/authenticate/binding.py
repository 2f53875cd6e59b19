"""The sign-in binding cookie: ties a hand-off to the browser that started the sign-in.

Login CSRF (OAuth 2.0 Security BCP §4.4.1): without it, an attacker signs in as
themselves, stops at the redirect to ``https://<route>/.pomerium/callback/?pomerium_handoff=…``
and has a victim's browser open that URL, which would replace the victim's cookie with
the attacker's session.

Theory of operation: when a route host sends a browser to sign in, it sets a random
binding cookie on that host (HttpOnly, SameSite=Lax, 15 minutes; ``__Host-`` prefixed
when Secure, so a sibling subdomain cannot overwrite it) and puts the SHA-256 of the
value into the signed ``/.pomerium/sign_in`` URL (``gatehouse_binding``). The hash
travels through the sealed OAuth ``state`` into the hand-off token, where it is part of
the authenticated data; ``/.pomerium/callback/`` opens the token only with the hash of
the binding cookie the browser presents. An attacker's hand-off carries the hash of the
attacker's cookie, which no other browser has. An existing well-formed value is reused,
so sign-ins started in two tabs both complete.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

#: Query parameter of the signed sign-in URL carrying the binding hash.
QUERY_BINDING = "gatehouse_binding"
#: Lifetime of the binding cookie (seconds): the sign-in state's 10 minutes, plus the
#: hand-off's minute, plus margin, counted from the route host's redirect.
BINDING_COOKIE_MAX_AGE_S = 900
#: Prefix a browser accepts only with Secure, Path=/ and no Domain (RFC 6265bis §4.1.3.2).
HOST_PREFIX = "__Host-"

_VALUE_RE = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")


def binding_cookie_name(cookie_name: str, secure: bool) -> str:
    """The binding cookie's name; ``__Host-`` prefixed when the cookie is Secure."""
    name = f"{cookie_name}_binding"
    return HOST_PREFIX + name if secure else name


def binding_value(existing: str | None) -> str:
    """``existing`` when well formed (another tab's sign-in), else a new random value."""
    if existing is not None and _VALUE_RE.match(existing):
        return existing
    return secrets.token_urlsafe(32)


def binding_hash(value: str | None) -> str | None:
    """The hash carried in URLs and tokens; ``None`` for a missing or malformed value.

    Only the hash leaves the browser's cookie jar: the sign-in URL may end up in history
    or logs, and the hash is useless without the cookie itself."""
    if value is None or not _VALUE_RE.match(value):
        return None
    digest = hashlib.sha256(b"gatehouse sign-in binding\x00" + value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_binding_hash(text: str) -> bool:
    """Whether ``text`` has the shape of :func:`binding_hash`'s output."""
    return bool(_VALUE_RE.match(text))
