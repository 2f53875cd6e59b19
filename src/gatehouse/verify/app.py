"""The verify app: a small upstream that shows what gatehouse forwarded, and whether it verifies.

Like Pomerium's ``verify`` service: put it behind a route with ``pass_identity_headers``
and open it in a browser. ``/`` is an HTML page (verified or not and why, the identity,
the decoded JWT header and claims, the request headers); ``/json`` and ``/headers`` give
the same as JSON. It checks the assertion with :class:`gatehouse.verify.Verifier`, for
the issuer named by the request's ``Host`` (as gatehouse signs it), against the keys at
``jwks_url``. A WSGI app (stdlib, ``cryptography``, Jinja2 for the page), served by
:func:`serve` or any WSGI server.
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .errors import VerificationError
from .verifier import Verifier

ASSERTION_ENV = "HTTP_X_POMERIUM_JWT_ASSERTION"
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _decode_part(part: str) -> Any:
    """Decode a JWT part for display only (never trusted)."""
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except ValueError:
        return None


class VerifyApp:
    """The WSGI application."""

    def __init__(self, jwks_url: str | None = None) -> None:
        self.jwks_url = jwks_url
        self._verifiers: dict[str, Verifier] = {}
        self._lock = threading.Lock()

    def _verifier(self, host: str) -> Verifier:
        with self._lock:
            verifier = self._verifiers.get(host)
            if verifier is None:
                verifier = Verifier(self.jwks_url, issuer=host)
                self._verifiers[host] = verifier
            return verifier

    def report(self, environ: dict[str, Any]) -> dict[str, Any]:
        """What the page shows, as data."""
        # The host the user addressed: gatehouse sets X-Forwarded-Host (and overwrites any
        # the client sent); Host is the upstream's own address unless preserve_host_header.
        addressed = environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST") or ""
        host = addressed.split(",")[0].strip().rsplit(":", 1)[0].lower()
        token = environ.get(ASSERTION_ENV, "")
        headers = {
            key[5:].replace("_", "-").title(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        out: dict[str, Any] = {"host": host, "verified": False, "reason": None, "headers": headers}
        if not token:
            out["reason"] = "no X-Pomerium-Jwt-Assertion header: is pass_identity_headers on?"
            return out
        parts = token.split(".")
        if len(parts) == 3:
            out["jwt_header"] = _decode_part(parts[0])
            out["jwt_claims"] = _decode_part(parts[1])
        try:
            identity = self._verifier(host).verify(token)
        except VerificationError as exc:
            out["reason"] = f"{exc.reason}: {exc}"
            return out
        out["verified"] = True
        out["jwks_url"] = self._verifier(host).keys.url
        out["identity"] = {
            "sub": identity.sub,
            "email": identity.email,
            "name": identity.name,
            "groups": list(identity.groups),
        }
        return out

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        data = self.report(environ)
        if path == "/json":
            return _respond(start_response, "application/json", json.dumps(data, indent=2))
        if path == "/headers":
            return _respond(
                start_response, "application/json", json.dumps(data["headers"], indent=2)
            )
        return _respond(start_response, "text/html; charset=utf-8", render_page(data))


def _respond(start_response: StartResponse, content_type: str, body: str) -> list[bytes]:
    raw = body.encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(raw))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [raw]


def render_page(data: dict[str, Any]) -> str:
    """The HTML page, in the look of gatehouse's own pages; every value is escaped
    (Jinja2 autoescaping). Like Pomerium's verify app: the identity, the signature and
    its key id, the claims with times in words, the request headers, links to the
    session page and sign-out."""
    from ..pages import render
    from ..pages.values import shown_claims

    claims = data.get("jwt_claims")
    header = data.get("jwt_header")
    return render(
        "verify.html",
        host=data["host"],
        verified=data["verified"],
        reason=data.get("reason"),
        identity=data.get("identity"),
        kid=header.get("kid") if isinstance(header, dict) else None,
        alg=header.get("alg") if isinstance(header, dict) else None,
        jwks_url=data.get("jwks_url", ""),
        claims=shown_claims(claims) if isinstance(claims, dict) else [],
        jwt_header=shown_claims(header) if isinstance(header, dict) else [],
        headers=sorted(data["headers"].items()),
    )


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(host: str, port: int, jwks_url: str | None) -> WSGIServer:
    """A threaded server for the app (``serve_forever`` it, or run it in a thread)."""
    return make_server(
        host, port, VerifyApp(jwks_url), _ThreadingServer, handler_class=_QuietHandler
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatehouse verify-app", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8000", help="address to serve on (default: 127.0.0.1:8000)"
    )
    parser.add_argument(
        "--jwks-url",
        default=None,
        help="gatehouse's JWKS (default: https://<request host>/.well-known/pomerium/jwks.json)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``gatehouse verify-app [--listen HOST:PORT] [--jwks-url URL]``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = serve(host or "127.0.0.1", int(port), args.jwks_url)
    print(f"verify app on http://{host or '127.0.0.1'}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
