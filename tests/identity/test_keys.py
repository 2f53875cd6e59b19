"""Signing keys: every source, bad keys, derivation as Pomerium does it, rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import signal
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gatehouse.errors import ConfigError
from gatehouse.identity.keys import (
    GENERATED_KEY_FILENAME,
    derive_p256_key,
    generate_pem,
    keygen_text,
    load_keyset,
    parse_pem_keys,
)
from support import wait_until
from support.gatehouse import GatehouseProcess, public

from .conftest import NOW, b64, options, pem_of

# Pomerium's own test vector (authenticate/handlers_test.go, internal/controlplane/http_test.go):
# this base64 signing key publishes kid 5b419ade... with these coordinates.
POMERIUM_SIGNING_KEY = (
    "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVFSUpCMFZkbko1VjEvbVlpYUlIWHhnd2Q0Yzd5"
    "YWRTeXMxb3Y0bzA1b0F3ekdvQW9HQ0NxR1NNNDkKQXdFSG9VUURRZ0FFVUc1eENQMEpUVDFINklvbDhqS3VUSVBW"
    "TE0wNENnVzlQbEV5cE5SbVdsb29LRVhSOUhUMwpPYnp6aktZaWN6YjArMUt3VjJmTVRFMTh1dy82MXJVQ0JBPT0K"
    "LS0tLS1FTkQgRUMgUFJJVkFURSBLRVktLS0tLQo="
)
POMERIUM_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "UG5xCP0JTT1H6Iol8jKuTIPVLM04CgW9PlEypNRmWlo",
    "y": "KChF0fR09zm884ymInM29PtSsFdnzExNfLsP-ta1AgQ",
    "kid": "5b419ade1895fec2d2def6cd33b1b9a018df60db231dc5ecb85cbed6d942813c",
    "alg": "ES256",
    "use": "sig",
}


def test_pomerium_vector_base64_signing_key() -> None:
    ks = load_keyset(options(f"signing_key: {POMERIUM_SIGNING_KEY}\n"))
    assert ks.jwks() == {"keys": [POMERIUM_JWK]}
    assert ks.signer(NOW).alg == "ES256"


def test_raw_pem_signing_key(ec_pem: str) -> None:
    indented = "\n".join("  " + line for line in ec_pem.splitlines())
    ks = load_keyset(options(f"signing_key: |\n{indented}\n"))
    assert ks.signer(NOW).private_key is not None
    assert len(ks.keys) == 1


def test_signing_key_file(tmp_path: Path, ec_pem: str) -> None:
    path = tmp_path / "key.pem"
    path.write_text(ec_pem)
    ks = load_keyset(options(f"signing_key_file: {path}\n"))
    assert ks.signer(NOW).source == "signing_key_file (PEM block 1, PRIVATE KEY)"


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_keyset(options(f"signing_key_file: {tmp_path / 'nope.pem'}\n"))


def test_rsa_key_signs_rs256(rsa_pem: str) -> None:
    ks = load_keyset(options(f"signing_key: {b64(rsa_pem)}\n"))
    key = ks.signer(NOW)
    assert key.alg == "RS256"
    assert set(key.jwk) == {"kty", "n", "e", "kid", "alg", "use"}


def test_kid_is_rfc7638_thumbprint(ec_pem: str) -> None:
    key = parse_pem_keys(ec_pem.encode(), "k")[0]
    jwk = key.jwk
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    assert key.kid == hashlib.sha256(canonical.encode()).hexdigest()


def test_rfc7638_example_thumbprint() -> None:
    # RFC 7638 §3.1: the example RSA key's thumbprint.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
        "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
        "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    key = rsa.RSAPublicNumbers(
        65537, int.from_bytes(base64.urlsafe_b64decode(n + "=="), "big")
    ).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    from gatehouse.identity.keys import make_key

    got = make_key(serialization.load_pem_public_key(pem), "rfc")  # type: ignore[arg-type]
    expected = base64.urlsafe_b64decode("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs=")
    assert got.kid == expected.hex()


def test_multi_key_pem_first_signs_all_published(ec_pem: str, ec_pem2: str, rsa_pem: str) -> None:
    bundle = ec_pem + ec_pem2 + rsa_pem
    ks = load_keyset(options(f"signing_key: {b64(bundle)}\n"))
    first = parse_pem_keys(ec_pem.encode(), "x")[0]
    assert ks.signer(NOW).kid == first.kid
    assert ks.jwks()["keys"][0]["kid"] == first.kid
    assert len(ks.jwks()["keys"]) == 3
    assert {k["alg"] for k in ks.jwks()["keys"]} == {"ES256", "RS256"}


def test_public_key_after_first_is_published_only(ec_pem: str) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pub_pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    ks = load_keyset(options(f"signing_key: {b64(ec_pem + pub_pem)}\n"))
    assert len(ks.keys) == 2
    assert ks.keys[1].private_key is None


def test_public_key_first_is_refused() -> None:
    pub = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ConfigError, match="first key must be a private key"):
        load_keyset(options(f"signing_key: {b64(pub)}\n"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "curve secp384r1; only P-256"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "curve secp256k1; only P-256"),
        (
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
            "1024 bits; at least 2048",
        ),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "unsupported key type"),
    ],
)
def test_unsupported_keys_are_config_errors(make: object, message: str) -> None:
    key = make()  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message):
        load_keyset(options(f"signing_key: {b64(pem_of(key))}\n"))


def test_garbage_key_is_config_error() -> None:
    with pytest.raises(ConfigError, match="no PEM key found"):
        load_keyset(options("signing_key: bm90IGEga2V5\n"))
    bad = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ConfigError, match="cannot read key"):
        load_keyset(options(f"signing_key: {b64(bad)}\n"))


def test_encrypted_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    with pytest.raises(ConfigError, match="encrypted"):
        load_keyset(options(f"signing_key: {b64(pem)}\n"))


# -- derivation from the shared secret ------------------------------------------------------


def _rfc5869_hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    """Independent HKDF (RFC 5869) with stdlib hmac, to check the derivation."""
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()  # Go: nil salt = zeros
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def test_derivation_matches_pomerium_algorithm() -> None:
    secret_b64 = "JDNjY2ITDlARvNaQXjc2Djk+GA6xeCy4KiozmZfdbTs="
    secret = base64.b64decode(secret_b64)
    # Go: hkdf.New(sha256.New, secret, nil, "derived-jwt-signing-key") read by
    # keygen.ECDSALegacy(P256): 40 bytes, k = int mod (N-1) + 1.
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    expected_d = (
        int.from_bytes(_rfc5869_hkdf_sha256(secret, b"derived-jwt-signing-key", 40), "big")
        % (n - 1)
        + 1
    )
    assert derive_p256_key(secret).private_numbers().private_value == expected_d

    ks1 = load_keyset(options(f"shared_secret: {secret_b64}\n"))
    ks2 = load_keyset(options("", SHARED_SECRET=secret_b64))
    assert ks1.jwks() == ks2.jwks()
    assert ks1.signer(NOW).source == "derived from shared_secret"


def test_derivation_from_secret_file(tmp_path: Path) -> None:
    secret = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "s").write_text(secret + "\n")
    a = load_keyset(options(f"shared_secret_file: {tmp_path / 's'}\n"))
    b = load_keyset(options(f"shared_secret: {secret}\n"))
    assert a.jwks() == b.jwks()


def test_different_secrets_different_keys() -> None:
    a = load_keyset(options(f"shared_secret: {base64.b64encode(b'a' * 32).decode()}\n"))
    b = load_keyset(options(f"shared_secret: {base64.b64encode(b'b' * 32).decode()}\n"))
    assert a.signer(NOW).kid != b.signer(NOW).kid


def test_signing_key_wins_over_shared_secret(ec_pem: str) -> None:
    ks = load_keyset(
        options(
            f"signing_key: {b64(ec_pem)}\nshared_secret: {base64.b64encode(b'x' * 32).decode()}\n"
        )
    )
    assert ks.signer(NOW).source.startswith("signing_key")


# -- generated key --------------------------------------------------------------------------


def test_generated_key_persisted_0600(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "data"
    with caplog.at_level(logging.WARNING, logger="gatehouse.identity"):
        a = load_keyset(options(f"data_dir: {data_dir}\n"))
    assert "no signing_key or shared_secret configured" in caplog.text
    path = data_dir / GENERATED_KEY_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    b = load_keyset(options(f"data_dir: {data_dir}\n"))
    assert a.jwks() == b.jwks()
    assert not [p for p in data_dir.iterdir() if p.name != GENERATED_KEY_FILENAME]


def test_generated_key_tilde_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    load_keyset(options("data_dir: ~/gh\n"))
    assert (tmp_path / "gh" / GENERATED_KEY_FILENAME).exists()


def test_unwritable_data_dir_is_config_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    if os.access(ro, os.W_OK):
        pytest.skip("running as a user who can write anywhere (root)")
    with pytest.raises(ConfigError, match="cannot store a generated signing key"):
        load_keyset(options(f"data_dir: {ro / 'sub'}\n"))


# -- keygen -------------------------------------------------------------------------------


def test_generate_pem_and_keygen_text() -> None:
    pem = generate_pem()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert parse_pem_keys(pem.encode(), "g")[0].alg == "ES256"
    text = keygen_text()
    b64_line = next(line for line in text.splitlines() if line.startswith("signing_key: "))
    ks = load_keyset(options(b64_line + "\n"))
    assert ks.signer(NOW).kid in text


# -- rotation schedule ----------------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_rotation_newest_passed_sign_from_signs(ec_pem: str, ec_pem2: str, rsa_pem: str) -> None:
    yaml_body = (
        f"signing_key: {b64(ec_pem)}\n"
        "signing_keys:\n"
        f"  - key: {b64(ec_pem2)}\n"
        f"    sign_from: {_iso(NOW + 100)}\n"
        f"  - key: {b64(rsa_pem)}\n"
        f"    sign_from: '{_iso(NOW + 200)}'\n"
    )
    ks = load_keyset(options(yaml_body))
    kids = [parse_pem_keys(p.encode(), "x")[0].kid for p in (ec_pem, ec_pem2, rsa_pem)]
    assert [k["kid"] for k in ks.jwks()["keys"]] == kids  # all published from the start
    assert ks.signer(NOW).kid == kids[0]
    assert ks.signer(NOW + 99.9).kid == kids[0]
    assert ks.signer(NOW + 100).kid == kids[1]
    assert ks.signer(NOW + 150).kid == kids[1]
    assert ks.signer(NOW + 10_000).kid == kids[2]
    assert ks.signer(NOW + 50).kid == kids[0]  # the cached answer is bounded both ways


def test_rotation_without_primary_and_future_only(ec_pem: str, ec_pem2: str) -> None:
    yaml_body = (
        f"signing_keys:\n  - key: {b64(ec_pem)}\n  - file: /dev/null\n    sign_from: {_iso(NOW)}\n"
    )
    with pytest.raises(ConfigError, match="no PEM key found"):
        load_keyset(options(yaml_body))
    future = f"signing_keys:\n  - key: {b64(ec_pem2)}\n    sign_from: {_iso(NOW + 60)}\n"
    ks = load_keyset(options(future))
    with pytest.raises(ConfigError, match="no signing key may sign yet"):
        ks.signer(NOW)
    assert ks.signer(NOW + 60).private_key is not None


def test_signing_keys_entry_validation(ec_pem: str) -> None:
    with pytest.raises(ConfigError):
        options(f"signing_keys:\n  - key: {b64(ec_pem)}\n    file: /x\n")
    with pytest.raises(ConfigError):
        options(f"signing_keys:\n  - key: {b64(ec_pem)}\n    sign_from: 2026-01-01T00:00:00\n")


def test_generated_key_warning_is_logged_once_per_process_tree(
    start_gatehouse: Callable[..., GatehouseProcess],
) -> None:
    """Two workers and a reload still tell the operator once, not once per process."""
    config = {
        "workers": 2,
        "routes": public([{"from": "http://a.localhost", "to": "http://127.0.0.1:9"}]),
    }
    gh = start_gatehouse(config)
    wait_until(lambda: len([r for r in gh.logs() if r.get("message") == "listening"]) == 2)
    config["routes"] = public([{"from": "http://b.localhost", "to": "http://127.0.0.1:9"}])
    gh.write_config(config)
    os.kill(gh.pid, signal.SIGHUP)
    wait_until(lambda: len([r for r in gh.logs() if r.get("message") == "config reloaded"]) == 2)
    warnings = [r for r in gh.logs() if "no signing_key" in str(r.get("message"))]
    assert len(warnings) == 1, warnings
