"""ASGI middleware (Starlette, FastAPI, any ASGI app) that requires a verified assertion.

On success the :class:`~gatehouse.verify.Identity` is put in ``scope["gatehouse.identity"]``
and in ``scope["state"]["identity"]`` (so Starlette's ``request.state.identity`` works);
otherwise the request gets ``401`` (a WebSocket is closed with 1008 before accept). The
reason is logged, never sent to the client.

    app.add_middleware(VerifyMiddleware, verifier=Verifier(issuer="app.example.com"))
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .errors import VerificationError
from .verifier import Verifier

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("gatehouse.verify")

SCOPE_KEY = "gatehouse.identity"
_BODY = b"Unauthorized\n"


class VerifyMiddleware:
    """Verify ``X-Pomerium-Jwt-Assertion`` on every HTTP and WebSocket request."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        *,
        header: str = "X-Pomerium-Jwt-Assertion",
        scope_key: str = SCOPE_KEY,
        state_key: str = "identity",
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self._header = header.lower().encode("latin-1")
        self._scope_key = scope_key
        self._state_key = state_key
        self._exclude = frozenset(exclude_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self._exclude:
            await self.app(scope, receive, send)
            return
        token = next((v for k, v in scope.get("headers", ()) if k.lower() == self._header), None)
        try:
            if token is None:
                raise VerificationError("no assertion header")
            identity = await self.verifier.averify(token.decode("latin-1"))
        except VerificationError as exc:
            log.info("assertion refused (%s): %s", exc.reason, exc)
            await self._deny(scope, send)
            return
        scope = dict(scope)
        scope[self._scope_key] = identity
        scope["state"] = {**scope.get("state", {}), self._state_key: identity}
        await self.app(scope, receive, send)

    async def _deny(self, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(_BODY)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _BODY})


__all__ = ["SCOPE_KEY", "VerifyMiddleware"]
