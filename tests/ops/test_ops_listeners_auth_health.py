"""``metrics_basic_auth`` and ``health_check_addr`` through real gatehouse processes,
checked with curl (a client we did not write)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from support.gatehouse import GatehouseProcess

AUTH = base64.b64encode(b"prom:s3cret:with-colon").decode()


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def port_of(gh: GatehouseProcess, message: str) -> int:
    line = gh.wait_log(lambda r: r.get("message") == message, timeout=10)
    return int(str(line["address"]).rpartition(":")[2])


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_need_the_basic_auth_credentials(tmp_path: Path, workers: int) -> None:
    config = {
        "workers": workers,
        "metrics_address": "127.0.0.1:0",
        "metrics_basic_auth": AUTH,
        "routes": [
            {
                "from": "http://a.test",
                "response": {"body": "x"},
                "allow_public_unauthenticated_access": True,
            }
        ],
    }
    with GatehouseProcess(config, tmp_path) as gh:
        url = f"http://127.0.0.1:{port_of(gh, 'metrics listening')}/metrics"
        status, headers, _ = curl(url)
        assert status == 401
        assert headers["www-authenticate"] == 'Basic realm="Restricted"'
        assert curl("-u", "prom:wrong", url)[0] == 401
        assert curl("-u", "other:s3cret:with-colon", url)[0] == 401
        assert curl("-H", "Authorization: Basic !!notbase64", url)[0] == 401
        # The password is everything after the first colon, as Pomerium splits it.
        status, _, body = curl("-u", "prom:s3cret:with-colon", url)
        assert status == 200 and "gatehouse_" in body
        assert "traceback" not in gh.stderr_text().lower()


def test_health_listener_follows_the_proxy(tmp_path: Path) -> None:
    config = {
        "health_check_addr": "127.0.0.1:0",
        "routes": [
            {
                "from": "http://a.test",
                "response": {"body": "x"},
                "allow_public_unauthenticated_access": True,
            }
        ],
    }
    with GatehouseProcess(config, tmp_path) as gh:
        base = f"http://127.0.0.1:{port_of(gh, 'health listening')}"
        for path in ("/healthz", "/readyz", "/startupz"):
            status, headers, body = curl(base + path)
            assert status == 200, (path, body)
            assert headers["content-type"] == "application/json"
            assert json.loads(body) == {"gatehouse.proxy": {"status": "RUNNING"}}
        status, _, body = curl(base + "/status")
        assert status == 200
        assert json.loads(body)["checks"] == ["gatehouse.proxy"]
        assert curl(base + "/nope")[0] == 404
        assert curl("-X", "POST", base + "/healthz")[0] == 405


def test_health_endpoints_when_the_proxy_does_not_answer() -> None:
    from gatehouse.observability.health_listener import Prober, app
    from support.upstream import closed_port

    serve = app(Prober("0.0.0.0", closed_port(), tls=False))
    for path, want in [("/healthz", 503), ("/readyz", 503), ("/startupz", 503), ("/status", 200)]:
        seen: list[str] = []
        environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
        body = b"".join(serve(environ, lambda s, h, seen=seen: seen.append(s)))
        assert seen[0].startswith(str(want)), (path, seen)
        entry = json.loads(body)
        entry = entry["statuses"] if path == "/status" else entry
        assert entry["gatehouse.proxy"]["status"] == "UNAVAILABLE"
        assert "does not answer" in entry["gatehouse.proxy"]["error"]


def test_health_addr_and_basic_auth_validated(tmp_path: Path) -> None:
    from gatehouse.config.loader import load_text
    from gatehouse.errors import ConfigError

    for text, message in [
        ("metrics_basic_auth: '%%%'\n", "must be a base64 encoded string"),
        (f"metrics_basic_auth: {base64.b64encode(b'nocolon').decode()}\n", "separated by a colon"),
        ("health_check_addr: localhost\n", "expected host:port"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_text("insecure_server: true\n" + text, "c.yaml", env={})
        assert message in info.value.problems[0], info.value.problems


def test_metrics_over_tls_with_client_certificates(tmp_path: Path) -> None:
    from tls.pki import Authority

    server_ca, client_ca = Authority("metrics CA"), Authority("scraper CA")
    cert, key = server_ca.issue("127.0.0.1").write(tmp_path, "metrics")
    scraper_cert, scraper_key = client_ca.issue("prometheus", client=True).write(tmp_path, "s")
    stranger = Authority("other CA").issue("intruder", client=True).write(tmp_path, "x")
    server_ca_file = server_ca.write(tmp_path, "server-ca")
    config = {
        "metrics_address": "127.0.0.1:0",
        "metrics_certificate": base64.b64encode(cert.read_bytes()).decode(),
        "metrics_certificate_key_file": str(key),
        "metrics_client_ca": base64.b64encode(client_ca.cert_pem).decode(),
        "metrics_basic_auth": AUTH,
        "routes": [
            {
                "from": "http://a.test",
                "response": {"body": "x"},
                "allow_public_unauthenticated_access": True,
            }
        ],
    }
    workdir = tmp_path / "gh"
    workdir.mkdir()
    with GatehouseProcess(config, workdir) as gh:
        url = f"https://127.0.0.1:{port_of(gh, 'metrics listening')}/metrics"
        tls = ["--cacert", str(server_ca_file)]
        mine = ["--cert", str(scraper_cert), "--key", str(scraper_key)]
        status, _, body = curl(*tls, *mine, "-u", "prom:s3cret:with-colon", url)
        assert status == 200 and "gatehouse_" in body
        assert curl(*tls, *mine, url)[0] == 401  # TLS does not replace the basic auth
        for who in ([], ["--cert", str(stranger[0]), "--key", str(stranger[1])]):
            failed = subprocess.run(
                ["curl", "-sS", "--max-time", "10", *tls, *who, url],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert failed.returncode != 0, failed.stdout  # handshake refused
        # Plain HTTP on the TLS port gets nothing useful either.
        plain = subprocess.run(
            ["curl", "-sS", "--max-time", "5", url.replace("https", "http")],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert "gatehouse_" not in plain.stdout
        assert "traceback" not in gh.stderr_text().lower()


def test_metrics_tls_problems_reported_before_start(tmp_path: Path) -> None:
    config = {
        "metrics_address": "127.0.0.1:0",
        "metrics_certificate": "base64-encoded-string",
        "metrics_certificate_key": "base64-encoded-string",
    }
    gh = GatehouseProcess(config, tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - the start fails; the log says why
        gh.start(timeout=10)
    gh.proc.wait(timeout=10)  # type: ignore[union-attr]
    assert gh.proc.returncode == 1  # type: ignore[union-attr]
    assert "metrics_certificate: not a readable file, a PEM, or base64 of a PEM" in gh.stderr_text()
    assert "traceback" not in gh.stderr_text().lower()
