""":class:`ClientTrust` without a server: chains, depth, EKU, SANs, CRLs, the cache."""

from __future__ import annotations

import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gatehouse.config.mtls import DownstreamMTLS
from gatehouse.tls.client_trust import ClientTrust, compile_san_rules, load_crls

from .pki import Authority, Issued


def der(*certs: Issued | Authority) -> list[bytes]:
    return [c.cert.public_bytes(serialization.Encoding.DER) for c in certs]


ROOT = Authority("root")
MID = Authority("mid", parent=ROOT)


def trust(**kw: object) -> ClientTrust:
    return ClientTrust([ROOT.cert], **kw)  # type: ignore[arg-type]


def test_valid_invalid_and_why() -> None:
    now = time.time()
    alice = ROOT.issue(client=True, common_name="alice")
    assert trust().check(der(alice), now) is None
    assert "no client certificate" in str(trust().check([], now))
    stranger = Authority("stranger").issue(client=True)
    assert "does not verify" in str(trust().check(der(stranger), now))
    expired = ROOT.issue(client=True, expired=True)
    assert trust().check(der(expired), now) is not None
    server_only = ROOT.issue("s.example", client=False)
    assert "key usage" in str(trust().check(der(server_only), now))
    assert "unreadable" in str(trust().check([b"garbage"], now))


def test_depth_counts_the_chain_above_the_leaf() -> None:
    now = time.time()
    deep = MID.issue(client=True, common_name="deep")
    assert "max_verify_depth 1" in str(trust().check(der(deep, MID), now))
    assert trust(max_depth=2).check(der(deep, MID), now) is None
    assert trust(max_depth=0).check(der(deep, MID), now) is None  # 0: no limit


def test_san_rules_fully_match_one_san() -> None:
    now = time.time()
    rules = compile_san_rules(
        DownstreamMTLS.model_validate(
            {"match_subject_alt_names": [{"email": r".*@example\.com"}, {"dns": "svc"}]}
        )
    )
    ok = ROOT.issue(client=True, emails=("a@example.com",))
    dns = ROOT.issue("svc", client=True)
    suffix = ROOT.issue(client=True, emails=("a@example.com.evil",))
    assert trust(san_rules=rules).check(der(ok), now) is None
    assert trust(san_rules=rules).check(der(dns), now) is None
    assert "Subject Alternative Name" in str(trust(san_rules=rules).check(der(suffix), now))


def test_crl_of_the_issuer_revokes_and_must_be_signed_by_it() -> None:
    now = time.time()
    good, bad = ROOT.issue(client=True), ROOT.issue(client=True)
    crls = load_crls(ROOT.crl(bad.serial), "crl")
    assert trust(crls=crls).check(der(good), now) is None
    assert "revoked" in str(trust(crls=crls).check(der(bad), now))
    forged = load_crls(ROOT.crl(good.serial, signer=Authority("forger")), "crl")
    assert "CRL signature" in str(trust(crls=forged).check(der(good), now))


def test_verdicts_expire_with_time() -> None:
    leaf = ROOT.issue(client=True)
    t = trust()
    now = time.time()
    assert t.check(der(leaf), now) is None
    # Far past the leaf's validity: the cached verdict is not reused.
    later = leaf.cert.not_valid_after_utc.timestamp() + 3600
    assert t.check(der(leaf), later) is not None
    assert isinstance(leaf.cert, x509.Certificate)
