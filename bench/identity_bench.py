"""Cost per request of the identity assertion: cached hit vs. signing, and the SDK's verify.

    python bench/identity_bench.py [--n 20000]

Prints microseconds per call (best of 5 runs). Runs briefly: the machines are shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import timeit
from types import MappingProxyType

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gatehouse.identity.assertion import AssertionMinter, AssertionSpec
from gatehouse.identity.keys import build_keyset, make_key
from gatehouse.sessions.model import Session
from gatehouse.verify.jwks import PublicKey
from gatehouse.verify.verifier import Verifier

SESSION = Session(
    id="3f9c1a2b-session",
    user_id="00u1abcd",
    email="ada@example.com",
    name="Ada Lovelace",
    groups=("eng", "admins", "oncall"),
    claims=MappingProxyType({"department": "R&D"}),
)
HOST = "app.example.com"


def best_us(fn: object, n: int) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    n = ap.parse_args().n
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    es, rs = build_keyset([make_key(ec_key, "ec")]), build_keyset([make_key(rsa_key, "rsa")])
    spec = AssertionSpec.build(
        "hostOnly", {"X-Pomerium-Claim-Email": "email", "X-Pomerium-Claim-Groups": "groups"}
    )

    m = AssertionMinter(es)
    m.mint(SESSION, HOST, spec)
    other_obj = dataclasses.replace(SESSION)  # same record, loaded again: fingerprint path
    rows = [
        ("cached hit (same Session object)", best_us(lambda: m.mint(SESSION, HOST, spec), n)),
        (
            "cached hit (equal record, new object)",
            best_us(lambda: m.mint(other_obj, HOST, spec), n),
        ),
        (
            "sign ES256 (minter.sign, claims + JWS)",
            best_us(lambda: m.sign(SESSION, HOST, spec), n // 20),
        ),
    ]
    mr = AssertionMinter(rs)
    rows.append(("sign RS256-2048", best_us(lambda: mr.sign(SESSION, HOST, spec), n // 100)))
    claims = pyjwt.decode(m.sign(SESSION, HOST, spec).jwt, options={"verify_signature": False})
    rows.append(
        (
            "PyJWT encode ES256 (same claims)",
            best_us(
                lambda: pyjwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "k"}),
                n // 20,
            ),
        )
    )

    token = m.sign(SESSION, HOST, spec).jwt
    v = Verifier("http://unused.invalid/jwks.json", issuer=HOST)
    kid = es.signer().kid
    v.keys._keys = {kid: PublicKey(kid, "ES256", ec_key.public_key())}  # keys already cached
    v.keys._expires = float("inf")
    rows.append(("SDK verify ES256 (keys cached)", best_us(lambda: v.verify(token), n // 20)))

    width = max(len(r[0]) for r in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.2f} us")


if __name__ == "__main__":
    main()
