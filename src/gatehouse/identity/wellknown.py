"""``/.well-known/pomerium/jwks.json`` and ``/.well-known/pomerium``, served on every host.

The JWKS document is fixed for a key set (every key is published whatever signs now), so
its body and strong ``ETag`` are computed once. ``Cache-Control: max-age=60`` bounds how
long verifiers (Grafana, the SDK) keep keys: it is the lead time a new key needs before it
signs (see :mod:`.keys`). Both documents allow any origin, as Pomerium's do.

The discovery document follows Pomerium (``internal/handlers/well_known_pomerium.go``):
``issuer``, ``jwks_uri`` and ``frontchannel_logout_uri`` come from the request's own
origin, ``authentication_callback_endpoint`` from the authenticate service URL.
"""

from __future__ import annotations

import hashlib
import json

from gatehouse.http.messages import Request, Response

from .keys import KeySet

#: Paths (Pomerium ``pkg/endpoints``).
PATH_JWKS = "/.well-known/pomerium/jwks.json"
PATH_WELL_KNOWN = "/.well-known/pomerium"
PATH_SIGN_OUT = "/.pomerium/sign_out"
#: How long verifiers may cache the JWKS, in seconds.
JWKS_MAX_AGE_S = 60

_CORS = ("Access-Control-Allow-Origin", "*")
_ALLOWED = "GET, HEAD, OPTIONS"


class WellKnownEndpoints:
    """The two discovery handlers for one key set; mount ``jwks`` and ``pomerium``."""

    __slots__ = ("_authenticate_url", "_callback_path", "_etag", "_jwks_body")

    def __init__(
        self,
        keyset: KeySet,
        *,
        authenticate_url: str | None = None,
        callback_path: str = "/oauth2/callback",
    ) -> None:
        """``authenticate_url`` is ``authenticate_service_url`` (``None``: the request's
        own origin, as when the proxy is its own authenticate service)."""
        self._jwks_body = json.dumps(keyset.jwks(), separators=(",", ":")).encode()
        self._etag = '"' + hashlib.sha256(self._jwks_body).hexdigest()[:32] + '"'
        self._authenticate_url = authenticate_url.rstrip("/") if authenticate_url else None
        self._callback_path = callback_path

    @property
    def etag(self) -> str:
        return self._etag

    async def jwks(self, request: Request) -> Response:
        """The JWK Set; ``304`` when ``If-None-Match`` names the current ETag."""
        if request.method == "OPTIONS":
            return _preflight()
        if request.method not in ("GET", "HEAD"):
            return Response(405, [("Allow", _ALLOWED), _CORS])
        headers = [
            ("Cache-Control", f"max-age={JWKS_MAX_AGE_S}"),
            ("ETag", self._etag),
            _CORS,
        ]
        if _etag_matches(request.headers.get_all("if-none-match"), self._etag):
            # RFC 9110 §15.4.5: a 304 repeats ETag and Cache-Control, and has no body.
            return Response(304, headers)
        return Response(200, [("Content-Type", "application/json"), *headers], self._jwks_body)

    async def pomerium(self, request: Request) -> Response:
        """The discovery document, built from the request's origin."""
        if request.method == "OPTIONS":
            return _preflight()
        if request.method not in ("GET", "HEAD"):
            return Response(405, [("Allow", _ALLOWED), _CORS])
        origin = request.origin
        authenticate = self._authenticate_url or origin
        return Response.json(
            {
                "issuer": f"{origin}/",
                "authentication_callback_endpoint": f"{authenticate}{self._callback_path}",
                "jwks_uri": f"{origin}{PATH_JWKS}",
                "frontchannel_logout_uri": f"{origin}{PATH_SIGN_OUT}",
            },
            headers=[_CORS],
        )


def _preflight() -> Response:
    return Response(
        204,
        [
            _CORS,
            ("Access-Control-Allow-Methods", _ALLOWED),
            ("Access-Control-Max-Age", "600"),
        ],
    )


def _etag_matches(values: list[str], etag: str) -> bool:
    """``If-None-Match`` uses the weak comparison (RFC 9110 §13.1.2): ``W/`` is ignored."""
    for value in values:
        for candidate in value.split(","):
            candidate = candidate.strip()
            if candidate == "*" or candidate.removeprefix("W/") == etag:
                return True
    return False


__all__ = ["JWKS_MAX_AGE_S", "PATH_JWKS", "PATH_WELL_KNOWN", "WellKnownEndpoints"]
