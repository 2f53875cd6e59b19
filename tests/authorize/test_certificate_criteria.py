"""``client_certificate`` and ``invalid_client_certificate``: match forms, their syntax
errors, and the outcomes the policy and the 495 mapping rely on (Pomerium's reasons)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from gatehouse.authorize.client_cert import client_certificate
from gatehouse.authorize.criteria import CRITERIA
from gatehouse.authorize.criteria.certificate import denied_for_certificate
from gatehouse.authorize.input import PolicyInput
from gatehouse.authorize.policy import compile_policy_data
from gatehouse.authorize.problems import PolicySyntaxError
from tls.pki import Authority

CA = Authority()
ALICE = CA.issue(
    "alice.example", client=True, emails=("alice@example.com",), uris=("spiffe://corp/alice",)
)
BOB = CA.issue(client=True, common_name="bob")
ALICE_DER = ALICE.cert.public_bytes(serialization.Encoding.DER)
BOB_DER = BOB.cert.public_bytes(serialization.Encoding.DER)
FP = hashlib.sha256(ALICE_DER).hexdigest()
FP_LONG = ":".join(FP[i : i + 2] for i in range(0, 64, 2)).upper()
SPKI = base64.b64encode(
    hashlib.sha256(
        ALICE.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()
).decode()


def req(der: bytes | None, valid: bool = True) -> PolicyInput:
    cert = client_certificate(der) if der is not None else None
    return PolicyInput("GET", "/", client_certificate=cert, client_certificate_valid=valid)


@pytest.mark.parametrize(
    ("data", "der", "expected"),
    [
        ({"fingerprint": FP}, ALICE_DER, True),
        ({"fingerprint": FP_LONG}, ALICE_DER, True),
        ({"fingerprint": [FP, "0" * 64]}, ALICE_DER, True),
        ({"fingerprint": FP}, BOB_DER, False),
        ({"fingerprint": FP}, None, False),
        ({"spki_hash": SPKI}, ALICE_DER, True),
        ({"spki_hash": [SPKI]}, BOB_DER, False),
        ({"san_email": {"ends_with": "@example.com"}}, ALICE_DER, True),
        ({"san_email": "alice@example.com"}, BOB_DER, False),
        ({"san_dns": "alice.example"}, ALICE_DER, True),
        ({"san_uri": {"starts_with": "spiffe://corp/"}}, ALICE_DER, True),
        # Every condition must hold.
        ({"fingerprint": FP, "san_dns": "other.example"}, ALICE_DER, False),
    ],
)
def test_client_certificate(data: Any, der: bytes | None, expected: bool) -> None:
    value, reason = CRITERIA["client_certificate"](data, "", ("policy",))(req(der))
    assert value is expected
    assert reason == ("client-certificate-ok" if expected else "client-certificate-unauthorized")


@pytest.mark.parametrize(
    "data",
    [
        "abc",
        {},
        {"fingerprint": "AB:CD"},
        {"fingerprint": FP.upper()},  # short form is lower case (Pomerium's regex)
        {"fingerprint": 12},
        {"spki_hash": "not base64!"},
        {"spki_hash": base64.b64encode(b"short").decode()},
        {"serial": "1"},
    ],
)
def test_client_certificate_syntax_errors(data: Any) -> None:
    with pytest.raises(PolicySyntaxError):
        CRITERIA["client_certificate"](data, "", ("policy",))


@pytest.mark.parametrize(
    ("der", "valid", "expected"),
    [
        (ALICE_DER, True, (False, "valid-client-certificate")),
        (None, False, (True, "client-certificate-required")),
        (BOB_DER, False, (True, "invalid-client-certificate")),
        (None, True, (False, "valid-client-certificate")),  # no CA on the route
    ],
)
def test_invalid_client_certificate(der: bytes | None, valid: bool, expected: Any) -> None:
    assert CRITERIA["invalid_client_certificate"](True, "", ("p",))(req(der, valid)) == expected


def test_invalid_client_certificate_takes_only_true() -> None:
    with pytest.raises(PolicySyntaxError):
        CRITERIA["invalid_client_certificate"](False, "", ("p",))


def test_a_certificate_deny_is_told_apart_from_other_denies() -> None:
    policy = compile_policy_data(
        [
            {"allow": {"and": [{"accept": True}]}},
            {"deny": {"or": [{"invalid_client_certificate": True}, {"http_path": "/admin"}]}},
        ]
    )
    assert policy.evaluate(req(ALICE_DER)).allowed
    assert denied_for_certificate(policy.evaluate(req(None, valid=False)))
    assert denied_for_certificate(policy.evaluate(req(BOB_DER, valid=False)))
    admin = PolicyInput("GET", "/admin", client_certificate=client_certificate(ALICE_DER))
    decision = policy.evaluate(admin)
    assert not decision.allowed and not denied_for_certificate(decision)


def test_a_leaf_that_does_not_parse_matches_nothing() -> None:
    assert client_certificate(b"\x30\x03\x02\x01\x01") is None
