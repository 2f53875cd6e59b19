"""TLS-ALPN-01 (RFC 8737) without a network: the challenge certificate, the challenge type
in ``acme``, and which handshakes on the listener's real context get the challenge
certificate (client and server ``ssl`` objects joined by memory BIOs).

End to end against pebble: ``test_autocert.py``.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest
from acme import messages
from acme.errors import Error as AcmeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwk import JWKEC

from gatehouse.config.options import Options
from gatehouse.tls.acme import AutocertManager, _pick_challenge
from gatehouse.tls.acme_tlsalpn import (
    ACME_IDENTIFIER_OID,
    TLSALPN01,
    AlpnResponder,
    challenge_certificate,
    challenge_path,
)
from gatehouse.tls.certificates import CertificatePem, SniStore, load_certificate
from gatehouse.tls.downstream import compile_downstream

from .pki import Authority

HOST = "app.example.test"
OTHER = "other.example.test"
KEY_AUTHZ = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.thumbprint-of-the-account-key"


def _handshake(
    front: ssl.SSLContext,
    server_name: str | None,
    alpn: list[str] | None,
    client_cert: tuple[Path, Path] | None = None,
) -> tuple[x509.Certificate, str | None]:
    """One TLS 1.3 handshake against ``front``; the leaf served and the protocol agreed."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        client.set_alpn_protocols(alpn)
    if client_cert is not None:
        client.load_cert_chain(*client_cert)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    s = front.wrap_bio(s_in, s_out, server_side=True)
    done = False
    for _ in range(6):
        try:
            c.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            pass
        s_in.write(c_out.read())
        try:
            s.do_handshake()
        except ssl.SSLWantReadError:
            pass
        c_in.write(s_out.read())
        if done:
            break
    assert done, "handshake did not complete"
    der = c.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der), s.selected_alpn_protocol()


@pytest.fixture
def served(tmp_path: Path) -> tuple[SniStore, ssl.SSLContext, AlpnResponder, x509.Certificate]:
    """A listener context with an ordinary certificate for HOST and OTHER and a responder."""
    issued = Authority().issue(HOST, OTHER)
    store = SniStore()
    store.put("config", "0", load_certificate(
        CertificatePem(issued.cert_pem, issued.key_pem, "test")
    ))
    responder = AlpnResponder(tmp_path, [HOST, OTHER])
    store.set_validation(responder)
    front = store.listener_context()
    assert store.validating
    return store, front, responder, issued.cert


def _pend(ca_dir: Path, host: str, key_authorization: str = KEY_AUTHZ) -> None:
    """A pending challenge for ``host``, as the ordering worker leaves it on disk."""
    challenge_path(ca_dir, host).write_bytes(challenge_certificate(host, key_authorization))


def _is_challenge(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    except x509.ExtensionNotFound:
        return False
    return True


def test_challenge_certificate_follows_rfc_8737() -> None:
    pem = challenge_certificate(HOST, KEY_AUTHZ)
    cert = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE-----") :])
    ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert ext.critical
    # DER OCTET STRING (tag 4, length 32) of SHA-256 of the key authorization.
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(KEY_AUTHZ.encode()).digest()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.DNSName(HOST)]  # the name validated and nothing else
    # The key that comes with it signs for it.
    key = serialization.load_pem_private_key(pem[: pem.index(b"-----BEGIN CERT")], None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_the_ca_challenge_parses_and_is_answered_with_an_empty_object() -> None:
    body = messages.ChallengeBody.from_json(
        {
            "type": "tls-alpn-01",
            "url": "https://ca.test/chall/1",
            "status": "pending",
            "token": "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
        }
    )
    assert isinstance(body.chall, TLSALPN01)
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    authz = body.chall.key_authorization(key)
    assert authz.startswith("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.")
    # RFC 8555 §7.5.1: the client posts an empty object to the challenge URL.
    assert body.chall.response(key).to_partial_json() == {}


def test_only_a_hello_offering_exactly_acme_tls_1_gets_the_challenge_certificate(
    served: tuple[SniStore, ssl.SSLContext, AlpnResponder, x509.Certificate], tmp_path: Path
) -> None:
    _, front, _, ordinary = served
    _pend(tmp_path, HOST)
    cert, alpn = _handshake(front, HOST, ["acme-tls/1"])
    assert _is_challenge(cert) and alpn == "acme-tls/1"
    # Ordinary clients of the same name, while the challenge is pending.
    for offer in (None, ["http/1.1"], ["acme-tls/1", "http/1.1"], ["h2", "acme-tls/1"],
                  ["acme-tls/10"], ["acme-tls/"]):
        cert, alpn = _handshake(front, HOST, offer)
        assert cert == ordinary, offer
        assert alpn != "acme-tls/1", offer
    # Another name without a pending challenge, and no server name at all.
    assert _handshake(front, OTHER, ["acme-tls/1"]) == (ordinary, None)
    assert _handshake(front, None, ["acme-tls/1"]) == (ordinary, None)
    # Case and a trailing dot in SNI do not matter (RFC 6066 §3: not case sensitive).
    assert _is_challenge(_handshake(front, HOST.upper(), ["acme-tls/1"])[0])


def test_a_name_autocert_does_not_manage_never_gets_a_challenge_file_served(
    served: tuple[SniStore, ssl.SSLContext, AlpnResponder, x509.Certificate], tmp_path: Path
) -> None:
    _, front, _, ordinary = served
    stray = "stray.example.test"
    _pend(tmp_path, stray)
    cert, _ = _handshake(front, stray, ["acme-tls/1"])
    assert cert == ordinary


def test_a_challenge_written_or_withdrawn_by_another_worker_is_seen_at_once(
    served: tuple[SniStore, ssl.SSLContext, AlpnResponder, x509.Certificate], tmp_path: Path
) -> None:
    _, front, _, ordinary = served
    assert _handshake(front, HOST, ["acme-tls/1"])[0] == ordinary  # nothing pending yet
    _pend(tmp_path, HOST, "first.authz")
    first = _handshake(front, HOST, ["acme-tls/1"])[0]
    digest = first.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID).value
    assert digest.value[2:] == hashlib.sha256(b"first.authz").digest()  # type: ignore[attr-defined]
    _pend(tmp_path, HOST, "second.authz")  # the next order's challenge
    second = _handshake(front, HOST, ["acme-tls/1"])[0]
    digest = second.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID).value
    assert digest.value[2:] == hashlib.sha256(b"second.authz").digest()  # type: ignore[attr-defined]
    challenge_path(tmp_path, HOST).unlink()  # the order ended
    assert _handshake(front, HOST, ["acme-tls/1"])[0] == ordinary


