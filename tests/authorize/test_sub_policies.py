"""``sub_policies`` (Pomerium's old policy form) merged into the route's allow rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse.authorize import Outcome, PolicyInput, compile_route_policy
from gatehouse.config import RouteOptions
from gatehouse.config.loader import load_text
from gatehouse.errors import ConfigError
from gatehouse.sessions.model import Session
from support.gatehouse import clean_env

ALICE = Session(id="s", user_id="u-alice", email="alice@example.com", claims={"team": "red"})
BOB = Session(id="s", user_id="u-bob", email="bob@other.org", claims={"team": "blue"})
CAROL = Session(id="s", user_id="u-carol", email="carol@third.net", claims={"team": "green"})
MALLORY = Session(id="s", user_id="u-m", email="m@evil.test", claims={"team": "black"})


def route(**kw: Any) -> RouteOptions:
    return RouteOptions.model_validate(
        {"from": "https://app.example.com", "to": "http://127.0.0.1:9", **kw}
    )


def decide(r: RouteOptions, session: Session | None) -> Outcome:
    return compile_route_policy(r, 0).evaluate(PolicyInput("GET", "/", session=session)).outcome


def test_each_sub_policy_allows_alongside_the_route_lists() -> None:
    r = route(
        allowed_users=["alice@example.com"],
        sub_policies=[
            {"id": "one", "name": "domains", "allowed_domains": ["other.org"]},
            {"allowed_idp_claims": {"team": ["green"]}, "explanation": "ask ops"},
        ],
    )
    assert decide(r, ALICE) is Outcome.ALLOW
    assert decide(r, BOB) is Outcome.ALLOW
    assert decide(r, CAROL) is Outcome.ALLOW
    assert decide(r, MALLORY) is Outcome.DENY
    assert decide(r, None) is Outcome.NEEDS_LOGIN


def test_sub_policies_alone_make_a_policy() -> None:
    r = route(sub_policies=[{"allowed_users": "u-bob"}])
    assert decide(r, BOB) is Outcome.ALLOW
    assert decide(r, ALICE) is Outcome.DENY


def test_sub_policies_combine_with_ppl() -> None:
    r = route(
        sub_policies=[{"allowed_domains": ["example.com"]}],
        policy={"allow": {"or": [{"email": {"is": "bob@other.org"}}]}},
    )
    assert decide(r, ALICE) is Outcome.ALLOW
    assert decide(r, BOB) is Outcome.ALLOW
    assert decide(r, CAROL) is Outcome.DENY


def test_decision_report_names_the_sub_policy() -> None:
    r = route(sub_policies=[{}, {"allowed_domains": ["other.org"]}])
    report = compile_route_policy(r, 0).evaluate(PolicyInput("GET", "/", session=BOB)).explain()
    assert "sub_policies[1].allowed_domains" in report


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"rego": ["package pomerium.policy"]}, "rego: not supported by gatehouse (Rego"),
        ({"source_ppl": "allow: {}"}, "source_ppl: not supported by gatehouse"),
        ({"allowed_group": ["x"]}, "allowed_group"),
    ],
)
def test_refused_entries(entry: dict[str, Any], message: str) -> None:
    text = yaml.safe_dump(
        {
            "insecure_server": True,
            "routes": [{"from": "http://a.test", "to": "http://b:1", "sub_policies": [entry]}],
        }
    )
    with pytest.raises(ConfigError) as info:
        load_text(text, "c.yaml", env={})
    (problem,) = info.value.problems
    assert "routes[0].sub_policies[0]." in problem and message in problem, problem


def test_check_policy_cli_reads_sub_policies(tmp_path: Path) -> None:
    """The ``gatehouse check-policy`` process decides as the proxy does."""
    config = tmp_path / "g.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "insecure_server": True,
                "routes": [
                    {
                        "from": "http://app.localhost",
                        "to": "http://127.0.0.1:9",
                        "sub_policies": [{"allowed_domains": ["other.org"]}],
                    }
                ],
            }
        )
    )

    def run(email: str) -> subprocess.CompletedProcess[str]:
        args = ["check-policy", "--config", str(config), "--url", "http://app.localhost/"]
        return subprocess.run(
            [sys.executable, "-m", "gatehouse", *args, "--email", email],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )

    allowed, denied = run("bob@other.org"), run("alice@example.com")
    assert allowed.returncode == 0 and "decision: ALLOW" in allowed.stdout, allowed.stderr
    assert denied.returncode == 3 and "decision: DENY" in denied.stdout, denied.stderr
