"""A small OpenID provider on loopback that can be honest or hostile, for red-team tests.

Nothing real can play a malicious IdP, so this one is ours: a threaded ``http.server`` on
127.0.0.1, port 0, with discovery, JWKS, ``/authorize`` (signs the configured user in at
once, no form) and ``/token``. By default it is a correct provider (RS256 ID tokens made
with joserfc, the sign-in's nonce, PKCE checked). Tests make it hostile for one sign-in
by setting :attr:`HostileIdp.mint` (build the ID token from the honest header and claims),
:attr:`HostileIdp.token_body` (answer the token request with any status and bytes),
:attr:`HostileIdp.hang` (hold the token request until released) or
:attr:`HostileIdp.callback_extra` (parameters added to the redirect back);
:meth:`HostileIdp.reset` makes it honest again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "gatehouse-redteam"
CLIENT_SECRET = "redteam-client-secret-0123456789abcdef0123456789"
#: Longest a hanging token request is held (seconds), so a forgotten release cannot wedge a run.
HANG_LIMIT_S = 15.0

Mint = Callable[[dict[str, Any], dict[str, Any], "HostileIdp"], str]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """An unsigned-or-hand-signed compact JWS (for ``alg: none`` and friends)."""
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{b64url(signature)}"


@dataclass
class Grant:
    nonce: str
    challenge: str
    redirect_uri: str


@dataclass
class HostileIdp:
    """The provider; see the module docstring."""

    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, {"kid": "k1"}))
    user: dict[str, Any] = field(
        default_factory=lambda: {
            "sub": "alice-sub",
            "email": "alice@example.com",
            "name": "Alice",
            "groups": ["staff"],
        }
    )
    algs: tuple[str, ...] = ("RS256",)
    mint: Mint | None = None
    token_body: Callable[[], tuple[int, bytes]] | None = None
    hang: threading.Event | None = None
    callback_extra: dict[str, str] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.mint = None
        self.token_body = None
        if self.hang is not None:
            self.hang.set()
        self.hang = None
        self.callback_extra = {}
        self.token_requests.clear()
        self.user = {
            "sub": "alice-sub",
            "email": "alice@example.com",
            "name": "Alice",
            "groups": ["staff"],
        }

    # -- tokens ---------------------------------------------------------------------------

    def honest_claims(self, nonce: str) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 3600,
            "nonce": nonce,
            **self.user,
        }

    def sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        return jwt.encode(header, claims, self.key, algorithms=[header["alg"]])

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "alg": "RS256", "use": "sig"}]}

    # -- server ---------------------------------------------------------------------------

    def start(self) -> HostileIdp:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/.well-known/openid-configuration":
                    self._send(200, json.dumps(idp.discovery()).encode())
                elif parts.path == "/jwks":
                    self._send(200, json.dumps(idp.public_jwks()).encode())
                elif parts.path == "/authorize":
                    code = secrets.token_urlsafe(16)
                    idp.grants[code] = Grant(
                        query.get("nonce", ""),
                        query.get("code_challenge", ""),
                        query.get("redirect_uri", ""),
                    )
                    params = {
                        "code": code,
                        "state": query.get("state", ""),
                        "iss": idp.issuer,
                        **idp.callback_extra,
                    }
                    self.send_response(302)
                    self.send_header("Location", query["redirect_uri"] + "?" + urlencode(params))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                idp.token_requests.append(form)
                if urlsplit(self.path).path != "/token":
                    self._send(404, b"{}")
                    return
                if idp.hang is not None:
                    idp.hang.wait(HANG_LIMIT_S)
                if idp.token_body is not None:
                    status, body = idp.token_body()
                    self._send(status, body)
                    return
                grant = idp.grants.pop(form.get("code", [""])[0], None)
                verifier = form.get("code_verifier", [""])[0]
                if (
                    grant is None
                    or b64url(hashlib.sha256(verifier.encode()).digest()) != grant.challenge
                ):
                    self._send(400, b'{"error":"invalid_grant"}')
                    return
                header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
                claims = idp.honest_claims(grant.nonce)
                token = idp.mint(header, claims, idp) if idp.mint else idp.sign(header, claims)
                body = {
                    "access_token": "at-" + secrets.token_urlsafe(16),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "id_token": token,
                    "refresh_token": "rt-" + secrets.token_urlsafe(16),
                }
                self._send(200, json.dumps(body).encode())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "id_token_signing_alg_values_supported": list(self.algs),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
        }

    def stop(self) -> None:
        if self.hang is not None:
            self.hang.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
