"""The Grafana example (``examples/grafana/``) is consistent with gatehouse, and works.

Two kinds of checks:

* static: the compose file parses, the gatehouse config validates and compiles with
  gatehouse's own loader, and every ``GF_AUTH_JWT_*`` setting agrees with what gatehouse
  sends (header name, JWKS path and port, claims, issuer and audience, role mapping);
* live: gatehouse runs the example config (adapted: a free port, a temporary data
  directory, a recording upstream in Grafana's place), a user signs in through the
  built-in IdP, and the assertion that reaches the upstream verifies the way Grafana would
  verify it: keys fetched from the URL Grafana is given (with the ``Host`` it would
  send), ``EXPECT_CLAIMS`` checked, the email and username claims present, the role
  computed from ``ROLE_ATTRIBUTE_PATH``. Grafana itself is not run (no container engine
  in the test environment); the JWT rules it applies are reproduced with PyJWT and
  jmespath.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jwt
import pytest
import yaml

from gatehouse.config import LoadedConfig, load_file
from gatehouse.config.durations import parse_duration
from gatehouse.constants import ASSERTION_HEADER, JWKS_PATH, USER_INFO_PATH
from gatehouse.identity import AssertionMinter, AssertionSpec, load_keyset
from gatehouse.idp.passwords import verify_password
from gatehouse.proxy.state import build_state
from gatehouse.sessions.model import Session
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "grafana"
COMPOSE_FILE = EXAMPLE / "docker-compose.yaml"
CONFIG_FILE = EXAMPLE / "gatehouse.yaml"
DOCKERFILE = EXAMPLE / "Dockerfile"
README = EXAMPLE / "README.md"

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


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedConfig:
    # DATA_DIR overrides the container path: compiling generates a key there.
    return load_file(CONFIG_FILE, env={"DATA_DIR": str(tmp_path / "data")})


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


def test_gatehouse_config_validates_with_the_cli(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "gatehouse", "check", "-c", str(CONFIG_FILE)],
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
    assert url.scheme == ("http" if loaded.options.insecure_server else "https")
    assert parse_duration(grafana_env["GF_AUTH_JWT_CACHE_TTL"]) > 0
    assert grafana_env["GF_AUTH_JWT_TLS_SKIP_VERIFY_INSECURE"] == "false", (
        "plain HTTP needs no skipping"
    )
    assert grafana_env["GF_AUTH_JWT_URL_LOGIN"] == "false"


def test_claims_grafana_reads_are_in_the_assertion(
    loaded: LoadedConfig, grafana_env: dict[str, str]
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
    key = jwt.PyJWK(minter.keyset.signer().jwk)
    claims = decode_like_grafana(token, key.key, grafana_env)
    assert claims[grafana_env["GF_AUTH_JWT_EMAIL_CLAIM"]] == user.email
    assert claims[grafana_env["GF_AUTH_JWT_USERNAME_CLAIM"]] == user.username
    assert claims["name"] == user.name  # Grafana's full name for auto-signed-up users


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


def test_sign_out_redirect_is_the_user_page_of_the_route(
    loaded: LoadedConfig, grafana_env: dict[str, str]
) -> None:
    url = urlsplit(grafana_env["GF_AUTH_SIGNOUT_REDIRECT_URL"])
    root = urlsplit(grafana_env["GF_SERVER_ROOT_URL"])
    assert url.netloc == root.netloc and url.hostname == route_of(loaded).from_host
    # A bare GET of /.pomerium/sign_out is refused (it needs a signed URL); the user page
    # has the sign-out button (a POST with a CSRF token).
    assert url.path == USER_INFO_PATH


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


# -- live: sign in through the built-in IdP, verify like Grafana ------------------------------


def decode_like_grafana(token: str, key: Any, env: dict[str, str]) -> dict[str, Any]:
    """Verify ``token`` with the checks Grafana's JWT auth makes under ``env``."""
    expected = json.loads(env.get("GF_AUTH_JWT_EXPECT_CLAIMS", "{}"))
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["ES256", "RS256"],
        audience=expected.get("aud"),
        issuer=expected.get("iss"),
        options={"require": ["exp", "iat", "sub"], "verify_aud": "aud" in expected},
        leeway=0,  # the strictest reading: Grafana may allow less than other verifiers
    )
    # Grafana requires sub, and the configured login claims.
    for claim in (env["GF_AUTH_JWT_USERNAME_CLAIM"], env["GF_AUTH_JWT_EMAIL_CLAIM"]):
        assert claims.get(claim), f"claim {claim} missing or empty"
    return claims


def live_config(upstream: Upstream, tmp_path: Path) -> str:
    data = yaml.safe_load(CONFIG_FILE.read_text())
    data["address"] = "127.0.0.1:0"
    data["data_dir"] = str(tmp_path / "data")
    data["shutdown_timeout"] = "5s"
    for route in data["routes"]:
        if route.get("name") == "grafana":
            route["to"] = upstream.url
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


