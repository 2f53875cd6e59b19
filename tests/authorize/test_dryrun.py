"""gatehouse check-policy: route matching, decisions, report text and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.authorize import Outcome
from gatehouse.authorize.dryrun import NoRouteMatched, check_policy, main
from gatehouse.config import load_text
from gatehouse.errors import InvalidPath

CONFIG = """
insecure_server: true
routes:
  - from: http://app.example.com
    to: http://127.0.0.1:9
    prefix: /admin
    policy:
      - allow:
          or:
            - groups: admins
      - deny:
          or:
            - source_ip: 192.0.2.0/24
  - from: http://app.example.com
    to: http://127.0.0.1:9
    regex: "/api/v[0-9]+/.*"
    policy:
      allow:
        and:
          - claim/scope: read
  - from: http://*.example.com
    to: http://127.0.0.1:9
    allowed_domains: [example.com]
"""


@pytest.fixture
def options():  # type: ignore[no-untyped-def]
    return load_text(CONFIG).options


def test_prefix_route_and_normalised_path(options) -> None:  # type: ignore[no-untyped-def]
    d, report = check_policy(options, "http://app.example.com/%61dmin/x", groups=["admins"])
    assert d.outcome is Outcome.ALLOW
    assert "route: #0" in report and "normalised from /%61dmin/x" in report
    d, _ = check_policy(options, "http://app.example.com//admin", groups=["users"])
    assert d.outcome is Outcome.DENY
    d, _ = check_policy(
        options, "http://app.example.com/admin", groups=["admins"], source_ip="192.0.2.7"
    )
    assert d.outcome is Outcome.DENY
    d, _ = check_policy(options, "http://app.example.com/admin")
    assert d.outcome is Outcome.NEEDS_LOGIN


def test_regex_route_and_claims(options) -> None:  # type: ignore[no-untyped-def]
    d, report = check_policy(
        options, "http://app.example.com/api/v2/x", claims={"scope": ["read", "write"]}
    )
    assert d.outcome is Outcome.ALLOW and "route: #1" in report
    d, _ = check_policy(options, "http://app.example.com/api/v2/x", claims={"scope": "write"})
    assert d.outcome is Outcome.DENY


def test_wildcard_host_and_fallthrough(options) -> None:  # type: ignore[no-untyped-def]
    d, report = check_policy(options, "http://other.example.com/", email="a@example.com")
    assert d.outcome is Outcome.ALLOW and "route: #2" in report
    d, report = check_policy(options, "http://app.example.com/apix", email="a@other.org")
    assert d.outcome is Outcome.DENY and "route: #2" in report
    with pytest.raises(NoRouteMatched):
        check_policy(options, "http://a.b.example.com/")
    with pytest.raises(NoRouteMatched):
        check_policy(options, "https://app.example.com/")
    with pytest.raises(InvalidPath):
        check_policy(options, "http://app.example.com/admin%2f")


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG)
    base = ["--config", str(cfg)]
    assert main([*base, "--url", "http://app.example.com/admin", "--groups", "admins,x"]) == 0
    out = capsys.readouterr().out
    assert "decision: ALLOW" in out and "groups" in out
    assert main([*base, "--url", "http://app.example.com/admin", "--groups", "x"]) == 3
    assert main([*base, "--url", "http://app.example.com/admin"]) == 4
    assert main([*base, "--url", "http://nowhere.test/"]) == 5
    assert (
        main(
            [
                *base,
                "--url",
                "http://app.example.com/api/v1/a",
                "--claim",
                "scope=read",
                "--claim",
                "scope=x",
            ]
        )
        == 0
    )
    assert main(["--url", "x"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("groups: admins", "gruops: admins"))
    assert main(["--config", str(bad), "--url", "http://app.example.com/admin"]) == 2
    assert "did you mean 'groups'" in capsys.readouterr().err
