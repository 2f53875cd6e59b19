"""Server certificates end to end: the generated fallback, every configured form, SNI
(exact, wildcard, default), reload without restart, and ``gatehouse check``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from support import wait_until
from support.gatehouse import GatehouseProcess, clean_env, config_text

from .clients import curl, https_get, peer_certificate
from .pki import Authority

Start = Callable[..., GatehouseProcess]


def _routes(*hosts: str) -> list[dict[str, Any]]:
    return [
        {
            "from": f"https://{h}",
            "response": {"status": 200, "body": f"hello {h}"},
            "allow_public_unauthenticated_access": True,
        }
        for h in hosts
    ]


def _dns_names(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)


def test_no_certificate_serves_a_generated_one_with_a_warning(start_gatehouse: Start) -> None:
    gh = start_gatehouse(
        {"insecure_server": False, "routes": _routes("a.example.test", "b.example.test")}
    )
    for host in ("a.example.test", "b.example.test"):
        cert = peer_certificate(gh.port, host)
        assert host in _dns_names(cert)
        assert cert.issuer == cert.subject  # self-signed
    # The same certificate for every name, and for clients without SNI.
    assert peer_certificate(gh.port, None) == peer_certificate(gh.port, "a.example.test")
    warnings = [r for r in gh.logs() if "self-signed" in str(r.get("message"))]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    # curl -k (an independent client) gets the route's response, with HSTS over HTTPS.
    out = curl(gh.port, "a.example.test", "/", "-k", "-i")
    assert out.returncode == 0, out.stderr
    assert b"hello a.example.test" in out.stdout
    assert b"strict-transport-security: max-age=31536000" in out.stdout.lower()


def test_every_configured_form_chosen_by_sni(start_gatehouse: Start, tmp_path: Path) -> None:
    ca = Authority()
    cafile = str(ca.write(tmp_path))
    by_file = ca.issue("file.example.test")
    inline = ca.issue("inline.example.test")
    listed = ca.issue("*.wild.example.test")
    listed_b64 = ca.issue("b64.example.test")
    cert_path, key_path = by_file.write(tmp_path, "file")
    lcert, lkey = listed.write(tmp_path, "listed")
    b64_cert, b64_key = inline.b64()
    gh = start_gatehouse(
        {
            "insecure_server": False,
            "certificate_file": str(cert_path),
            "certificate_key_file": str(key_path),
            "certificate": b64_cert,
            "certificate_key": b64_key,
            "certificates": [
                {"cert": str(lcert), "key": str(lkey)},
                {"cert": listed_b64.cert_pem.decode(), "key": listed_b64.key_pem.decode()},
            ],
            "routes": _routes(
                "file.example.test", "inline.example.test", "app.wild.example.test",
                "b64.example.test",
            ),
        }
    )
    for host, issued in (
        ("file.example.test", by_file),
        ("inline.example.test", inline),
        ("app.wild.example.test", listed),
        ("b64.example.test", listed_b64),
    ):
        reply = https_get(gh.port, host, cafile=cafile)  # verified against the test CA
        assert reply.status == 200 and reply.body == f"hello {host}".encode()
        assert peer_certificate(gh.port, host).serial_number == issued.serial
    # A wildcard covers one label only; unknown names and no SNI get the first certificate.
    assert peer_certificate(gh.port, "a.b.wild.example.test").serial_number == by_file.serial
    assert peer_certificate(gh.port, "unknown.test").serial_number == by_file.serial
    assert peer_certificate(gh.port, None).serial_number == by_file.serial
    assert not any("self-signed" in str(r.get("message")) for r in gh.logs())


def test_certificates_are_reloaded_with_the_config(start_gatehouse: Start, tmp_path: Path) -> None:
    ca = Authority()
    old = ca.issue("app.example.test")
    new = ca.issue("app.example.test", "new.example.test")
    old_cert, old_key = old.write(tmp_path, "old")
    new_cert, new_key = new.write(tmp_path, "new")
    config: dict[str, Any] = {
        "insecure_server": False,
        "certificate_file": str(old_cert),
        "certificate_key_file": str(old_key),
        "routes": _routes("app.example.test"),
    }
    gh = start_gatehouse(config)
    assert peer_certificate(gh.port, "app.example.test").serial_number == old.serial
    gh.write_config(
        {**config, "certificate_file": str(new_cert), "certificate_key_file": str(new_key)}
    )
    wait_until(
        lambda: peer_certificate(gh.port, "app.example.test").serial_number == new.serial,
        10,
        what="the new certificate",
    )
    # A reload whose certificate does not load keeps the running one.
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    gh.write_config({**config, "certificate_file": str(bad), "certificate_key_file": str(new_key)})
    gh.wait_log(lambda r: r.get("message", "").startswith("config reload failed"), 10)
    assert peer_certificate(gh.port, "app.example.test").serial_number == new.serial


def test_check_reports_a_certificate_that_does_not_load(tmp_path: Path) -> None:
    ca = Authority()
    cert, _ = ca.issue("app.example.test").write(tmp_path, "a")
    _, other_key = ca.issue("app.example.test").write(tmp_path, "b")
    path = tmp_path / "g.yaml"
    path.write_text(
        config_text(
            {
                "insecure_server": False,
                "data_dir": str(tmp_path / "data"),
                "certificate_file": str(cert),
                "certificate_key_file": str(other_key),
                "routes": _routes("app.example.test"),
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "gatehouse", "check", "-c", str(path)],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )
    assert out.returncode == 1
    assert "certificate_file: certificate and key do not load" in out.stdout + out.stderr
    # No certificate at all is fine: one is generated.
    path.write_text(
        config_text({"insecure_server": False, "data_dir": str(tmp_path / "data"), "routes": []})
    )
    out = subprocess.run(
        [sys.executable, "-m", "gatehouse", "check", "-c", str(path)],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
