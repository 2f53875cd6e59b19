"""Assertions verified by JWT libraries we did not write, keys fetched over HTTP.

PyJWT (``PyJWKClient``), jwcrypto, joserfc, and npm's ``jose`` under Node.js (installed
into a temporary directory; skipped with the reason when Node/npm or the registry is not
reachable). Also the rotation rules as those libraries see them.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import KeySet as JoseKeySet
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jwt as jwc_jwt

from gatehouse.identity.assertion import AssertionMinter, AssertionSpec
from gatehouse.identity.keys import KeySet, load_keyset
from gatehouse.identity.wellknown import WellKnownEndpoints
from gatehouse.sessions.model import Session

from .conftest import b64, options
from .httpserve import EndpointServer

Serve = Callable[[WellKnownEndpoints], EndpointServer]
HOST = "app.example.com"

NODE_VERIFY = r"""
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
const [url, token, issuer, audience] = process.argv.slice(2);
try {
  const JWKS = createRemoteJWKSet(new URL(url));
  const { payload, protectedHeader } = await jwtVerify(token, JWKS, {
    issuer, audience, algorithms: ['ES256', 'RS256'],
  });
  console.log(JSON.stringify({ ok: true, payload, protectedHeader }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, code: e.code, header: decodeProtectedHeader(token) }));
}
"""


@pytest.fixture(scope="session")
def node_jose(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("Node.js/npm not installed: cannot check with npm's jose")
    d = tmp_path_factory.mktemp("node_jose")
    (d / "package.json").write_text('{"name":"t","private":true,"type":"module"}')
    try:
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", "jose@6"],
            cwd=d,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm install jose timed out (registry unreachable?)")
    if proc.returncode != 0:
        pytest.skip(
            f"npm install jose failed (registry unreachable?): {proc.stderr.strip()[-300:]}"
        )
    (d / "verify.mjs").write_text(NODE_VERIFY)
    return d


def node_verify(d: Path, url: str, token: str, issuer: str, audience: str) -> dict[str, Any]:
    out = subprocess.run(
        ["node", "verify.mjs", url, token, issuer, audience],
        cwd=d,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


@pytest.fixture(params=["ec", "rsa"])
def any_keyset(request: pytest.FixtureRequest, ec_pem: str, rsa_pem: str) -> KeySet:
    pem = ec_pem if request.param == "ec" else rsa_pem
    return load_keyset(options(f"signing_key: {b64(pem)}\n"))


def test_pyjwt_pyjwkclient(any_keyset: KeySet, session: Session, serve: Serve) -> None:
    server = serve(WellKnownEndpoints(any_keyset))
    token = AssertionMinter(any_keyset).mint(session, HOST).jwt
    client = pyjwt.PyJWKClient(server.jwks_url, cache_keys=False)
    signing_key = client.get_signing_key_from_jwt(token)
    assert signing_key.key_id == any_keyset.signer().kid
    claims = pyjwt.decode(
        token,
        signing_key.key,
        algorithms=["ES256", "RS256"],
        audience=HOST,
        issuer=HOST,
        options={"require": ["exp", "iat", "sub", "iss", "aud"]},
    )
    assert claims["sub"] == "user-123" and claims["groups"] == ["eng", "admins"]


def test_pyjwt_uri_issuer(keyset: KeySet, session: Session, serve: Serve) -> None:
    server = serve(WellKnownEndpoints(keyset))
    token = AssertionMinter(keyset).mint(session, HOST, AssertionSpec.build("uri")).jwt
    key = pyjwt.PyJWKClient(server.jwks_url).get_signing_key_from_jwt(token).key
    claims = pyjwt.decode(
        token, key, algorithms=["ES256"], audience=HOST, issuer=f"https://{HOST}/"
    )
    assert claims["iss"] == f"https://{HOST}/"


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url) as r:
        return r.read().decode()


def test_jwcrypto(any_keyset: KeySet, session: Session, serve: Serve) -> None:
    server = serve(WellKnownEndpoints(any_keyset))
    keys = jwc_jwk.JWKSet.from_json(_fetch(server.jwks_url))
    token = AssertionMinter(any_keyset).mint(session, HOST).jwt
    t = jwc_jwt.JWT(
        jwt=token,
        key=keys,
        algs=["ES256", "RS256"],
        check_claims={"iss": HOST, "aud": HOST, "exp": None, "iat": None},
    )
    assert json.loads(t.claims)["email"] == "ada@example.com"
    # jwcrypto computes the RFC 7638 thumbprint itself: it must equal our kid.
    (k,) = keys["keys"]
    kid = k.get("kid")
    assert kid == any_keyset.signer().kid
    assert base64.urlsafe_b64decode(k.thumbprint() + "=").hex() == kid


def test_joserfc(any_keyset: KeySet, session: Session, serve: Serve) -> None:
    server = serve(WellKnownEndpoints(any_keyset))
    keys = JoseKeySet.import_key_set(json.loads(_fetch(server.jwks_url)))
    token = AssertionMinter(any_keyset).mint(session, HOST).jwt
    decoded = joserfc_jwt.decode(token, keys, algorithms=["ES256", "RS256"])
    reg = joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": HOST},
        aud={"essential": True, "value": HOST},
        sub={"essential": True},
    )
    reg.validate(decoded.claims)
    assert decoded.header["kid"] == any_keyset.signer().kid


def test_node_jose(node_jose: Path, any_keyset: KeySet, session: Session, serve: Serve) -> None:
    server = serve(WellKnownEndpoints(any_keyset))
    token = AssertionMinter(any_keyset).mint(session, HOST).jwt
    res = node_verify(node_jose, server.jwks_url, token, HOST, HOST)
    assert res["ok"], res
    assert res["payload"]["sub"] == "user-123"
    assert res["protectedHeader"] == {
        "alg": any_keyset.signer().alg,
        "kid": any_keyset.signer().kid,
        "typ": "JWT",
    }


def test_node_jose_rejects_wrong_audience(
    node_jose: Path, keyset: KeySet, session: Session, serve: Serve
) -> None:
    server = serve(WellKnownEndpoints(keyset))
    token = AssertionMinter(keyset).mint(session, HOST).jwt
    res = node_verify(node_jose, server.jwks_url, token, HOST, "other.example.com")
    assert res == {"ok": False, "code": "ERR_JWT_CLAIM_VALIDATION_FAILED", "header": res["header"]}


# -- rotation as outside verifiers see it -----------------------------------------------------


def test_rotation_two_published_first_signs_second_verifies(
    ec_pem: str, ec_pem2: str, session: Session, serve: Serve
) -> None:
    both = load_keyset(options(f"signing_key: {b64(ec_pem + ec_pem2)}\n"))
    server = serve(WellKnownEndpoints(both))
    client = pyjwt.PyJWKClient(server.jwks_url, cache_keys=False, cache_jwk_set=False)
    assert [k.key_id for k in client.get_signing_keys()] == [k.kid for k in both.keys]

    token1 = AssertionMinter(both).mint(session, HOST).jwt
    assert pyjwt.get_unverified_header(token1)["kid"] == both.keys[0].kid

    # A replica already rotated: the second key signs (order swapped). Still verifies.
    swapped = load_keyset(options(f"signing_key: {b64(ec_pem2 + ec_pem)}\n"))
    token2 = AssertionMinter(swapped).mint(session, HOST).jwt
    for token in (token1, token2):
        key = client.get_signing_key_from_jwt(token).key
        assert pyjwt.decode(token, key, algorithms=["ES256"], audience=HOST)["sub"] == "user-123"


def test_rotation_removed_key_fails(
    ec_pem: str, ec_pem2: str, session: Session, serve: Serve
) -> None:
    old_only = load_keyset(options(f"signing_key: {b64(ec_pem)}\n"))
    old_token = AssertionMinter(old_only).mint(session, HOST).jwt
    new_only = load_keyset(options(f"signing_key: {b64(ec_pem2)}\n"))
    server = serve(WellKnownEndpoints(new_only))
    client = pyjwt.PyJWKClient(server.jwks_url, cache_keys=False, cache_jwk_set=False)
    with pytest.raises(pyjwt.PyJWKClientError, match="Unable to find a signing key"):
        client.get_signing_key_from_jwt(old_token)


def test_rotation_schedule_with_sign_from(
    ec_pem: str, ec_pem2: str, session: Session, serve: Serve
) -> None:
    import time

    now = time.time()
    ks = load_keyset(
        options(
            f"signing_key: {b64(ec_pem)}\n"
            f"signing_keys:\n  - key: {b64(ec_pem2)}\n    sign_from: '{_iso(now - 1)}'\n"
        )
    )
    server = serve(WellKnownEndpoints(ks))
    token = AssertionMinter(ks).mint(session, HOST).jwt
    kid = pyjwt.get_unverified_header(token)["kid"]
    assert kid == ks.keys[1].kid  # the scheduled key's time has come
    key = pyjwt.PyJWKClient(server.jwks_url).get_signing_key_from_jwt(token).key
    assert pyjwt.decode(token, key, algorithms=["ES256"], audience=HOST)["sid"] == "sess-1"
