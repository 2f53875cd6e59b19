"""The Grafana example (``examples/grafana/``) is consistent with gatehouse, and works.

Two kinds of checks:

* static: the compose file parses, the gatehouse config validates and compiles with
  gatehouse's own loader, and every ``GF_AUTH_JWT_*`` setting agrees with what gatehouse
  sends (header name, JWKS URL, claims, issuer and audience, role mapping) and with the
  settings of Pomerium's "Single Sign-on with JWTs" guide;
* live: gatehouse runs the example config over TLS with the certificate the example's
  ``certs`` service makes (make_certs.py: a private CA), a user signs in through the
  built-in IdP, and an upstream in Grafana's place accepts or refuses each request by
  Grafana's own JWT rules (``grafana_rules.py``: the https-only JWKS URL, trust in
  ``GF_AUTH_JWT_TLS_CLIENT_CA`` alone, exact ``kid``, cache TTL, leeway, required
  claims, ``EXPECT_CLAIMS``, ``ROLE_ATTRIBUTE_PATH``, ``AUTO_SIGN_UP``, ``URL_LOGIN``),
  fetching gatehouse's JWKS from the URL Grafana is given, over TLS. Grafana itself is not
  run (no container engine in the test environment).
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jwt
import pytest
import yaml

from gatehouse.config import LoadedConfig, load_file
from gatehouse.config.durations import parse_duration
from gatehouse.constants import ASSERTION_HEADER, JWKS_PATH, SIGN_OUT_PATH
from gatehouse.identity import AssertionMinter, AssertionSpec, load_keyset
from gatehouse.idp.passwords import verify_password
from gatehouse.proxy.state import build_state
from gatehouse.sessions.model import Session
from support.browser import Browser, Hop
from support.gatehouse import GatehouseProcess
from support.grafana_rules import GrafanaJWT, GrafanaRefusal

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "grafana"
COMPOSE_FILE = EXAMPLE / "docker-compose.yaml"
CONFIG_FILE = EXAMPLE / "gatehouse.yaml"
DOCKERFILE = EXAMPLE / "Dockerfile"
README = EXAMPLE / "README.md"
MAKE_CERTS = EXAMPLE / "make_certs.py"

GATEHOUSE_SERVICE = "gatehouse"
GRAFANA_SERVICE = "grafana"
#: Grafana's HTTP port unless GF_SERVER_HTTP_PORT says otherwise.
GRAFANA_DEFAULT_PORT = 3000
#: Grafana's roles (JWT role_attribute_path must produce one of these).
GRAFANA_ROLES = {"None", "Viewer", "Editor", "Admin", "GrafanaAdmin"}


# -- loading ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def grafana_env(compose: dict[str, Any]) -> dict[str, str]:
    env = compose["services"][GRAFANA_SERVICE]["environment"]
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) for item in env)
    assert all(isinstance(v, str) for v in env.values()), "quote every value: YAML would retype it"
    return dict(env)


#: Where the example's files live inside the containers (docker-compose.yaml volumes).
CONTAINER_CERT_DIR = "/var/lib/gatehouse/certs"
CONTAINER_CA_DIR = "/var/lib/gatehouse-ca"


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    """``(cert_dir, ca_dir)`` made by the example's own make_certs.py, as the certs service."""
    cert_dir, ca_dir = tmp_path / "certs", tmp_path / "ca"
    proc = subprocess.run(
        [sys.executable, str(MAKE_CERTS), str(cert_dir), str(ca_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return cert_dir, ca_dir


def local_config_text(cert_dir: Path) -> str:
    """The example config with the container's certificate directory replaced by ``cert_dir``."""
    text = CONFIG_FILE.read_text()
    assert CONTAINER_CERT_DIR in text
    return text.replace(CONTAINER_CERT_DIR, str(cert_dir))


@pytest.fixture
def loaded(tmp_path: Path, certs: tuple[Path, Path]) -> LoadedConfig:
    # DATA_DIR overrides the container path: compiling generates a key there.
    local = tmp_path / "gatehouse.yaml"
    local.write_text(local_config_text(certs[0]))
    return load_file(local, env={"DATA_DIR": str(tmp_path / "data")})


def route_of(loaded: LoadedConfig) -> Any:
    routes = [r for r in loaded.options.all_routes if r.name == "grafana"]
    assert len(routes) == 1, "the example has one route named grafana"
    return routes[0]


def address_port(address: str) -> int:
    return int(address.rpartition(":")[2])


def grafana_role(expression: str, claims: dict[str, Any]) -> Any:
    """Evaluate a role_attribute_path the way Grafana does (JMESPath over the claims)."""
    jmespath = pytest.importorskip("jmespath")  # pure Python; boto3 and others bring it
    return jmespath.search(expression, claims)


def readme_users() -> dict[str, str]:
    """``username -> password`` from the README's table of demo users."""
    rows = re.findall(r"^\|\s*`([a-z]+)`\s*\|\s*`([^`]+)`\s*\|", README.read_text(), re.MULTILINE)
    return dict(rows)


# -- files and wiring -------------------------------------------------------------------------


def test_compose_services_build_and_publish_only_gatehouse(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {GATEHOUSE_SERVICE, GRAFANA_SERVICE}
    build = services[GATEHOUSE_SERVICE]["build"]
    context = (EXAMPLE / build["context"]).resolve()
    assert context == REPO, "the image installs gatehouse from the repository root"
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert services[GRAFANA_SERVICE]["image"].startswith("grafana/grafana")
    assert "ports" not in services[GRAFANA_SERVICE], (
        "Grafana must be reachable only through gatehouse"
    )
    assert "build" not in services[GRAFANA_SERVICE]


def test_compose_mounts_the_config_the_image_runs(compose: dict[str, Any]) -> None:
    gatehouse = compose["services"][GATEHOUSE_SERVICE]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in gatehouse["volumes"]}
    text = DOCKERFILE.read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    config_path = cmd[cmd.index("-c") + 1]
    assert (EXAMPLE / mounts[config_path]).resolve() == CONFIG_FILE
    assert f"COPY examples/grafana/gatehouse.yaml {config_path}" in text
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)


def test_the_image_build_stage_copies_every_file_the_build_reads() -> None:
    """The build stage's COPY lines and the .dockerignore let through every top-level file
    that ``pip install .`` reads (scripts/build_wheel.py ``TOP_FILES``): the build backend
    named in pyproject.toml and imported by setup.py included, or ``pip wheel`` fails."""
    spec = importlib.util.spec_from_file_location(
        "build_wheel", REPO / "scripts" / "build_wheel.py"
    )
    assert spec is not None and spec.loader is not None
    build_wheel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_wheel)
    needed = [name for name in build_wheel.TOP_FILES if (REPO / name).is_file()]
    assert "build_backend.py" in needed
    text = DOCKERFILE.read_text()
    build_stage = text[: text.index("\nFROM ", text.index("FROM "))]
    copied = {
        name
        for line in re.findall(r"^COPY (.+)$", build_stage, re.MULTILINE)
        for name in line.split()[:-1]
    }
    ignore = (EXAMPLE / "Dockerfile.dockerignore").read_text().splitlines()
    assert [n for n in needed if n not in copied] == [], "COPY them in the build stage"
    assert [n for n in needed if f"!{n}" not in ignore] == [], "un-ignore them"


def test_the_image_install_ships_every_data_file(tmp_path: Path) -> None:
    """The build stage's ``pip wheel`` of exactly what the Dockerfile copies succeeds, and
    the wheel holds every template and data file (pure Python here, to be quick; the
    compiled build reads the same files)."""
    src = REPO / "src" / "gatehouse"
    wanted = {
        str(f.relative_to(src.parent))
        for f in src.rglob("*")
        if f.is_file()
        and f.suffix not in (".py", ".pyc", ".so")  # .so: mypyc's build output, not data
        and "__pycache__" not in f.parts
    }
    text = DOCKERFILE.read_text()
    build_stage = text[: text.index("\nFROM ", text.index("FROM "))]
    tree = tmp_path / "tree"
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    for line in re.findall(r"^COPY (.+)$", build_stage, re.MULTILINE):
        *names, dest = line.split()
        for name in names:
            target = tree / Path(dest).relative_to("/tmp/gatehouse")
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, target, ignore=skip)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / name, target / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "GATEHOUSE_PURE_PYTHON": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("gatehouse-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = sorted(f for f in wanted if f not in names)
    assert not missing, f"not installed (add them to [tool.setuptools.package-data]): {missing}"


def test_gatehouse_config_validates_and_compiles(loaded: LoadedConfig) -> None:
    assert loaded.warnings == ()
    state = build_state(loaded)
    assert state.router.routes, "the grafana route compiled"
    assert JWKS_PATH in state.endpoints


def test_gatehouse_config_validates_with_the_cli(tmp_path: Path, certs: tuple[Path, Path]) -> None:
    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    local = tmp_path / "gatehouse.yaml"
    local.write_text(local_config_text(certs[0]))
    proc = subprocess.run(
        [sys.executable, "-m", "gatehouse", "check", "-c", str(local)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


def test_published_port_is_the_address_and_the_public_urls(
    compose: dict[str, Any], loaded: LoadedConfig, grafana_env: dict[str, str]
) -> None:
    options = loaded.options
    port = address_port(options.address)
    published = compose["services"][GATEHOUSE_SERVICE]["ports"]
    assert [p.rsplit(":", 1)[1] for p in published] == [str(port)]
    host_port = int(published[0].rsplit(":", 1)[0].rpartition(":")[2])
    # Browsers use the published port; every public URL must name it.
    assert urlsplit(options.authenticate_service_url or "").port == host_port
    root = urlsplit(grafana_env["GF_SERVER_ROOT_URL"])
    assert (root.hostname, root.port) == (route_of(loaded).from_host, host_port)


def test_route_points_at_grafana_with_identity_headers(
    compose: dict[str, Any], loaded: LoadedConfig, grafana_env: dict[str, str]
) -> None:
    route = route_of(loaded)
    assert route.to is not None and len(route.to) == 1
    upstream = urlsplit(route.to[0].url)
    grafana_port = int(grafana_env.get("GF_SERVER_HTTP_PORT", GRAFANA_DEFAULT_PORT))
    assert (upstream.scheme, upstream.hostname, upstream.port) == (
        "http",
        GRAFANA_SERVICE,
        grafana_port,
    )
    assert (
        route.pass_identity_headers
        if route.pass_identity_headers is not None
        else loaded.options.pass_identity_headers
    ) is True
    # Grafana's CSRF check compares Origin with the Host it receives.
    assert route.preserve_host_header is True


def test_header_name_is_the_assertion_header(grafana_env: dict[str, str]) -> None:
    assert grafana_env["GF_AUTH_JWT_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_JWT_HEADER_NAME"].lower().encode() == ASSERTION_HEADER


def test_jwk_set_url_reaches_gatehouse_over_the_compose_network(
    compose: dict[str, Any], loaded: LoadedConfig, grafana_env: dict[str, str]
) -> None:
    url = urlsplit(grafana_env["GF_AUTH_JWT_JWK_SET_URL"])
    assert url.path == JWKS_PATH
    assert url.hostname == GATEHOUSE_SERVICE and GATEHOUSE_SERVICE in compose["services"]
    # Inside the network the container port is used, whatever is published.
    assert url.port == address_port(loaded.options.address)
    # Grafana takes only https (outside development mode), and gatehouse serves TLS.
    assert url.scheme == "https" and not loaded.options.insecure_server
    assert "GF_DEFAULT_APP_MODE" not in grafana_env, "the example runs Grafana in production mode"
    assert grafana_env.get("GF_AUTH_JWT_TLS_SKIP_VERIFY_INSECURE", "false") == "false"
    assert grafana_env["GF_AUTH_JWT_URL_LOGIN"] == "false"


def test_the_certificate_names_the_service_and_grafana_trusts_its_ca(
    compose: dict[str, Any], grafana_env: dict[str, str], certs: tuple[Path, Path]
) -> None:
    services = compose["services"]
    # The certs service writes ca.pem into a volume that Grafana mounts, read-only, where
    # GF_AUTH_JWT_TLS_CLIENT_CA points; gatehouse reads cert and key from its data volume.
    entry = services["certs"]["entrypoint"]
    assert entry[:2] == ["python", "/etc/gatehouse/make_certs.py"]
    assert entry[2:] == [CONTAINER_CERT_DIR, CONTAINER_CA_DIR]
    assert "COPY examples/grafana/make_certs.py /etc/gatehouse/make_certs.py" in (
        DOCKERFILE.read_text()
    )
    ca_volume = next(
        v.split(":")[0] for v in services["certs"]["volumes"] if v.split(":")[1] == CONTAINER_CA_DIR
    )
    mount = next(v for v in services[GRAFANA_SERVICE]["volumes"] if v.startswith(ca_volume + ":"))
    _, inside, mode = mount.split(":")
    assert mode == "ro"
    assert grafana_env["GF_AUTH_JWT_TLS_CLIENT_CA"] == f"{inside}/ca.pem"
    data_volume = next(
        v.split(":")[0]
        for v in services[GATEHOUSE_SERVICE]["volumes"]
        if v.endswith(":/var/lib/gatehouse")
    )
    assert f"{data_volume}:/var/lib/gatehouse" in services["certs"]["volumes"]
    assert not any(v.startswith(data_volume + ":") for v in services[GRAFANA_SERVICE]["volumes"]), (
        "Grafana must not see gatehouse's keys and sessions"
    )
    assert services[GATEHOUSE_SERVICE]["depends_on"]["certs"] == {
        "condition": "service_completed_successfully"
    }
    # The certificate make_certs.py writes chains to that CA (checked by openssl, not us)
    # and names the service Grafana connects to.
    cert_dir, ca_dir = certs
    proc = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca_dir / "ca.pem"), str(cert_dir / "cert.pem")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert_dir / "cert.pem")],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert f"DNS:{GATEHOUSE_SERVICE}" in text and "DNS:grafana.localhost" in text
    assert not (ca_dir / "ca-key.pem").exists() and len(list(ca_dir.iterdir())) == 1


