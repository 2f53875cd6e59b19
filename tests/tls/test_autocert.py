"""``autocert`` end to end against pebble: issue (one order for two workers), HTTP-01 on
``http_redirect_addr`` and its redirect to HTTPS, restart and reuse, renewal without a
restart, and a CA that is down (old certificate served, retries with back-off, logged)."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gatehouse.config.options import Options
from gatehouse.tls.acme import ca_directory
from support import wait_until
from support.gatehouse import GatehouseProcess

from .clients import curl, peer_certificate
from .pebble import Pebble, free_port
from .pki import Authority

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
