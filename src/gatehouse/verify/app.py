"""The verify app: a small upstream that shows what gatehouse forwarded, and whether it verifies.

Like Pomerium's ``verify`` service: put it behind a route with ``pass_identity_headers``
and open it in a browser. ``/`` is an HTML page (verified or not and why, the identity,
the decoded JWT header and claims, the request headers); ``/json`` and ``/headers`` give
the same as JSON. It checks the assertion with :class:`gatehouse.verify.Verifier`, for
the issuer named by the request's ``Host`` (as gatehouse signs it), against the keys at
``jwks_url``. A WSGI app (stdlib only, with ``cryptography``), served by
:func:`serve` or any WSGI server.
"""

from __future__ import annotations

import argparse
import base64
import html
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


def _pre(value: Any) -> str:
    return "<pre>" + html.escape(json.dumps(value, indent=2, sort_keys=True)) + "</pre>"


def render_page(data: dict[str, Any]) -> str:
    """The HTML page; every value is escaped."""
    esc = html.escape
    if data["verified"]:
        ident = data["identity"]
        status = '<h1 class="ok" id="status">&#10003; verified</h1>'
        who = (
            f'<p>Signed in as <strong id="email">{esc(ident["email"])}</strong>'
            f" ({esc(ident['name'])}), subject <code>{esc(ident['sub'])}</code></p>"
            f'<p>Groups: <span id="groups">{esc(", ".join(ident["groups"]) or "none")}</span></p>'
        )
    else:
        status = '<h1 class="bad" id="status">&#10007; not verified</h1>'
        who = f'<p id="reason">{esc(str(data["reason"]))}</p>'
    sections = [
        ("JWT header", data.get("jwt_header")),
        ("JWT claims", data.get("jwt_claims")),
        ("Request headers", data["headers"]),
    ]
    body = "".join(f"<h2>{esc(t)}</h2>{_pre(v)}" for t, v in sections if v is not None)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>gatehouse verify</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;"
        "padding:0 1rem}.ok{color:#0a7f3f}.bad{color:#b42318}"
        "pre{background:#f5f6f8;padding:1rem;overflow:auto}</style>"
        f"</head><body><p>gatehouse verify · {esc(data['host'])}</p>"
        f"{status}{who}{body}</body></html>"
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