def test_pomerium_single_sign_on_guide_settings_verbatim(grafana_env: dict[str, str]) -> None:
    """The settings of Pomerium's "Single Sign-on with JWTs" guide, as the guide has them."""
    assert grafana_env["GF_AUTH_JWT_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_JWT_HEADER_NAME"] == "X-Pomerium-Jwt-Assertion"
    assert grafana_env["GF_AUTH_JWT_EMAIL_CLAIM"] == "email"
    assert grafana_env["GF_AUTH_JWT_USERNAME_CLAIM"] == "sub"
    assert grafana_env["GF_AUTH_JWT_CACHE_TTL"] == "60m"
    assert grafana_env["GF_AUTH_JWT_AUTO_SIGN_UP"] == "true"
    assert urlsplit(grafana_env["GF_AUTH_SIGNOUT_REDIRECT_URL"]).path == "/.pomerium/sign_out"
    assert parse_duration(grafana_env["GF_AUTH_JWT_CACHE_TTL"]) == 3600


def test_grafana_starts_with_these_settings_and_not_with_plain_http(
    grafana_env: dict[str, str], certs: tuple[Path, Path]
) -> None:
    env = {**grafana_env, "GF_AUTH_JWT_TLS_CLIENT_CA": str(certs[1] / "ca.pem")}
    GrafanaJWT(env)  # no refusal at start-up
    plain = {**env, "GF_AUTH_JWT_JWK_SET_URL": "http://gatehouse:8443" + JWKS_PATH}
    with pytest.raises(GrafanaRefusal, match=r"^jwt_set_url must have https scheme$"):
        GrafanaJWT(plain)
    GrafanaJWT({**plain, "GF_DEFAULT_APP_MODE": "development"})  # only in development mode
    with pytest.raises(GrafanaRefusal, match="ambiguous"):
        GrafanaJWT({**env, "GF_AUTH_JWT_JWK_SET_FILE": "/etc/grafana/jwks.json"})


