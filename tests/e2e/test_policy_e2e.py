"""Policies end to end: legacy options, request criteria, 403 page and JSON, logs, check-policy.

One gatehouse (with panva's oidc-provider signing in alice, groups ``admins`` and
``staff``) serves one route per case in front of a recording upstream. A
:class:`support.browser.Browser` signs in once; later hosts reuse the authenticate
session (no second IdP visit). ``gatehouse check-policy`` runs as a subprocess on a config
file with the same routes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from authenticate.conftest import ProviderProcess
from e2e.conftest import sso_config
from support.browser import Browser
from support.gatehouse import GatehouseProcess, clean_env
from support.loop import LoopThread
from support.upstream import Upstream

ALICE = "alice@example.com"


def _routes(to: str) -> list[dict[str, Any]]:
    def r(host: str, **kw: Any) -> dict[str, Any]:
        return {"from": f"http://{host}.localhost", "to": to, **kw}

    return [
        r("users-ok", allowed_users=[ALICE]),
        r("users-no", allowed_users=["bob@example.com"]),
        r("domain-ok", allowed_domains=["example.com"]),
        r("domain-no", allowed_domains=["example.org"]),
        r("any", allow_any_authenticated_user=True),
        r("public", allow_public_unauthenticated_access=True),
        r(
            "details",
            policy=[{"allow": {"or": [{"email": {"is": "bob@example.com"}}]}}],
            show_error_details=True,
        ),
        r("nodetails", policy=[{"allow": {"or": [{"email": {"is": "bob@example.com"}}]}}]),
        r("ip-ok", policy=[{"allow": {"or": [{"source_ip": "127.0.0.0/8"}]}}]),
        r("ip-no", policy=[{"allow": {"or": [{"source_ip": ["10.0.0.0/8", "::1/128"]}]}}]),
        r(
            "ip-deny",
            policy=[
                {"allow": {"or": [{"accept": True}]}, "deny": {"or": [{"source_ip": "127.0.0.1"}]}}
            ],
        ),
        r("method", policy=[{"allow": {"or": [{"http_method": {"in": ["GET", "HEAD"]}}]}}]),
        r("method-user", policy=[{"allow": {"and": [{"email": ALICE}, {"http_method": "GET"}]}}]),
        r("groups", policy=[{"allow": {"or": [{"groups": {"has": "admins"}}]}}]),
        r("groups-no", policy=[{"allow": {"or": [{"groups": {"has": "finance"}}]}}]),
    ]


@dataclass
class Env:
    gh: GatehouseProcess
    upstream: Upstream
    browser: Browser
    config_path: Path

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}.localhost{path}"

    def visit(self, host: str, path: str = "/", **kw: Any) -> httpx.Response:
        """Signed-in browser request (follows the sign-in redirects on first visit)."""
        return self.browser.follow(self.url(host, path), **kw)

    def anon(self, host: str, path: str = "/", method: str = "GET", **kw: Any) -> httpx.Response:
        headers = {"Host": f"{host}.localhost", **kw.pop("headers", {})}
        return httpx.request(
            method, f"http://127.0.0.1:{self.gh.port}{path}", headers=headers, timeout=10, **kw
        )

    def cookie(self, host: str) -> str:
        """alice's session cookie for ``host`` ("" for routes that never ask to sign in)."""
        return self.browser.cookies.get(f"{host}.localhost", {}).get("_gatehouse", "")

    def as_alice(
        self, host: str, path: str = "/", method: str = "GET", **kw: Any
    ) -> httpx.Response:
        cookie = {"Cookie": f"_gatehouse={self.cookie(host)}"} if self.cookie(host) else {}
        headers = {**cookie, "Accept": "application/json", **kw.pop("headers", {})}
        return self.anon(host, path, method, headers=headers, **kw)


