"""The one place where errors become responses.

A :class:`~gatehouse.errors.GatehouseError` maps to its ``status`` and a fixed, client-safe
message; the exception's own text goes to the log, never to the client. Browsers get an
HTML page, everything else a short JSON body (compare Pomerium's ``httputil/errors.go``).
"""

from __future__ import annotations

from ..errors import Forbidden, GatehouseError, SignInRequired
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
    500: "Something went wrong inside gatehouse. The error has been logged.",
    502: "The application behind this address failed to answer properly.",
    503: "A service gatehouse depends on is unavailable. Please try again shortly.",
    504: "The application behind this address took too long to answer.",
}


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
) -> Response:
    """The response for ``error``; ``details`` are shown only when the caller allows it."""
    if isinstance(error, SignInRequired) and error.location and wants_html(head):
        return Response.redirect(error.location, 302, [*error.headers, *(headers or [])])
    if isinstance(error, Forbidden) and details is None:
        details = error.details
    status = error.status
    message = error.message or _MESSAGES.get(status, _MESSAGES[500])
    extra = [("Cache-Control", "no-store"), *(headers or [])]
    if wants_html(head):
        page = render(
            "error.html", status=status, title=error.title, message=message, details=details or []
        )
        return Response.html(page, status, extra)
    body: dict[str, object] = {"status": status, "error": error.title, "message": message}
    if details:
        body["details"] = details
    return Response.json(body, status, extra)