def test_claims_grafana_reads_are_in_the_assertion(
    loaded: LoadedConfig, grafana_env: dict[str, str], certs: tuple[Path, Path]
) -> None:
    options = loaded.options
    route = route_of(loaded)
    minter = AssertionMinter(load_keyset(options))
    user = options.idp_users[0]
    session = Session(
        id="sid-1",
        user_id=user.username,
        email=user.email,
        name=user.name,
        groups=tuple(user.groups),
    )
    token = minter.mint(session, route.from_host, AssertionSpec.for_route(options, route)).jwt
    grafana = GrafanaJWT({**grafana_env, "GF_AUTH_JWT_TLS_CLIENT_CA": str(certs[1] / "ca.pem")})
    grafana.trust({"keys": [minter.keyset.signer().jwk]})
    who = grafana.authenticate({"X-Pomerium-Jwt-Assertion": token})
    assert who["email"] == user.email and who["login"] == user.username
    assert who["name"] == user.name  # Grafana's full name for auto-signed-up users
    assert who["role"] == "Admin"


def test_expected_claims_are_the_route_host(
    loaded: LoadedConfig, grafana_env: dict[str, str]
) -> None:
    expected = json.loads(grafana_env["GF_AUTH_JWT_EXPECT_CLAIMS"])
    host = route_of(loaded).from_host
    assert expected["aud"] == host
    assert expected["iss"] == (
        host if loaded.options.jwt_issuer_format == "hostOnly" else f"https://{host}/"
    )