@pytest.fixture(scope="module")
def env(
    idp: ProviderProcess, loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    upstream = Upstream(loop_thread, "app")
    workdir = tmp_path_factory.mktemp("policy")
    gh = GatehouseProcess(sso_config(idp, _routes(upstream.url)), workdir).start()
    try:
        browser = Browser(gh.port)
        assert browser.follow("http://users-ok.localhost/").status_code == 200
        # One cookie per host that asks to sign in (no second IdP visit), before any test runs.
        for route in _routes(upstream.url)[1:]:
            browser.follow(route["from"] + "/")
        yield Env(gh, upstream, browser, gh.config_path)
    finally:
        code = gh.stop()
        upstream.close()
        assert code == 0, gh.stderr_text()


@pytest.fixture
def up(env: Env) -> Upstream:
    env.upstream.reset()
    return env.upstream


# -- legacy options ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("users-ok", 200),
        ("users-no", 403),
        ("domain-ok", 200),
        ("domain-no", 403),
        ("any", 200),
        ("public", 200),
        ("groups", 200),
        ("groups-no", 403),
    ],
)
def test_legacy_options_and_groups_for_a_signed_in_user(
    env: Env, up: Upstream, host: str, status: int
) -> None:
    r = env.as_alice(host, "/page")
    assert r.status_code == status, r.text
    if status == 200:
        assert [q.target for q in up.requests] == ["/page"]
    else:
        assert up.requests == []


@pytest.mark.parametrize("host", ["users-ok", "users-no", "domain-ok", "any", "groups"])
def test_user_criteria_without_a_session_ask_for_sign_in(env: Env, up: Upstream, host: str) -> None:
    api = env.anon(host, "/x", headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.json()["status"] == 401
    page = env.anon(host, "/x", headers={"Accept": "text/html"})
    assert page.status_code == 302 and "/.pomerium/sign_in" in page.headers["location"]
    assert up.requests == []


def test_public_route_needs_no_session(env: Env, up: Upstream) -> None:
    r = env.anon("public", "/open?q=1")
    assert r.status_code == 200
    assert up.requests[0].target == "/open?q=1"


# -- 403: HTML page and JSON, with and without details ---------------------------------------


def test_show_error_details_lists_the_failing_rules(env: Env, up: Upstream) -> None:
    page = env.browser.get(env.url("details", "/secret"))
    assert page.status_code == 403
    assert "text/html" in page.headers["content-type"]
    text = page.text
    assert "policy[0].allow.or" in text
    assert "email-unauthorized" in text
    assert "bob@example.com" in text  # the criterion that failed, with its value
    api = env.as_alice("details", "/secret")
    assert api.status_code == 403
    body = api.json()
    assert body["status"] == 403
    assert any("email-unauthorized" in line for line in body["details"])
    assert up.requests == []


def test_without_show_error_details_the_403_says_nothing_about_rules(
    env: Env, up: Upstream
) -> None:
    page = env.browser.get(env.url("nodetails", "/secret"))
    assert page.status_code == 403
    assert "text/html" in page.headers["content-type"]
    for secret in ("policy[0]", "email-unauthorized", "bob@example.com", "allow.or"):
        assert secret not in page.text
    api = env.as_alice("nodetails", "/secret")
    assert api.status_code == 403
    assert api.headers["content-type"].startswith("application/json")
    body = api.json()
    assert body["status"] == 403 and "details" not in body
    assert "bob@example.com" not in api.text
    assert up.requests == []


def test_403_json_for_api_clients(env: Env, up: Upstream) -> None:
    for accept in ("application/json", "*/*", ""):
        r = env.as_alice("users-no", "/api/items", headers={"Accept": accept})
        assert r.status_code == 403
        assert r.json()["status"] == 403
    xhr = env.as_alice(
        "users-no", "/api", headers={"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"}
    )
    assert xhr.status_code == 403 and xhr.json()["status"] == 403
    assert up.requests == []


# -- source_ip and http_method ---------------------------------------------------------------


def test_source_ip_allows_loopback(env: Env, up: Upstream) -> None:
    assert env.anon("ip-ok", "/").status_code == 200
    assert len(up.requests) == 1


@pytest.mark.parametrize(
    "spoof",
    [
        {},
        {"X-Forwarded-For": "10.1.2.3"},
        {"X-Real-IP": "10.1.2.3"},
        {"Forwarded": "for=10.1.2.3"},
        {"X-Forwarded-For": "::1"},
    ],
)
def test_source_ip_uses_the_peer_address_not_client_headers(
    env: Env, up: Upstream, spoof: dict[str, str]
) -> None:
    assert (
        env.anon("ip-no", "/", headers={"Accept": "application/json", **spoof}).status_code == 403
    )
    assert (
        env.anon("ip-deny", "/", headers={"Accept": "application/json", **spoof}).status_code == 403
    )
    assert up.requests == []


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("GET", 200),
        ("HEAD", 200),
        ("POST", 403),
        ("PUT", 403),
        ("DELETE", 403),
        ("OPTIONS", 403),
        ("PATCH", 403),
    ],
)
def test_http_method(env: Env, up: Upstream, method: str, status: int) -> None:
    r = env.anon("method", "/m", method=method, headers={"Accept": "application/json"})
    assert r.status_code == status
    assert len(up.requests) == (1 if status == 200 else 0)
    if status == 200:
        assert up.requests[0].method == method


