"""Grafana's JWT authentication, rule by rule, as an independent verifier for the tests.

Read from Grafana's source (``pkg/services/auth/jwt/key_sets.go``, ``auth.go``,
``validation.go``, ``pkg/services/authn/clients/jwt.go``, ``pkg/setting/setting_jwt.go``)
and reproduced with PyJWT (signatures) and jmespath (``role_attribute_path``), not with
gatehouse's own verifier. Settings are read from the ``GF_AUTH_JWT_*`` environment that
the example's docker-compose.yaml gives Grafana (Grafana maps ``GF_<SECTION>_<KEY>`` to
``[auth.jwt] key``).

The rules:

* start-up: exactly one of ``key_file``, ``jwk_set_file``, ``jwk_set_url``
  ("key set configuration is ambiguous"); ``jwk_set_url`` must be ``https`` unless
  Grafana runs in development mode ("jwt_set_url must have https scheme");
  ``tls_client_ca`` replaces the system trust store for that URL (Go's ``RootCAs``), and
  ``tls_skip_verify_insecure`` turns checking off; ``expect_claims`` is JSON whose
  ``iss``/``sub`` must be strings and ``aud`` a string or a list of strings;
* keys: the JWKS is fetched (30 s timeout) and cached for ``cache_ttl`` (default 60m),
  or for the response's ``max-age`` when that is shorter; a token's ``kid`` must equal a
  key's ``kid`` exactly ("no keys found");
* the token: ``Bearer `` and base64 padding are stripped; the algorithm must be one of
  Grafana's list; the signature must verify with the key;
* claims: ``iss``/``sub`` strings, ``aud`` string or list, ``exp``/``nbf``/``iat``
  numbers; with go-jose's default leeway of one minute: not expired, not before ``nbf``,
  not issued in the future; ``iss`` and ``sub`` of ``expect_claims`` match and one of
  its ``aud`` values is in the token's; any other expected claim deep-equals the token's;
* the user: ``sub`` must be a non-empty string ("missing mandatory 'sub' claim");
  login from ``username_claim``, email from ``email_claim``, and at least one of them
  ("missing login and email claim"); the role from ``role_attribute_path`` (JMESPath,
  a string; ``GrafanaAdmin`` is Admin plus server admin) and, with
  ``role_attribute_strict``, no valid role is a refusal; an unknown user is created only
  with ``auto_sign_up``; with ``url_login`` off, ``?auth_token=`` is never read.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jmespath  # type: ignore[import-untyped]
import jwt

#: go-jose's jwt.DefaultLeeway, used by Claims.Validate.
LEEWAY_S = 60.0
#: Algorithms Grafana passes to jwt.ParseSigned (auth.go).
ALLOWED_ALGORITHMS = (
    "EdDSA", "HS256", "HS384", "HS512", "RS512", "RS256", "ES256", "ES384", "ES512",
    "PS256", "PS384", "PS512",
)  # fmt: skip
#: org.RoleType values that are valid roles.
VALID_ROLES = frozenset({"None", "Viewer", "Editor", "Admin"})
#: Grafana's JWKS client timeout (key_sets.go).
FETCH_TIMEOUT_S = 30.0


class GrafanaRefusal(Exception):
    """Grafana would refuse: at start-up (``startup``) or for this request (``status``)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