def test_role_mapping_gives_each_demo_user_a_grafana_role(
    loaded: LoadedConfig, grafana_env: dict[str, str]
) -> None:
    assert grafana_env["GF_AUTH_JWT_AUTO_SIGN_UP"] == "true"
    expression = grafana_env["GF_AUTH_JWT_ROLE_ATTRIBUTE_PATH"]
    roles = {
        u.username: grafana_role(expression, {"groups": list(u.groups)})
        for u in loaded.options.idp_users
    }
    assert set(roles.values()) <= GRAFANA_ROLES
    assert roles["alice"] == "Admin"
    assert roles["bob"] == "Viewer"


def test_sign_out_redirect_is_the_sign_out_page_of_the_route(
    loaded: LoadedConfig, grafana_env: dict[str, str]
) -> None:
    url = urlsplit(grafana_env["GF_AUTH_SIGNOUT_REDIRECT_URL"])
    root = urlsplit(grafana_env["GF_SERVER_ROOT_URL"])
    assert url.netloc == root.netloc and url.hostname == route_of(loaded).from_host
    # A plain GET of /.pomerium/sign_out shows a Sign out button (a POST with a CSRF
    # token): following the link alone signs nobody out.
    assert url.path == SIGN_OUT_PATH and not url.query


def test_readme_passwords_match_the_hashes(loaded: LoadedConfig) -> None:
    users = readme_users()
    configured = {u.username: u.password_hash for u in loaded.options.idp_users}
    assert set(users) == set(configured)
    for name, password in users.items():
        assert verify_password(configured[name], password), f"README password of {name}"


