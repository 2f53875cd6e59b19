"""``autocert`` end to end against pebble: issue (one order for two workers), HTTP-01 on
``http_redirect_addr`` and its redirect to HTTPS, TLS-ALPN-01 on the TLS listener when
there is no ``http_redirect_addr`` (only acme-tls/1 hellos get the challenge certificate;
fuzzed hellos close cleanly), restart and reuse, renewal without a restart, and a CA that
is down (old certificate served, retries with back-off, logged)."""

from __future__ import annotations

import datetime
import random
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gatehouse.config.options import Options
from gatehouse.tls.acme import ca_directory
from gatehouse.tls.acme_tlsalpn import challenge_certificate
from support import wait_until
from support.gatehouse import GatehouseProcess

from .clients import curl, peer_certificate, s_client
from .pebble import Pebble, free_port
from .pki import Authority
from .test_hardening import _closed_after, _mutations

Start = Callable[..., GatehouseProcess]
HOST = "app.example.test"


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    p = Pebble(tmp_path / "pebble").start()
    yield p
    p.stop()


def _config(pebble: Pebble, autocert_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "insecure_server": False,
        "autocert": True,
        "autocert_ca": pebble.directory_url,
        "autocert_trusted_ca": str(pebble.ca_file),
        "autocert_email": "ops@example.test",
        "autocert_dir": str(autocert_dir),
        "http_redirect_addr": f"127.0.0.1:{pebble.http_port}",
        "routes": [
            {
                "from": f"https://{HOST}",
                "response": {"status": 200, "body": "hello"},
                "allow_public_unauthenticated_access": True,
            }
        ],
        **extra,
    }


def _issued_by_pebble(port: int, pebble: Pebble) -> x509.Certificate | None:
    cert = peer_certificate(port, HOST)
    return cert if cert.issuer == pebble.intermediate().subject else None


def _obtained(gh: GatehouseProcess) -> list[dict[str, Any]]:
    return [r for r in gh.logs() if r.get("message") == "autocert: certificate obtained"]


def _seed(autocert_dir: Path, directory_url: str, not_before: datetime.datetime,
          not_after: datetime.datetime) -> int:
    """Store a certificate for HOST as autocert would have; returns its serial."""
    ca = Authority("old CA")
    issued = ca.issue(HOST, valid_for=not_after - datetime.datetime.now(datetime.UTC))
    # Re-sign with the requested notBefore (Authority backdates by minutes only).
    builder = (
        x509.CertificateBuilder()
        .subject_name(issued.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(issued.key.public_key())
        .serial_number(issued.cert.serial_number)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False
        )
    )
    from cryptography.hazmat.primitives import hashes

    cert = builder.sign(ca.key, hashes.SHA256())
    options = Options.model_validate(
        {"autocert_dir": str(autocert_dir), "autocert_ca": directory_url}
    )
    certs = ca_directory(options) / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    (certs / f"{HOST}.pem").write_bytes(
        issued.key_pem + cert.public_bytes(serialization.Encoding.PEM)
    )
    return cert.serial_number


def test_issue_once_for_two_workers_then_reuse_after_restart(
    pebble: Pebble, start_gatehouse: Start, tmp_path: Path
) -> None:
    autocert_dir = tmp_path / "autocert"
    gh = start_gatehouse(_config(pebble, autocert_dir, workers=2))
    cert = wait_until(lambda: _issued_by_pebble(gh.port, pebble), 60, 0.2, what="a certificate")
    assert HOST in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    # Verified by an independent client against pebble's root.
    bundle = tmp_path / "pebble-roots.pem"
    bundle.write_bytes(pebble.root().public_bytes(serialization.Encoding.PEM))
    out = curl(gh.port, HOST, "/", "--cacert", str(bundle))
    assert out.returncode == 0 and out.stdout == b"hello", out.stderr
    # Both workers serve it (several new connections land on both), from one order.
    for _ in range(6):
        assert peer_certificate(gh.port, HOST).serial_number == cert.serial_number
    assert len(_obtained(gh)) == 1
    # Plain HTTP on http_redirect_addr is redirected to HTTPS.
    with socket.create_connection(("127.0.0.1", pebble.http_port), 5) as s:
        s.sendall(f"GET /a/b?c=d HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 301")
    assert f"Location: https://{HOST}:{gh.port}/a/b?c=d\r\n" in reply
    assert gh.stop() == 0

    again = start_gatehouse(_config(pebble, autocert_dir))
    # The stored certificate is served from the first handshake, with no new order.
    assert peer_certificate(again.port, HOST).serial_number == cert.serial_number
    assert _obtained(again) == []


