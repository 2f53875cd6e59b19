"""CSRF protection for every console form (OWASP's synchronizer token, plus Fetch Metadata).

Three checks on every state-changing request, each enough to stop a cross-site form:

1. ``Sec-Fetch-Site`` (sent by every current browser) must be ``same-origin`` (or ``none``:
   typed by the user), never ``same-site`` or ``cross-site``;
2. ``Origin``, when present, must be the console's own origin (RFC 6454; a page of
   another origin, or ``null``, is refused);
3. the form's ``csrf`` field must be the token bound to the signed-in session:
   HMAC-SHA256 of the session id under a key derived from ``shared_secret``. Another
   site cannot read it (the same-origin policy; the console is never framed), and a
   token from one session is worthless in another.

A request without ``Origin`` and ``Sec-Fetch-Site`` (not a browser, e.g. curl) still
needs the token.
"""

from __future__ import annotations

import hashlib
import hmac

from ..authenticate.keys import derive_key
from ..config.base import normalize_origin
from ..http.messages import Request

#: The form field carrying the token.
CSRF_FIELD = "csrf"
_ALLOWED_FETCH_SITES = ("same-origin", "none")


class CsrfGuard:
    """Makes and checks the console's session-bound CSRF tokens."""

    def __init__(self, shared_secret: bytes, scheme: str) -> None:
        self._key = derive_key(shared_secret, "gatehouse console csrf")
        self._scheme = scheme

    def token(self, session_id: str) -> str:
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()

    def own_origin(self, request: Request) -> str:
        default = 443 if self._scheme == "https" else 80
        port = "" if request.port in (None, default) else f":{request.port}"
        return f"{self._scheme}://{request.host}{port}"

    def refusal(self, request: Request, session_id: str, form: dict[str, str]) -> str | None:
        """Why this request must be refused (``None``: it passes every check)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site.lower() not in _ALLOWED_FETCH_SITES:
            return f"cross-site request (Sec-Fetch-Site: {site[:40]})"
        origin = request.headers.get("origin")
        if origin is not None and normalize_origin(origin) != self.own_origin(request):
            return f"request from another origin ({origin[:100]})"
        sent = form.get(CSRF_FIELD, "")
        if not sent:
            return "no CSRF token in the form"
        if not hmac.compare_digest(sent.encode(), self.token(session_id).encode()):
            return "wrong CSRF token for this session"
        return None