def test_readme_names_every_grafana_setting(grafana_env: dict[str, str]) -> None:
    text = README.read_text()
    missing = [k for k in grafana_env if k.startswith("GF_AUTH_JWT_") and k not in text]
    assert not missing, f"README does not explain {missing}"


# -- live: gatehouse over TLS, an upstream that applies Grafana's rules -------------------------


class GrafanaUpstream:
    """An HTTP server in Grafana's place: each request is authenticated by Grafana's JWT
    rules (:class:`GrafanaJWT`); 200 with the Grafana identity as JSON, or Grafana's
    refusal status with the reason."""

    def __init__(self, rules: GrafanaJWT) -> None:
        self.rules = rules
        self.seen: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = self.path.partition("?")[2]
                headers = dict(self.headers.items())
                try:
                    who = upstream.rules.authenticate(headers, query)
                except GrafanaRefusal as exc:
                    status, body = exc.status, {"refused": str(exc)}
                else:
                    status, body = 200, {k: v for k, v in who.items() if k != "claims"}
                    body["claims"] = who["claims"]
                upstream.seen.append({"path": self.path, "host": self.headers.get("host"), **body})
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TLSBrowser(Browser):
    """:class:`Browser` over HTTPS: every ``*.localhost`` name goes to gatehouse's port,
    with that name as SNI and Host, trusting only the example's CA."""

    def __init__(self, gatehouse_port: int, ca_file: Path) -> None:
        super().__init__(gatehouse_port)
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        assert parts.scheme == "https" and host.endswith(".localhost"), url
        headers = {"Accept": self.accept, "Host": parts.netloc}
        jar = self.cookies.get(host)
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        headers.update(kwargs.pop("headers", None) or {})
        target = f"https://127.0.0.1:{self.gatehouse_port}{parts.path or '/'}" + (
            f"?{parts.query}" if parts.query else ""
        )
        with httpx.Client(verify=self.context, timeout=15) as client:
            response = client.request(
                method, target, headers=headers, extensions={"sni_hostname": host}, **kwargs
            )
        self._store(url, response)
        self.history.append(Hop(url, response))
        return response


