"""The one place where errors become responses.

A :class:`~gatehouse.errors.GatehouseError` maps to its ``status`` and a fixed, client-safe
message; the exception's own text goes to the log, never to the client. Browsers get an
HTML page, everything else a short JSON body with the same facts (compare Pomerium's
``httputil/errors.go``). Every error response carries a request id, also written to the
access log, so a user's screenshot leads to the log line.
"""

from __future__ import annotations

import re
import secrets

from ..constants import SIGN_OUT_PATH, USER_INFO_PATH
from ..errors import Forbidden, GatehouseError, NotFound, SignInRequired
from ..http.messages import RequestHead, Response
from ..pages import render

_MESSAGES = {
    400: "The request could not be understood.",
    401: "You need to sign in to see this page.",
    403: "You do not have access to this page.",
    404: "No route matches this address.",
    405: "This method is not allowed here.",
    408: "The request took too long to arrive.",
    413: "The request body is too large.",
    414: "The address is too long.",
    431: "The request headers are too large.",
    495: "A valid client certificate is required to access this page.",
    500: "Something went wrong inside gatehouse. The error has been logged.",
    502: "The application behind this address failed to answer properly.",
    503: "A service gatehouse depends on is unavailable. Please try again shortly.",
    504: "The application behind this address took too long to answer.",
}

#: What the user can do about each status, in words.
_HINTS = {
    400: "Check the address, or go back and try again.",
    401: "Sign in, then open the page again.",
    403: "Ask the owner of this application for access, or sign in as someone else.",
    404: "Check the address for typing mistakes.",
    405: "Go back and try again from the application's own pages.",
    408: "Check your connection and try again.",
    413: "Send a smaller file or less data.",
    414: "Use a shorter link.",
    431: "Clear this site's cookies and try again.",
    500: "Try again. If it keeps happening, tell the administrator the request id below.",
    502: "Try again shortly. If it keeps happening, tell the administrator the request id.",
    503: "Try again in a minute.",
    504: "Try again shortly. If it keeps happening, tell the administrator the request id.",
}

#: A client's own ``X-Request-Id`` is kept when it looks like one (Envoy honours it too);
#: anything else is replaced, so the id can go into HTML and logs unchanged.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{8,64}")


def request_id(head: RequestHead | None) -> str:
    """The id of this request: the client's ``X-Request-Id`` if well formed, else new."""
    given = head.get(b"x-request-id") if head is not None else None
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given.decode("ascii")
    return secrets.token_hex(8)


def wants_html(head: RequestHead | None) -> bool:
    """True for browser navigations (``Accept`` mentions ``text/html``)."""
    if head is None:
        return False
    accept = head.get(b"accept") or b""
    if (head.get(b"x-requested-with") or b"").lower() == b"xmlhttprequest":
        return False
    return b"text/html" in accept


def error_response(
    error: GatehouseError,
    head: RequestHead | None,
    *,
    details: list[str] | None = None,
    headers: list[tuple[str, str]] | None = None,
    request_id: str | None = None,
    host: str | None = None,
    csrf: str | None = None,
) -> Response:
    """The response for ``error``; ``details`` are shown only when the caller allows it.

    ``host`` is named on 404s; ``csrf`` (the sign-out form's token for the signed-in
    user) puts sign-out buttons on a 403 page.
    """
    if isinstance(error, SignInRequired) and error.location and wants_html(head):
        return Response.redirect(error.location, 302, [*error.headers, *(headers or [])])
    if isinstance(error, Forbidden) and details is None:
        details = error.details
    status = error.status
    message = error.message or _MESSAGES.get(status, _MESSAGES[500])
    if isinstance(error, NotFound) and host:
        message = f"No route matches the host {host}."
    user = error.user if isinstance(error, Forbidden) else None
    route = error.route if isinstance(error, Forbidden) else None
    hint = _HINTS.get(status, _HINTS[500])
    extra = [("Cache-Control", "no-store"), *(headers or [])]
    if request_id:
        extra.append(("X-Request-Id", request_id))
    if wants_html(head):
        page = render(
            "error.html",
            status=status,
            title=error.title,
            message=message,
            hint=hint,
            details=details or [],
            request_id=request_id,
            user=user,
            route=route,
            csrf=csrf if user else None,
            sign_out_path=SIGN_OUT_PATH,
            user_info_path=USER_INFO_PATH,
        )
        return Response.html(page, status, extra)
    body: dict[str, object] = {"status": status, "error": error.title, "message": message}
    body["hint"] = hint
    if request_id:
        body["request_id"] = request_id
    if user:
        body["user"] = user
    if route:
        body["route"] = route
    if isinstance(error, NotFound) and host:
        body["host"] = host
    if details:
        body["details"] = details
    return Response.json(body, status, extra)