def test_http_method_combined_with_user(env: Env, up: Upstream) -> None:
    assert env.as_alice("method-user", "/").status_code == 200
    assert env.as_alice("method-user", "/", method="POST", content=b"x").status_code == 403
    assert env.anon("method-user", "/", headers={"Accept": "application/json"}).status_code == 401
    assert [q.method for q in up.requests] == ["GET"]


# -- logs ------------------------------------------------------------------------------------


def _policy_lines(gh: GatehouseProcess) -> list[dict[str, Any]]:
    return [r["policy"] for r in gh.logs() if isinstance(r.get("policy"), dict)]


def test_deny_writes_a_decision_log_line(env: Env, up: Upstream) -> None:
    env.as_alice("users-no", "/decision-log")
    line = env.gh.wait_log(
        lambda r: (
            isinstance(r.get("policy"), dict)
            and r["policy"].get("decision") == "deny"
            and "users-no" in str(r["policy"].get("route"))
        )
    )
    policy = line["policy"]
    assert policy["user"] == ALICE
    assert policy["failed_rules"] and isinstance(policy["failed_rules"], list)
    assert isinstance(policy["matched_rules"], list)
    assert "email-unauthorized" in policy["reasons"] or "user-unauthorized" in policy["reasons"]
    # Nothing secret in the process log.
    assert env.cookie("users-no") not in env.gh.stderr_text()


def test_deny_by_rule_logs_the_matched_deny(env: Env, up: Upstream) -> None:
    env.anon("ip-deny", "/", headers={"Accept": "application/json"})
    line = env.gh.wait_log(
        lambda r: isinstance(r.get("policy"), dict) and "ip-deny" in str(r["policy"].get("route"))
    )
    policy = line["policy"]
    assert policy["decision"] == "deny"
    assert any(rule.startswith("policy[0].deny") for rule in policy["matched_rules"])
    assert policy["user"] == ""


def test_needs_login_writes_a_decision_log_line(env: Env, up: Upstream) -> None:
    env.anon("any", "/needs-login", headers={"Accept": "application/json"})
    env.gh.wait_log(
        lambda r: (
            isinstance(r.get("policy"), dict)
            and r["policy"].get("decision") == "needs-login"
            and "any" in str(r["policy"].get("route"))
        )
    )


def test_access_log_carries_decision_and_user(env: Env, up: Upstream) -> None:
    env.as_alice("users-ok", "/access-allow")
    env.as_alice("users-no", "/access-deny")
    env.anon("public", "/access-public")
    env.anon("any", "/access-anon", headers={"Accept": "application/json"})
    allow = env.gh.wait_access(lambda r: r.get("path") == "/access-allow")
    assert allow["decision"] == "allow" and allow["user"] == ALICE and allow["status"] == 200
    deny = env.gh.wait_access(lambda r: r.get("path") == "/access-deny")
    assert deny["decision"] == "deny" and deny["user"] == ALICE and deny["status"] == 403
    pub = env.gh.wait_access(lambda r: r.get("path") == "/access-public")
    assert pub["decision"] == "allow" and pub["user"] is None and pub["status"] == 200
    anon = env.gh.wait_access(lambda r: r.get("path") == "/access-anon")
    assert anon["decision"] == "needs-login" and anon["user"] is None and anon["status"] == 401


# -- gatehouse check-policy ------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_file(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("check") / "gatehouse.yaml"
    config = yaml.safe_load(env.config_path.read_text())
    path.write_text(yaml.safe_dump(config))
    return path