def live_config(upstream_url: str, tmp_path: Path, cert_dir: Path) -> str:
    data = yaml.safe_load(local_config_text(cert_dir))
    data["address"] = "127.0.0.1:0"
    data["data_dir"] = str(tmp_path / "data")
    data["shutdown_timeout"] = "5s"
    for route in data["routes"]:
        if route.get("name") == "grafana":
            route["to"] = upstream_url
    return yaml.safe_dump(data, sort_keys=False)


_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


def submit_form(
    browser: Browser, page_url: str, page: str, fields: dict[str, str]
) -> httpx.Response:
    action = _ACTION.search(page)
    assert action is not None, "no form on the page"
    data = {html.unescape(k): html.unescape(v) for k, v in _HIDDEN.findall(page)}
    return browser.request(
        "POST", urljoin(page_url, html.unescape(action.group(1))), data={**data, **fields}
    )


def follow_from(browser: Browser, url: str, response: httpx.Response) -> httpx.Response:
    while response.status_code in (301, 302, 303, 307, 308):
        url = urljoin(url, response.headers["location"])
        response = browser.get(url)
    return response


def sign_in(browser: Browser, url: str, username: str, password: str) -> httpx.Response:
    """Open ``url``, fill the built-in IdP's form, follow back; the last response."""
    page = browser.follow(url)
    assert page.status_code == 200 and 'name="password"' in page.text, page.text[:500]
    response = submit_form(
        browser, browser.last_url, page.text, {"username": username, "password": password}
    )
    return follow_from(browser, browser.last_url, response)


@dataclass
class Live:
    gh: GatehouseProcess
    grafana: GrafanaUpstream
    root: str
    ca_file: Path

    def browser(self) -> TLSBrowser:
        return TLSBrowser(self.gh.port, self.ca_file)