def test_a_broken_challenge_file_is_logged_and_the_ordinary_certificate_served(
    served: tuple[SniStore, ssl.SSLContext, AlpnResponder, x509.Certificate],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, front, _, ordinary = served
    challenge_path(tmp_path, HOST).write_bytes(b"-----BEGIN garbage")
    assert _handshake(front, HOST, ["acme-tls/1"])[0] == ordinary
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
        "autocert: TLS-ALPN-01 challenge certificate does not load"
    ]


def test_the_validation_handshake_asks_no_client_certificate_under_reject_connection(
    tmp_path: Path,
) -> None:
    ca = Authority("client CA")
    options = Options.model_validate(
        {"downstream_mtls": {"ca": ca.cert_pem.decode(), "enforcement": "reject_connection"}}
    )
    trust = compile_downstream(options)
    issued = Authority().issue(HOST)
    store = SniStore()
    store.put("config", "0", load_certificate(
        CertificatePem(issued.cert_pem, issued.key_pem, "test")
    ))
    store.set_client_rule(trust.mode, trust.handshake, trust.bundle_pem)
    store.set_validation(AlpnResponder(tmp_path, [HOST]))
    front = store.listener_context()
    _pend(tmp_path, HOST)
    cert, alpn = _handshake(front, HOST, ["acme-tls/1"])
    assert _is_challenge(cert) and alpn == "acme-tls/1"
    # Ordinary clients still need a valid certificate: TLS 1.3 reports the refusal on
    # the client's first read after the handshake.
    with pytest.raises(ssl.SSLError):
        _handshake_and_read(front, HOST)
    good = ca.issue("client", client=True).write(tmp_path, "client")
    assert _handshake(front, HOST, None, client_cert=good)[0] == issued.cert


def _handshake_and_read(front: ssl.SSLContext, server_name: str) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    s = front.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(6):
        for side in (c, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
    c.read(1)


def test_challenge_types_follow_the_configuration(tmp_path: Path) -> None:
    def kinds(**extra: object) -> list[list[str]]:
        options = Options.model_validate(
            {"autocert": True, "autocert_dir": str(tmp_path), **extra,
             "routes": [{"from": f"https://{HOST}", "to": "http://127.0.0.1:1"}]}
        )
        manager = AutocertManager(options, SniStore())
        return [manager._challenge_kinds(failures) for failures in (0, 1, 2)]

    # No http_redirect_addr: TLS-ALPN-01 only, on the TLS listener (as Pomerium).
    assert kinds() == [["tls-alpn-01"]] * 3
    # With it, HTTP-01 first, and the other type after each failure.
    assert kinds(http_redirect_addr="127.0.0.1:8080") == [
        ["http-01", "tls-alpn-01"],
        ["tls-alpn-01", "http-01"],
        ["http-01", "tls-alpn-01"],
    ]


def test_an_order_without_an_answerable_challenge_says_which_were_offered() -> None:
    offered = [
        messages.ChallengeBody.from_json(
            {"type": t, "url": f"https://ca.test/{t}", "status": "pending",
             "token": "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"}
        )
        for t in ("dns-01", "tls-alpn-01")
    ]
    assert _pick_challenge(offered, ["http-01", "tls-alpn-01"], HOST)[1] == "tls-alpn-01"
    offers = r"offers \['dns-01', 'tls-alpn-01'\].*answers \['http-01'\]"
    with pytest.raises(AcmeError, match=offers):
        _pick_challenge(offered, ["http-01"], HOST)