@pytest.fixture
def live(
    make_upstream: Callable[..., Upstream],
    start_gatehouse: Callable[..., GatehouseProcess],
    tmp_path: Path,
    grafana_env: dict[str, str],
) -> tuple[GatehouseProcess, Upstream, str]:
    grafana = make_upstream("grafana")
    gh = start_gatehouse(live_config(grafana, tmp_path))
    # The browser talks to the public URL (its port is the published one); Browser sends
    # every *.localhost request to gatehouse's real port with that Host.
    return gh, grafana, grafana_env["GF_SERVER_ROOT_URL"].rstrip("/")


def fetch_jwks_like_grafana(gh: GatehouseProcess, env: dict[str, str]) -> httpx.Response:
    url = urlsplit(env["GF_AUTH_JWT_JWK_SET_URL"])
    # Grafana connects to the gatehouse service and sends Host: gatehouse:8080.
    return httpx.get(
        f"http://127.0.0.1:{gh.port}{url.path}", headers={"Host": url.netloc}, timeout=10
    )


def test_signed_in_admin_reaches_grafana_with_a_token_grafana_accepts(
    live: tuple[GatehouseProcess, Upstream, str], grafana_env: dict[str, str]
) -> None:
    gh, grafana, root = live
    users = readme_users()
    browser = Browser(gh.port)
    final = sign_in(browser, f"{root}/d/home?orgId=1", "alice", users["alice"])
    assert final.status_code == 200, final.text[:500]
    assert browser.last_url == f"{root}/d/home?orgId=1"
    seen = grafana.requests[-1]
    assert seen.target == "/d/home?orgId=1"
    assert seen.header("host") == urlsplit(root).netloc  # preserve_host_header
    token = seen.header(grafana_env["GF_AUTH_JWT_HEADER_NAME"])
    assert token, "no assertion header reached Grafana"

    keys = fetch_jwks_like_grafana(gh, grafana_env)
    assert keys.status_code == 200
    assert "max-age=60" in keys.headers["cache-control"]
    jwks = jwt.PyJWKSet.from_dict(keys.json())
    kid = jwt.get_unverified_header(token)["kid"]
    claims = decode_like_grafana(token, jwks[kid].key, grafana_env)
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com"
    # What ROLE_ATTRIBUTE_PATH reads (the role itself: test_role_mapping_...).
    assert claims["groups"] == ["grafana-users", "grafana-admins"]


def test_viewer_is_mapped_and_a_forged_header_never_reaches_grafana(
    live: tuple[GatehouseProcess, Upstream, str], grafana_env: dict[str, str]
) -> None:
    gh, grafana, root = live
    browser = Browser(gh.port)
    assert sign_in(browser, f"{root}/", "bob", readme_users()["bob"]).status_code == 200
    forged = jwt.encode(
        {"sub": "admin", "email": "admin@example.com", "groups": ["grafana-admins"]},
        "forged-by-someone-without-gatehouse-keys",
        algorithm="HS256",
    )
    assert (
        browser.get(f"{root}/api/user", headers={"X-Pomerium-Jwt-Assertion": forged}).status_code
        == 200
    )
    token = grafana.requests[-1].header("x-pomerium-jwt-assertion")
    assert token and token != forged
    jwks = jwt.PyJWKSet.from_dict(fetch_jwks_like_grafana(gh, grafana_env).json())
    claims = decode_like_grafana(
        token, jwks[jwt.get_unverified_header(token)["kid"]].key, grafana_env
    )
    assert claims["sub"] == "bob"
    assert claims["groups"] == ["grafana-users"]


def test_user_outside_the_allowed_group_never_reaches_grafana(
    live: tuple[GatehouseProcess, Upstream, str],
) -> None:
    gh, grafana, root = live
    browser = Browser(gh.port)
    final = sign_in(browser, f"{root}/", "carol", readme_users()["carol"])
    assert final.status_code == 403
    assert grafana.requests == []


def test_grafana_sign_out_redirect_signs_out_of_gatehouse(
    live: tuple[GatehouseProcess, Upstream, str], grafana_env: dict[str, str]
) -> None:
    gh, grafana, root = live
    browser = Browser(gh.port)
    assert sign_in(browser, f"{root}/", "alice", readme_users()["alice"]).status_code == 200
    # Grafana's sign-out sends the browser here.
    page_url = grafana_env["GF_AUTH_SIGNOUT_REDIRECT_URL"]
    page = browser.get(page_url)
    assert page.status_code == 200 and "alice@example.com" in page.text
    response = submit_form(browser, page_url, page.text, {})
    assert response.status_code == 303
    follow_from(browser, page_url, response)
    before = len(grafana.requests)
    again = browser.follow(f"{root}/")
    assert 'name="password"' in again.text, "signed out: the next visit asks for sign-in"
    assert len(grafana.requests) == before