def grafana_rules(env: dict[str, str], ca_file: Path, ports: dict[str, int]) -> GrafanaJWT:
    """Grafana as the compose file configures it; the service name ``gatehouse`` resolves to
    the loopback gatehouse (as the compose network resolves it to the container)."""

    def connect(host: str, port: int) -> tuple[str, int]:
        assert host == GATEHOUSE_SERVICE and port == ports["container"], (host, port)
        return "127.0.0.1", ports["gatehouse"]

    return GrafanaJWT({**env, "GF_AUTH_JWT_TLS_CLIENT_CA": str(ca_file)}, connect=connect)


@pytest.fixture
def live(
    start_gatehouse: Callable[..., GatehouseProcess],
    tmp_path: Path,
    grafana_env: dict[str, str],
    certs: tuple[Path, Path],
    loaded: LoadedConfig,
) -> Iterator[Live]:
    ports = {"container": address_port(loaded.options.address)}
    rules = grafana_rules(grafana_env, certs[1] / "ca.pem", ports)
    grafana = GrafanaUpstream(rules)
    try:
        gh = start_gatehouse(live_config(grafana.url, tmp_path, certs[0]))
        ports["gatehouse"] = gh.port
        # The browser uses the public URL (its port is the published one); TLSBrowser sends
        # every *.localhost request to gatehouse's real port with that name.
        yield Live(gh, grafana, grafana_env["GF_SERVER_ROOT_URL"].rstrip("/"), certs[1] / "ca.pem")
    finally:
        grafana.close()


def test_signed_in_admin_is_signed_in_to_grafana_as_admin(live: Live) -> None:
    browser = live.browser()
    final = sign_in(browser, f"{live.root}/d/home?orgId=1", "alice", readme_users()["alice"])
    assert final.status_code == 200, final.text[:500]
    assert browser.last_url == f"{live.root}/d/home?orgId=1"
    who = final.json()
    assert (who["login"], who["email"], who["role"]) == ("alice", "alice@example.com", "Admin")
    assert who["name"] == "Alice Admin" and who["grafana_admin"] is False
    seen = live.grafana.seen[-1]
    assert seen["path"] == "/d/home?orgId=1"
    assert seen["host"] == urlsplit(live.root).netloc  # preserve_host_header
    # Grafana fetched the keys once, over TLS trusting only the example CA, and keeps them
    # for the smaller of gatehouse's max-age (60 s) and CACHE_TTL (60m).
    assert live.grafana.rules.fetches == 1
    assert 50 < live.grafana.rules.cached_for_s() <= 60
    browser.get(f"{live.root}/api/dashboards")
    assert live.grafana.rules.fetches == 1, "cached"
    # The token's kid names a key of the JWKS exactly (Grafana's lookup is exact).
    kids = [k["kid"] for k in live.grafana.rules.key_set()["keys"]]
    assert len(set(kids)) == len(kids) and all(kids)


def test_viewer_is_mapped_and_a_forged_header_never_reaches_grafana(live: Live) -> None:
    browser = live.browser()
    assert sign_in(browser, f"{live.root}/", "bob", readme_users()["bob"]).status_code == 200
    forged = jwt.encode(
        {"sub": "admin", "email": "admin@example.com", "groups": ["grafana-admins"]},
        "forged-by-someone-without-gatehouse-keys",
        algorithm="HS256",
    )
    response = browser.get(f"{live.root}/api/user", headers={"X-Pomerium-Jwt-Assertion": forged})
    assert response.status_code == 200
    who = response.json()
    assert (who["login"], who["role"]) == ("bob", "Viewer")
    assert who["claims"]["groups"] == ["grafana-users"]


