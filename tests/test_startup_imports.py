"""Start-up loads only what the config uses: checking or building a public config does
not import sign-in (authenticate, httpx, the built-in IdP) or the console, serving one does
not import httpx or Jinja2 (until a page is rendered), and a config that signs in still
gets them where they are used (check and build both work)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from support.gatehouse import GatehouseProcess, clean_env
from support.upstream import Upstream

_PROBE = textwrap.dedent(
    """\
    import sys
    from gatehouse.cli import main
    status = main(["check", "-c", sys.argv[1]])
    lazy = ("gatehouse.authenticate", "gatehouse.idp.provider", "gatehouse.console", "httpx")
    print(status, *[name for name in lazy if name in sys.modules])
    """
)


def _check(config: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()


def test_checking_a_public_config_imports_no_sign_in(tmp_path: Path) -> None:
    config = tmp_path / "public.yaml"
    config.write_text(
        f"insecure_server: true\ndata_dir: {tmp_path}\nroutes:\n"
        "  - from: http://app.localhost\n    to: http://127.0.0.1:9\n"
        "    allow_public_unauthenticated_access: true\n"
    )
    assert _check(config) == ["0"]


def test_a_config_that_signs_in_checks_with_sign_in_and_console(tmp_path: Path) -> None:
    secret = base64.b64encode(os.urandom(32)).decode()
    config = tmp_path / "signed.yaml"
    config.write_text(
        f"insecure_server: true\ndata_dir: {tmp_path}\nshared_secret: {secret}\n"
        f"cookie_secret: {secret}\nauthenticate_service_url: http://authenticate.localhost\n"
        "idp_provider: builtin\nidp_users:\n  - username: alice\n"
        "    password_hash: '$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'\n"
        "    email: alice@example.com\n"
        "console_url: http://console.localhost\n"
        "console_policy:\n  - allow: {or: [{email: {is: alice@example.com}}]}\n"
        "routes:\n  - from: http://app.localhost\n    to: http://127.0.0.1:9\n"
        "    allow_any_authenticated_user: true\n"
    )
    status, *loaded = _check(config)
    assert status == "0"
    assert {"gatehouse.authenticate", "gatehouse.idp.provider", "gatehouse.console"} <= set(loaded)


def test_serving_without_autocert_imports_no_acme_client() -> None:
    """The ACME client library (acme, josepy) loads only when autocert is on: the TLS
    service and the HTTP redirect listener (which answers HTTP-01 from files) do without."""
    probe = (
        "import sys, gatehouse.serve, gatehouse.tls.service, gatehouse.tls.redirect\n"
        "print(*[m for m in ('acme', 'josepy', 'gatehouse.tls.acme') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def _imported(gh: GatehouseProcess, names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` the process imported (``-X importtime`` lines on stderr)."""
    lines = [r["raw"] for r in gh.logs() if "raw" in r and "import time:" in str(r["raw"])]
    assert lines, "no -X importtime output"
    modules = {line.rpartition("|")[2].strip() for line in lines}
    return set(names) & modules


def test_serving_a_public_config_imports_neither_httpx_nor_jinja2(
    tmp_path: Path, upstream: Upstream
) -> None:
    """A public route proxied, and a 404 for an unknown host answered, without the IdP
    client library or the template engine; the first HTML page (an error page) loads
    Jinja2 then, and renders."""
    config = {
        "routes": [
            {
                "from": "http://app.localhost",
                "to": upstream.url,
                "allow_public_unauthenticated_access": True,
            },
            {
                "from": "http://down.localhost",
                "to": "http://127.0.0.1:9",
                "allow_public_unauthenticated_access": True,
            },
        ]
    }
    lazy = ("httpx", "jinja2")
    with GatehouseProcess(config, tmp_path, python_args=["-X", "importtime"]) as gh:
        base = f"http://127.0.0.1:{gh.port}"
        answer = httpx.get(f"{base}/", headers={"Host": "app.localhost"})
        assert answer.status_code == 200 and answer.text == "hello from upstream"
        assert httpx.get(f"{base}/", headers={"Host": "nowhere.localhost"}).status_code == 404
        assert _imported(gh, lazy) == set()
        page = httpx.get(f"{base}/", headers={"Host": "down.localhost", "Accept": "text/html"})
        assert page.status_code == 502 and "<html" in page.text.lower()
        assert _imported(gh, lazy) == {"jinja2"}
