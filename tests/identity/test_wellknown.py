"""The JWKS and discovery endpoints: document shape, caching headers, ETag and 304."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable

from gatehouse.http.messages import Headers, Request, Response
from gatehouse.identity.keys import KeySet, load_keyset
from gatehouse.identity.wellknown import WellKnownEndpoints

from .conftest import b64, options
from .httpserve import EndpointServer


def _request(
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    scheme: str = "https",
    host: str = "app.example.com",
    port: int | None = None,
) -> Request:
    return Request(
        method, scheme, host, port, path, "", Headers((headers or {}).items()), "127.0.0.1"
    )


def _run(coro: object) -> Response:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_jwks_document(keyset: KeySet) -> None:
    resp = _run(WellKnownEndpoints(keyset).jwks(_request("/.well-known/pomerium/jwks.json")))
    assert resp.status == 200
    h = dict(resp.headers)
    assert h["Content-Type"] == "application/json"
    assert h["Cache-Control"] == "max-age=60"
    assert h["Access-Control-Allow-Origin"] == "*"
    assert h["ETag"].startswith('"') and not h["ETag"].startswith("W/")
    doc = json.loads(resp.body)
    (key,) = doc["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    assert key["kid"] == keyset.signer().kid


def test_p256_coordinates_always_32_bytes() -> None:
    # Find keys whose x or y has a leading zero byte: they must still be 32 bytes (43 chars).
    from cryptography.hazmat.primitives.asymmetric import ec

    from gatehouse.identity.keys import make_key

    found = 0
    for _ in range(2000):
        k = ec.generate_private_key(ec.SECP256R1())
        nums = k.public_key().public_numbers()
        if nums.x.bit_length() <= 248 or nums.y.bit_length() <= 248:
            jwk = make_key(k, "t").jwk
            for c in ("x", "y"):
                assert len(jwk[c]) == 43 and "=" not in jwk[c]
                assert len(base64.urlsafe_b64decode(jwk[c] + "=")) == 32
            found += 1
            if found >= 2:
                break
    assert found >= 1


def test_rsa_jwk_members(rsa_pem: str) -> None:
    ks = load_keyset(options(f"signing_key: {b64(rsa_pem)}\n"))
    (key,) = ks.jwks()["keys"]
    assert set(key) == {"kty", "n", "e", "kid", "alg", "use"}
    assert key["e"] == "AQAB"
    assert len(base64.urlsafe_b64decode(key["n"] + "==")) == 256


def test_etag_and_304(keyset: KeySet) -> None:
    ep = WellKnownEndpoints(keyset)
    etag = ep.etag
    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        resp = _run(ep.jwks(_request("/x", headers={"If-None-Match": inm})))
        assert resp.status == 304, inm
        assert resp.body == b""
        assert dict(resp.headers)["ETag"] == etag
        assert dict(resp.headers)["Cache-Control"] == "max-age=60"
    assert _run(ep.jwks(_request("/x", headers={"If-None-Match": '"other"'}))).status == 200


def test_etag_changes_with_keys(keyset: KeySet, ec_pem2: str) -> None:
    other = load_keyset(options(f"signing_key: {b64(ec_pem2)}\n"))
    assert WellKnownEndpoints(keyset).etag != WellKnownEndpoints(other).etag
    assert WellKnownEndpoints(keyset).etag == WellKnownEndpoints(keyset).etag


def test_methods(keyset: KeySet) -> None:
    ep = WellKnownEndpoints(keyset)
    assert _run(ep.jwks(_request("/x", "POST"))).status == 405
    pre = _run(ep.jwks(_request("/x", "OPTIONS")))
    assert pre.status == 204 and dict(pre.headers)["Access-Control-Allow-Origin"] == "*"


def test_discovery_document_matches_pomerium(keyset: KeySet) -> None:
    ep = WellKnownEndpoints(keyset, authenticate_url="https://authenticate.example.com/")
    resp = _run(ep.pomerium(_request("/.well-known/pomerium", host="route.example.com")))
    assert dict(resp.headers)["Access-Control-Allow-Origin"] == "*"
    # Pomerium internal/handlers/well_known_pomerium_test.go "links".
    assert json.loads(resp.body) == {
        "issuer": "https://route.example.com/",
        "authentication_callback_endpoint": "https://authenticate.example.com/oauth2/callback",
        "frontchannel_logout_uri": "https://route.example.com/.pomerium/sign_out",
        "jwks_uri": "https://route.example.com/.well-known/pomerium/jwks.json",
    }


def test_discovery_uses_request_origin_with_port(keyset: KeySet) -> None:
    ep = WellKnownEndpoints(keyset)
    req = _request("/.well-known/pomerium", scheme="http", host="localhost", port=8080)
    doc = json.loads(_run(ep.pomerium(req)).body)
    assert doc["issuer"] == "http://localhost:8080/"
    assert doc["authentication_callback_endpoint"] == "http://localhost:8080/oauth2/callback"
    assert doc["jwks_uri"] == "http://localhost:8080/.well-known/pomerium/jwks.json"


def test_over_http(keyset: KeySet, serve: Callable[[WellKnownEndpoints], EndpointServer]) -> None:
    server = serve(WellKnownEndpoints(keyset))
    with urllib.request.urlopen(server.jwks_url) as r:
        assert r.status == 200
        etag = r.headers["ETag"]
        assert json.loads(r.read()) == keyset.jwks()
    req = urllib.request.Request(server.jwks_url, headers={"If-None-Match": etag})
    try:
        urllib.request.urlopen(req)
        raise AssertionError("expected 304")
    except urllib.error.HTTPError as exc:
        assert exc.code == 304
        exc.close()