def parse_go_duration(text: str) -> float:
    """Enough of Go's time.ParseDuration for Grafana's settings (``60m``, ``1h30m``)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            number += c
            i += 1
            continue
        unit = "ms" if text[i : i + 2] == "ms" else c
        if unit not in units or not number:
            raise GrafanaRefusal(f"time: invalid duration {text!r}")
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number:
        raise GrafanaRefusal(f"time: missing unit in duration {text!r}")
    return total


@dataclass
class GrafanaJWT:
    """``[auth.jwt]`` from environment variables, checked as Grafana checks them at start.

    ``connect``: where a host:port really is (the tests map the compose service name to
    the loopback gatehouse); ``clock``: the time used for claims.
    """

    env: Mapping[str, str]
    connect: Callable[[str, int], tuple[str, int]] = lambda host, port: (host, port)
    clock: Callable[[], float] = time.time
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetches: int = 0
    #: The token of the last request authenticated (for tests that replay it).
    last_token: str = ""
    _cache: tuple[float, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        get = self.env.get
        if get("GF_AUTH_JWT_ENABLED", "false").lower() != "true":
            raise GrafanaRefusal("JWT auth is not enabled")
        self.header_name = get("GF_AUTH_JWT_HEADER_NAME", "")
        if not self.header_name:
            raise GrafanaRefusal("no header_name: the JWT client never runs")
        sources = [
            k for k in ("KEY_FILE", "JWK_SET_FILE", "JWK_SET_URL") if get(f"GF_AUTH_JWT_{k}")
        ]
        if not sources:
            raise GrafanaRefusal("key set for jwt verification is not configured")
        if len(sources) > 1:
            raise GrafanaRefusal(
                "key set configuration is ambiguous: you should set either key_file, "
                "jwk_set_file or jwk_set_url"
            )
        self.url = get("GF_AUTH_JWT_JWK_SET_URL", "")
        if not self.url:
            raise GrafanaRefusal("only jwk_set_url is reproduced here")
        dev = get("GF_DEFAULT_APP_MODE", "production") == "development"
        if urlsplit(self.url).scheme != "https" and not dev:
            raise GrafanaRefusal("jwt_set_url must have https scheme")
        self.tls = self._tls_context(
            get("GF_AUTH_JWT_TLS_CLIENT_CA", ""),
            get("GF_AUTH_JWT_TLS_SKIP_VERIFY_INSECURE", "false").lower() == "true",
        )
        self.cache_ttl_s = parse_go_duration(get("GF_AUTH_JWT_CACHE_TTL", "60m"))
        self.expect = self._expectations(get("GF_AUTH_JWT_EXPECT_CLAIMS", "{}"))
        self.username_claim = get("GF_AUTH_JWT_USERNAME_CLAIM", "")
        self.email_claim = get("GF_AUTH_JWT_EMAIL_CLAIM", "")
        self.role_path = get("GF_AUTH_JWT_ROLE_ATTRIBUTE_PATH", "")
        self.role_strict = get("GF_AUTH_JWT_ROLE_ATTRIBUTE_STRICT", "false").lower() == "true"
        self.skip_role_sync = get("GF_AUTH_JWT_SKIP_ORG_ROLE_SYNC", "false").lower() == "true"
        self.auto_sign_up = get("GF_AUTH_JWT_AUTO_SIGN_UP", "false").lower() == "true"
        self.url_login = get("GF_AUTH_JWT_URL_LOGIN", "false").lower() == "true"

    @staticmethod
    def _tls_context(ca_file: str, skip_verify: bool) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_file:
            # RootCAs set: the system's roots are not consulted at all.
            try:
                context.load_verify_locations(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise GrafanaRefusal(f"failed to read TlsClientCa: {exc}") from exc
        else:
            context.load_default_certs()
        return context

    @staticmethod
    def _expectations(text: str) -> dict[str, Any]:
        expect = json.loads(text)
        for key in ("iss", "sub"):
            if key in expect and not isinstance(expect[key], str):
                raise GrafanaRefusal(f"{key!r} expectation has invalid type, string expected")
        aud = expect.get("aud")
        if aud is not None and not (
            isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
        ):
            raise GrafanaRefusal("'aud' expectation has invalid type, array or string expected")
        return dict(expect)

    # -- keys -----------------------------------------------------------------------------

    def _fetch(self) -> tuple[dict[str, Any], str]:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addr = self.connect(host, port)
        sock = socket.create_connection(addr, timeout=FETCH_TIMEOUT_S)
        try:
            if parts.scheme == "https":
                sock = self.tls.wrap_socket(sock, server_hostname=host)
            conn = http.client.HTTPConnection(host, port, timeout=FETCH_TIMEOUT_S)
            conn.sock = sock
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
            response = conn.getresponse()
            body = response.read()
            cache_control = response.getheader("cache-control", "")
        finally:
            sock.close()
        self.fetches += 1
        return json.loads(body), cache_control

    def key_set(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cache is not None and self._cache[0] > now:
            return self._cache[1]
        jwks, cache_control = self._fetch()
        ttl = self.cache_ttl_s
        for part in cache_control.split(","):
            part = part.strip()
            if part.startswith("max-age="):
                try:
                    max_age = int(part[8:])
                except ValueError:
                    break
                if ttl == 0 or max_age < ttl:
                    ttl = max_age
        if self.cache_ttl_s > 0:
            self._cache = (now + ttl, jwks)
        return jwks

    def trust(self, jwks: dict[str, Any]) -> None:
        """Use ``jwks`` as the fetched key set from now on (for checks without a server)."""
        self._cache = (float("inf"), jwks)

    def cached_for_s(self) -> float:
        return 0.0 if self._cache is None else self._cache[0] - time.monotonic()

    # -- a request ------------------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str], query: str = "") -> dict[str, Any]:
        """The Grafana identity for a request (``login``, ``email``, ``name``, ``role``,
        ``grafana_admin``), or :class:`GrafanaRefusal`."""
        token = next((v for k, v in headers.items() if k.lower() == self.header_name.lower()), "")
        if not token and self.url_login:
            token = parse_qs(query).get("auth_token", [""])[0]
        token = token.removeprefix("Bearer ")
        self.last_token = token
        if not token:
            raise GrafanaRefusal("no token: Grafana shows its login page", 401)
        claims = self.verify(token)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise GrafanaRefusal("missing mandatory 'sub' claim in JWT")
        login = claims.get(self.username_claim) if self.username_claim else ""
        email = claims.get(self.email_claim) if self.email_claim else ""
        login = login if isinstance(login, str) else ""
        email = email if isinstance(email, str) else ""
        role, admin = self._role(claims)
        if not self.skip_role_sync and self.role_strict and role not in VALID_ROLES:
            raise GrafanaRefusal("could not evaluate any valid roles using IdP provided data", 403)
        if not login and not email:
            raise GrafanaRefusal("missing login and email claim in JWT")
        known = self.users.get(login or email)
        if known is None:
            if not self.auto_sign_up:
                raise GrafanaRefusal("user not found and auto sign-up is off")
            known = self.users[login or email] = {"created": self.clock()}
        name = claims.get("name")
        return {
            "login": login,
            "email": email,
            "name": name if isinstance(name, str) else "",
            "role": role,
            "grafana_admin": admin,
            "claims": claims,
        }

    def _role(self, claims: dict[str, Any]) -> tuple[str, bool]:
        if not self.role_path:
            return "", False
        try:
            role = jmespath.search(self.role_path, claims)
        except jmespath.exceptions.JMESPathError:
            return "", False
        if not isinstance(role, str) or not role:
            return "", False
        return ("Admin", True) if role == "GrafanaAdmin" else (role, False)

    def verify(self, token: str) -> dict[str, Any]:
        token = token.replace("=", "")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise GrafanaRefusal(f"failed to verify JWT: {exc}") from exc
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise GrafanaRefusal("failed to verify JWT: unexpected signature algorithm")
        kid = header.get("kid", "")
        keys = [k for k in self.key_set().get("keys", []) if k.get("kid", "") == kid]
        if not keys:
            raise GrafanaRefusal("failed to verify JWT: no keys found")
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    jwt.PyJWK(key).key,
                    algorithms=[header["alg"]],
                    options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                             "verify_aud": False, "verify_iss": False},
                )  # fmt: skip
                break
            except jwt.PyJWTError:
                continue
        if claims is None:
            raise GrafanaRefusal("failed to verify JWT: signature")
        self._validate(claims)
        return claims

    def _validate(self, claims: dict[str, Any]) -> None:
        for key in ("iss", "sub"):
            if key in claims and not isinstance(claims[key], str):
                raise GrafanaRefusal(f"{key!r} claim has invalid type, string expected")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if aud is not None and not (isinstance(aud, str) or isinstance(aud, list)):
            raise GrafanaRefusal("'aud' claim has invalid type, array or string expected")
        for key in ("exp", "nbf", "iat"):
            value = claims.get(key)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not number:
                raise GrafanaRefusal(f"{key!r} claim has invalid type, number expected")
        now = self.clock()
        if claims.get("exp") is not None and now - LEEWAY_S > claims["exp"]:
            raise GrafanaRefusal("failed to verify JWT: token is expired (exp)")
        if claims.get("nbf") is not None and now + LEEWAY_S < claims["nbf"]:
            raise GrafanaRefusal("failed to verify JWT: token not valid yet (nbf)")
        if claims.get("iat") is not None and now + LEEWAY_S < claims["iat"]:
            raise GrafanaRefusal("failed to verify JWT: token issued in the future (iat)")
        expect = self.expect
        if "iss" in expect and claims.get("iss") != expect["iss"]:
            raise GrafanaRefusal("failed to verify JWT: invalid issuer claim (iss)")
        if "sub" in expect and claims.get("sub") != expect["sub"]:
            raise GrafanaRefusal("failed to verify JWT: invalid subject claim (sub)")
        if "aud" in expect:
            wanted = [expect["aud"]] if isinstance(expect["aud"], str) else expect["aud"]
            # go-jose v4 Expected.AnyAudience: one expected audience in the token suffices.
            if not any(a in auds for a in wanted):
                raise GrafanaRefusal("failed to verify JWT: invalid audience claim (aud)")
        for key, value in expect.items():
            if key in ("iss", "sub", "aud"):
                continue
            if key not in claims:
                raise GrafanaRefusal(f"{key!r} claim is missing")
            if claims[key] != value:
                raise GrafanaRefusal(f"{key!r} claim mismatch")
