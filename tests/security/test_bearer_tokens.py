"""Red team: forged IdP bearer tokens on ``bearer_token_format: idp_*`` routes.

On such a route ``Authorization: Bearer <token>`` *is* the session, so every token an
attacker can make must be refused before the policy, with a 403, one log line and nothing
forwarded: the tokens are minted by the hostile IdP (its real key, or none, or another),
which is exactly what an attacker who knows the IdP's public key can and cannot do. A
valid token still works afterwards (refusals neither grant nor push real tokens out).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import RSAKey

from support.gatehouse import GatehouseProcess
from support.loop import LoopThread
from support.upstream import Upstream

from .conftest import ALICE, sso_config
from .idp import CLIENT_ID, CLIENT_SECRET, HostileIdp, b64url, compact

ID_HOST = "idtoken.localhost"
AT_HOST = "accesstoken.localhost"
AUDIENCE = "api://orders"


class Bed:
    def __init__(self, gh: GatehouseProcess, idp: HostileIdp, app: Upstream) -> None:
        self.gh, self.idp, self.app = gh, idp, app

    def get(self, host: str, authorization: str) -> httpx.Response:
        # Sent as UTF-8 bytes: an attacker's header need not be ASCII.
        headers = [
            (b"Host", host.encode()),
            (b"Authorization", authorization.encode("utf-8")),
            (b"Accept", b"application/json"),
        ]
        return httpx.get(f"http://127.0.0.1:{self.gh.port}/data", headers=headers, timeout=10)


@pytest.fixture(scope="module")
def bed(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    idp = HostileIdp().start()
    app = Upstream(loop_thread, "app")
    common = {"to": app.url, "policy": [{"allow": ALICE}], "pass_identity_headers": True}
    routes = [
        {"from": f"http://{ID_HOST}", "bearer_token_format": "idp_identity_token", **common},
        {"from": f"http://{AT_HOST}", "bearer_token_format": "idp_access_token", **common},
    ]
    config = sso_config(idp, routes, idp_access_token_allowed_audiences=[AUDIENCE])
    gh = GatehouseProcess(config, tmp_path_factory.mktemp("bearer-redteam"))
    try:
        gh.start()
        yield Bed(gh, idp, app)
    finally:
        code = gh.stop()
        app.close()
        idp.stop()
        assert code == 0, gh.stderr_text()


def claims(idp: HostileIdp, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": idp.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 600, **idp.user}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def rs256(idp: HostileIdp, body: dict[str, Any], key: RSAKey | None = None) -> str:
    header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    return jwt.encode(header, body, key or idp.key, algorithms=["RS256"])


def hs256(body: dict[str, Any], secret: bytes) -> str:
    """HMAC-SHA256 by hand: JOSE libraries refuse a PEM public key as an HMAC secret,
    which is the point of the attack."""
    unsigned = compact({"alg": "HS256", "kid": "k1", "typ": "JWT"}, body).rsplit(".", 1)[0]
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url(mac)}"


def public_pem(idp: HostileIdp) -> bytes:
    return idp.key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


FORGERIES: dict[str, Any] = {
    "alg none": lambda idp: compact({"alg": "none", "typ": "JWT"}, claims(idp)),
    "alg None spelled": lambda idp: compact({"alg": "None", "kid": "k1"}, claims(idp)),
    "HS256 keyed with the IdP's public key": lambda idp: hs256(claims(idp), public_pem(idp)),
    "HS256 keyed with the client secret, not announced": lambda idp: hs256(
        claims(idp), CLIENT_SECRET.encode()
    ),
    "another RSA key under the IdP's kid": lambda idp: rs256(
        idp, claims(idp), RSAKey.generate_key(2048, {"kid": "k1"})
    ),
    "an unknown kid": lambda idp: jwt.encode(
        {"alg": "RS256", "kid": "nope"},
        claims(idp),
        RSAKey.generate_key(2048, {"kid": "nope"}),
        algorithms=["RS256"],
    ),
    "expired": lambda idp: rs256(idp, claims(idp, exp=int(time.time()) - 3600)),
    "another client's audience": lambda idp: rs256(idp, claims(idp, aud="someone-else")),
    "another issuer": lambda idp: rs256(idp, claims(idp, iss="https://evil.example")),
    "no subject": lambda idp: rs256(idp, claims(idp, sub=None)),
    "several audiences, no azp": lambda idp: rs256(idp, claims(idp, aud=[CLIENT_ID, "x"])),
    "claims tampered after signing": lambda idp: _tampered(idp),
    "not a JWS": lambda idp: "not-a-token",
    "two parts": lambda idp: "a.b",
    # Over the 16 KiB a token may have, under the 32 KiB header limit (beyond it: 431).
    "huge": lambda idp: "a" * 9_000 + "." + "b" * 9_000 + ".c",
    "bytes no token holds": lambda idp: "abc\u00e9.def.ghi",
}


def _tampered(idp: HostileIdp) -> str:
    header, _, signature = rs256(idp, claims(idp, email="bob@example.com")).split(".")
    _, body, _ = compact({}, claims(idp)).split(".")
    return f"{header}.{body}.{signature}"


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_id_token_is_403_and_never_forwarded(bed: Bed, name: str) -> None:
    bed.app.reset()
    token = FORGERIES[name](bed.idp)
    r = bed.get(ID_HOST, f"Bearer {token}")
    assert r.status_code == 403, (name, r.status_code, r.text[:200])
    assert bed.app.requests == []
    assert "Traceback" not in bed.gh.stderr_text()


def test_id_token_is_not_an_access_token(bed: Bed) -> None:
    # A genuine ID token (aud = the client) where access tokens for AUDIENCE are asked:
    # token confusion must not pass.
    bed.app.reset()
    assert bed.get(AT_HOST, f"Bearer {rs256(bed.idp, claims(bed.idp))}").status_code == 403
    hmac_at = hs256(claims(bed.idp, aud=AUDIENCE), CLIENT_SECRET.encode())
    assert bed.get(AT_HOST, f"Bearer {hmac_at}").status_code == 403
    assert bed.app.requests == []


def test_policy_decides_for_a_genuine_token(bed: Bed) -> None:
    bed.app.reset()
    bob = rs256(bed.idp, claims(bed.idp, sub="bob-sub", email="bob@example.com"))
    assert bed.get(ID_HOST, f"Bearer {bob}").status_code == 403
    assert bed.app.requests == []


def test_genuine_tokens_still_work_after_a_flood_of_forgeries(bed: Bed) -> None:
    for i in range(300):
        bed.get(ID_HOST, f"Bearer {rs256(bed.idp, claims(bed.idp, aud=f'x{i}'))}")
    bed.app.reset()
    good = rs256(bed.idp, claims(bed.idp))
    r = bed.get(ID_HOST, f"Bearer {good}")
    assert r.status_code == 200, r.text[:200]
    at = rs256(bed.idp, claims(bed.idp, aud=AUDIENCE))
    assert bed.get(AT_HOST, f"Bearer {at}").status_code == 200
    assert len(bed.app.requests) == 2
    for seen in bed.app.requests:
        assert seen.header("authorization") is None  # the credential stays behind
        assert seen.header("x-pomerium-jwt-assertion")
    # The forgeries' refusals are one log line each, never a traceback.
    assert "Traceback" not in bed.gh.stderr_text()