def test_grafana_refuses_a_token_it_cannot_trust(
    live: Live, grafana_env: dict[str, str], tmp_path: Path
) -> None:
    """Checks that can fail: the rules refuse what Grafana would refuse."""
    browser = live.browser()
    sign_in(browser, f"{live.root}/", "alice", readme_users()["alice"])
    token = live.grafana.seen[-1]["claims"]
    assert token["sub"] == "alice"
    ports = {"container": address_port(yaml.safe_load(CONFIG_FILE.read_text())["address"])}
    ports["gatehouse"] = live.gh.port
    # Another CA (as a Grafana configured with someone else's CA): the TLS handshake fails.
    other = tmp_path / "other"
    subprocess.run(
        [sys.executable, str(MAKE_CERTS), str(other / "c"), str(other / "a")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with pytest.raises(ssl.SSLCertVerificationError):
        grafana_rules(grafana_env, other / "a" / "ca.pem", ports).key_set()
    # The system's CAs alone (no TLS_CLIENT_CA) do not trust the example certificate.
    no_ca = {k: v for k, v in grafana_env.items() if k != "GF_AUTH_JWT_TLS_CLIENT_CA"}
    system = GrafanaJWT(no_ca, connect=lambda h, p: ("127.0.0.1", live.gh.port))
    with pytest.raises(ssl.SSLCertVerificationError):
        system.key_set()
    # Expected claims for another route, and a stale clock, are refused.
    wrong_aud = grafana_rules(
        {**grafana_env, "GF_AUTH_JWT_EXPECT_CLAIMS": '{"aud": "other.localhost"}'},
        live.ca_file,
        ports,
    )
    fresh = browser.get(f"{live.root}/x")
    assert fresh.status_code == 200
    raw = _last_token(live, browser)
    with pytest.raises(GrafanaRefusal, match="audience"):
        wrong_aud.authenticate({"X-Pomerium-Jwt-Assertion": raw})
    late = grafana_rules(grafana_env, live.ca_file, ports)
    late.clock = lambda: time.time() + 5 * 60 + 61  # past exp (5 min) and the leeway
    with pytest.raises(GrafanaRefusal, match="expired"):
        late.authenticate({"X-Pomerium-Jwt-Assertion": raw})
    # URL login is off: a token in ?auth_token= is not read.
    with pytest.raises(GrafanaRefusal, match="no token"):
        late.authenticate({}, f"auth_token={raw}")


def _last_token(live: Live, browser: TLSBrowser) -> str:
    """The assertion of the last request that reached the upstream (as Grafana got it)."""
    token = live.grafana.rules.last_token
    assert token.count(".") == 2
    return token


def test_user_outside_the_allowed_group_never_reaches_grafana(live: Live) -> None:
    browser = live.browser()
    final = sign_in(browser, f"{live.root}/", "carol", readme_users()["carol"])
    assert final.status_code == 403
    assert "carol@example.com" in final.text
    assert live.grafana.seen == []


def test_grafana_sign_out_redirect_signs_out_of_gatehouse(
    live: Live, grafana_env: dict[str, str]
) -> None:
    browser = live.browser()
    assert sign_in(browser, f"{live.root}/", "alice", readme_users()["alice"]).status_code == 200
    # Grafana's "Sign out" sends the browser here: a page with a Sign out button.
    page_url = grafana_env["GF_AUTH_SIGNOUT_REDIRECT_URL"]
    page = browser.get(page_url)
    assert page.status_code == 200 and "alice@example.com" in page.text
    assert browser.get(f"{live.root}/still-in").status_code == 200, "a GET alone signs nobody out"
    response = submit_form(browser, page_url, page.text, {})
    assert response.status_code == 303
    final = follow_from(browser, page_url, response)
    assert "You have been signed out." in final.text
    before = len(live.grafana.seen)
    again = browser.follow(f"{live.root}/")
    assert 'name="password"' in again.text, "signed out: the next visit asks for sign-in"
    assert len(live.grafana.seen) == before