def check_policy(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatehouse", "check-policy", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )


@pytest.mark.parametrize(
    ("args", "code", "decision"),
    [
        (["--url", "http://users-ok.localhost/", "--email", ALICE], 0, "ALLOW"),
        (["--url", "http://users-no.localhost/", "--email", ALICE], 3, "DENY"),
        (["--url", "http://users-ok.localhost/"], 4, "NEEDS-LOGIN"),
        (["--url", "http://any.localhost/x", "--email", ALICE], 0, "ALLOW"),
        (["--url", "http://public.localhost/x"], 0, "ALLOW"),
        (["--url", "http://domain-ok.localhost/", "--email", ALICE], 0, "ALLOW"),
        (["--url", "http://domain-no.localhost/", "--email", ALICE], 3, "DENY"),
        (
            ["--url", "http://groups.localhost/", "--email", ALICE, "--groups", "staff,admins"],
            0,
            "ALLOW",
        ),
        (["--url", "http://groups.localhost/", "--email", ALICE, "--groups", "staff"], 3, "DENY"),
        (["--url", "http://method.localhost/", "--method", "POST"], 3, "DENY"),
        (["--url", "http://method.localhost/", "--method", "HEAD"], 0, "ALLOW"),
        (["--url", "http://ip-no.localhost/", "--source-ip", "10.9.8.7"], 0, "ALLOW"),
        (["--url", "http://ip-no.localhost/", "--source-ip", "192.0.2.1"], 3, "DENY"),
        (["--url", "http://ip-no.localhost/", "--source-ip", "::1"], 0, "ALLOW"),
    ],
)
def test_check_policy_exit_codes_and_report(
    policy_file: Path, args: list[str], code: int, decision: str
) -> None:
    result = check_policy(policy_file, *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert f"decision: {decision}" in result.stdout


def test_check_policy_report_names_every_rule(policy_file: Path) -> None:
    result = check_policy(
        policy_file,
        "--url",
        "http://details.localhost/a/../b",
        "--email",
        ALICE,
        "--groups",
        "admins",
    )
    assert result.returncode == 3
    out = result.stdout
    assert "normalised from /a/../b" in out
    assert "policy[0].allow.or: no match" in out
    assert "email-unauthorized" in out
    assert f"email={ALICE}" in out and "groups=admins" in out


def test_check_policy_agrees_with_the_proxy(env: Env, up: Upstream, policy_file: Path) -> None:
    """The dry run and the running proxy decide the same for the same request."""
    cases = [
        ("users-ok", "GET", 0, 200),
        ("users-no", "GET", 3, 403),
        ("method-user", "POST", 3, 403),
        ("method-user", "GET", 0, 200),
        ("groups-no", "GET", 3, 403),
    ]
    for host, method, code, status in cases:
        result = check_policy(
            policy_file,
            "--url",
            f"http://{host}.localhost/x",
            "--email",
            ALICE,
            "--groups",
            "admins,staff",
            "--method",
            method,
        )
        assert result.returncode == code, (host, method, result.stdout)
        body = {"content": b"x"} if method == "POST" else {}
        assert env.as_alice(host, "/x", method=method, **body).status_code == status, (host, method)


def test_check_policy_help_is_its_own(policy_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gatehouse", "check-policy", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 0
    assert "--url" in result.stdout and "--groups" in result.stdout


def test_check_policy_errors(policy_file: Path, tmp_path: Path) -> None:
    no_route = check_policy(policy_file, "--url", "http://nowhere.localhost/")
    assert no_route.returncode == 5 and "404" in no_route.stderr
    bad_path = check_policy(
        policy_file, "--url", "http://public.localhost/admin%2f", "--email", ALICE
    )
    assert bad_path.returncode == 3 and "400" in bad_path.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "gatehouse", "check-policy", "--url", "http://x/"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert missing.returncode == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump(
            {
                "insecure_server": True,
                "routes": [
                    {
                        "from": "http://a.localhost",
                        "to": "http://127.0.0.1:1",
                        "policy": [{"allow": {"or": [{"no_such_criterion": 1}]}}],
                    }
                ],
            }
        )
    )
    bad_config = check_policy(broken, "--url", "http://a.localhost/")
    assert bad_config.returncode == 2
    assert "no_such_criterion" in bad_config.stderr
    assert "Traceback" not in bad_config.stderr
    bad_claim = check_policy(policy_file, "--url", "http://any.localhost/", "--claim", "novalue")
    assert bad_claim.returncode == 2