ACME_IDENTIFIER = "1.3.6.1.5.5.7.1.31"


def _tls_alpn_only(pebble: Pebble, autocert_dir: Path, **extra: Any) -> dict[str, Any]:
    """Autocert on the port pebble validates TLS-ALPN-01 on, and no HTTP-01 listener."""
    config = _config(pebble, autocert_dir, address=f"127.0.0.1:{pebble.tls_port}", **extra)
    del config["http_redirect_addr"]
    return config


def _leaf(out: bytes) -> x509.Certificate:
    start = out.index(b"-----BEGIN CERTIFICATE-----")
    end = out.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
    return x509.load_pem_x509_certificate(out[start:end])


def _is_challenge(cert: x509.Certificate) -> bool:
    return any(e.oid.dotted_string == ACME_IDENTIFIER for e in cert.extensions)


def _acme_hello(server_name: str) -> bytes:
    """A real ClientHello record offering exactly ALPN acme-tls/1 (as a CA's validator)."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["acme-tls/1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.fixture
def alpn_pebble(tmp_path: Path) -> Iterator[Pebble]:
    """Pebble validating TLS-ALPN-01 on a port gatehouse will listen on."""
    p = Pebble(tmp_path / "pebble", tls_port=free_port()).start()
    yield p
    p.stop()


def test_issued_by_tls_alpn_01_alone_and_only_acme_hellos_see_the_challenge(
    alpn_pebble: Pebble, start_gatehouse: Start, tmp_path: Path
) -> None:
    pebble = alpn_pebble
    autocert_dir = tmp_path / "autocert"
    gh = start_gatehouse(_tls_alpn_only(pebble, autocert_dir, workers=2))
    cert = wait_until(lambda: _issued_by_pebble(gh.port, pebble), 60, 0.2, what="a certificate")
    obtained = _obtained(gh)
    assert [r["challenge"] for r in obtained] == ["tls-alpn-01"]
    # Pebble really connected: a worker logged its validation handshake.
    assert any(
        r.get("message") == "autocert: TLS-ALPN-01 validation handshake" and r["host"] == HOST
        for r in gh.logs()
    )
    bundle = tmp_path / "pebble-roots.pem"
    bundle.write_bytes(pebble.root().public_bytes(serialization.Encoding.PEM))
    out = curl(gh.port, HOST, "/", "--cacert", str(bundle))
    assert out.returncode == 0 and out.stdout == b"hello", out.stderr
    # While a challenge is pending (written by whichever worker orders; either worker may
    # accept the CA's connection), only a hello offering exactly acme-tls/1 gets it.
    pending = ca_directory(
        Options.model_validate(
            {"autocert_dir": str(autocert_dir), "autocert_ca": pebble.directory_url}
        )
    ) / "tls-alpn" / f"{HOST}.pem"
    pending.write_bytes(challenge_certificate(HOST, "token.thumbprint"))
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    acme = ("-servername", HOST, "-alpn", "acme-tls/1", "-ign_eof")
    for _ in range(4):  # new connections land on both workers
        out = s_client(gh.port, *acme, stdin=request)
        assert _is_challenge(_leaf(out.stdout)), out.stdout[-2000:]
        assert b"ALPN protocol: acme-tls/1" in out.stdout
        assert b"HTTP/1.1" not in out.stdout  # closed after the handshake: nothing served
    for args in ((), ("-alpn", "http/1.1"), ("-alpn", "acme-tls/1,http/1.1")):
        out = s_client(gh.port, "-servername", HOST, "-ign_eof", *args, stdin=request)
        leaf = _leaf(out.stdout)
        assert leaf.serial_number == cert.serial_number, args
        assert b"HTTP/1.1 200" in out.stdout, args
    out = s_client(gh.port, "-alpn", "acme-tls/1", stdin=request)  # no server name
    assert not _is_challenge(_leaf(out.stdout))
    pending.unlink()  # the order is over: acme-tls/1 hellos get the ordinary certificate
    out = s_client(gh.port, *acme, stdin=request)
    assert _leaf(out.stdout).serial_number == cert.serial_number
    assert b"ALPN protocol" not in out.stdout or b"No ALPN negotiated" in out.stdout


def test_fuzzed_hellos_close_cleanly_with_tls_alpn_01_on(
    alpn_pebble: Pebble, start_gatehouse: Start, tmp_path: Path
) -> None:
    gh = start_gatehouse(
        _tls_alpn_only(alpn_pebble, tmp_path / "autocert", timeout_tls_handshake="1.5s")
    )
    rng = random.Random(8737)  # fixed seed: a failure reproduces
    cases = list(_mutations(_acme_hello(HOST), rng))
    stuck = [c for c in cases if not _closed_after(gh.port, c)]
    assert not stuck, f"{len(stuck)} connections not closed, first {stuck[0][:64]!r}"
    # Still serving; nothing alarming logged (pebble may well have validated meanwhile).
    assert peer_certificate(gh.port, HOST) is not None
    assert "Traceback" not in gh.stderr_text(), gh.stderr_text()[-4000:]
    bad = [r for r in gh.logs() if r.get("level") in ("error", "critical")]
    assert not bad, bad[:5]


def test_renewed_before_expiry_without_restart(
    pebble: Pebble, start_gatehouse: Start, tmp_path: Path
) -> None:
    autocert_dir = tmp_path / "autocert"
    now = datetime.datetime.now(datetime.UTC)
    # Renewal is due when a third of the lifetime is left: 6 s from now.
    old = _seed(autocert_dir, pebble.directory_url, now - datetime.timedelta(seconds=12),
                now + datetime.timedelta(seconds=15))
    # Pomerium's file form of the ACME server's CA (the other tests give the path inline).
    config = _config(pebble, autocert_dir, autocert_trusted_ca_file=str(pebble.ca_file))
    del config["autocert_trusted_ca"]
    gh = start_gatehouse(config)
    assert peer_certificate(gh.port, HOST).serial_number == old
    renewed = wait_until(lambda: _issued_by_pebble(gh.port, pebble), 60, 0.2, what="renewal")
    assert renewed.serial_number != old
    assert len(_obtained(gh)) == 1


def test_ca_down_serves_the_old_certificate_and_retries_with_backoff(
    start_gatehouse: Start, tmp_path: Path
) -> None:
    autocert_dir = tmp_path / "autocert"
    pebble = Pebble(tmp_path / "pebble", port=free_port())  # not started yet: the CA is down
    now = datetime.datetime.now(datetime.UTC)
    # Valid for another hour, but due for renewal (a third of 3 h left).
    old = _seed(autocert_dir, pebble.directory_url, now - datetime.timedelta(hours=2),
                now + datetime.timedelta(hours=1))
    gh = start_gatehouse(_config(pebble, autocert_dir))
    try:
        def failures() -> list[dict[str, Any]]:
            failed = "obtaining a certificate failed"
            return [r for r in gh.logs() if failed in str(r.get("message"))]

        wait_until(lambda: len(failures()) >= 2, 30, 0.2, what="two failed attempts")
        first, second = failures()[:2]
        assert first["level"] == "error" and first["host"] == HOST
        assert second["retry_in_s"] == 2 * first["retry_in_s"]  # back-off doubles
        assert peer_certificate(gh.port, HOST).serial_number == old  # still served
        pebble.start()  # the CA comes back: the next retry obtains a certificate
        wait_until(lambda: _issued_by_pebble(gh.port, pebble), 60, 0.2, what="recovery")
    finally:
        pebble.stop()
