"""The IdP's HTML pages, from its own Jinja2 templates (autoescaped: nothing is trusted)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from ..http.messages import Response

#: Headers on every IdP page: never cached, never framed (clickjacking of the sign-in form),
#: no scripts at all. (No ``form-action``: Chromium applies it to the redirect that follows
#: the sign-in POST, which goes to the relying party.)
PAGE_HEADERS = (
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("gatehouse.idp", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def page(template: str, status: int = 200, **context: Any) -> Response:
    """An HTML response rendered from ``templates/<template>``."""
    return Response.html(_env().get_template(template).render(**context), status, PAGE_HEADERS)


def error_page(status: int, title: str, message: str) -> Response:
    """A client-safe error page (the message is fixed text, never exception text)."""
    return page("error.html", status, title=title, message=message)


__all__ = ["PAGE_HEADERS", "error_page", "page"]
