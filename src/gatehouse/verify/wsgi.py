"""WSGI middleware (Flask, Django, any WSGI app) that requires a verified assertion.

On success the :class:`~gatehouse.verify.Identity` is in ``environ["gatehouse.identity"]``
(Flask: ``request.environ[...]``; Django: ``request.META[...]``); otherwise ``401``. The
reason is logged, never sent to the client. Key fetches block the worker thread briefly,
at most once per cache period.

    app.wsgi_app = VerifyMiddleware(app.wsgi_app, Verifier(issuer="app.example.com"))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import VerificationError
from .verifier import Verifier

log = logging.getLogger("gatehouse.verify")

ENVIRON_KEY = "gatehouse.identity"
_BODY = b"Unauthorized\n"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class VerifyMiddleware:
    """Verify ``X-Pomerium-Jwt-Assertion`` on every request."""

    def __init__(
        self,
        app: WSGIApp,
        verifier: Verifier,
        *,
        header: str = "X-Pomerium-Jwt-Assertion",
        environ_key: str = ENVIRON_KEY,
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self._environ_name = "HTTP_" + header.upper().replace("-", "_")
        self._environ_key = environ_key
        self._exclude = frozenset(exclude_paths)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self._exclude:
            return self.app(environ, start_response)
        token = environ.get(self._environ_name)
        try:
            if not token:
                raise VerificationError("no assertion header")
            environ[self._environ_key] = self.verifier.verify(token)
        except VerificationError as exc:
            log.info("assertion refused (%s): %s", exc.reason, exc)
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(_BODY))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return _once(_BODY)
        return self.app(environ, start_response)


def _once(body: bytes) -> Iterator[bytes]:
    yield body


__all__ = ["ENVIRON_KEY", "VerifyMiddleware"]
