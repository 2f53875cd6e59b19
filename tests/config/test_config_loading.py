"""Config loading: every problem with file:line and key, did-you-mean, Go durations, env overrides."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from gatehouse.config import load_file, load_text
from gatehouse.errors import ConfigError

BASE = "insecure_server: true\n"


def problems(text: str, env: dict[str, str] | None = None, source: str = "gh.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, source, env or {})
    return info.value.problems


def test_minimal_config_defaults() -> None:
    opts = load_text(BASE, env={}).options
    assert opts.address == ":443"
    assert opts.default_upstream_timeout == 30.0
    assert opts.routes == []


def test_every_problem_reported_with_line_and_key() -> None:
    text = (
        "insecure_server: true\n"  # 1
        "timeout_idle: soon\n"  # 2
        "routes:\n"  # 3
        "  - from: http://a.test\n"  # 4
        "    to: ftp://b.test\n"  # 5
        "  - from: http://c.test\n"  # 6
        "    to: http://d.test\n"  # 7
        "    timeout: 5 minutes\n"  # 8
    )
    found = problems(text)
    assert len(found) == 3, found
    assert any(p.startswith("gh.yaml:2:") and "timeout_idle" in p for p in found), found
    assert any(p.startswith("gh.yaml:5:") and "routes[0].to" in p for p in found), found
    assert any(p.startswith("gh.yaml:8:") and "routes[1].timeout" in p for p in found), found


@pytest.mark.parametrize(
    ("text", "line", "suggestion"),
    [
        ("insecure_server: true\ntimout_idle: 5s\n", 2, "timeout_idle"),
        (
            "insecure_server: true\nroutes:\n  - from: http://a.test\n    too: http://b.test\n",
            4,
            "to",
        ),
        (
            "insecure_server: true\nroutes:\n  - from: http://a.test\n    to: http://b\n    prefx: /a\n",
            5,
            "prefix",
        ),
        ("insecure_servr: true\n", 1, "insecure_server"),
    ],
)
def test_did_you_mean(text: str, line: int, suggestion: str) -> None:
    found = problems(text)
    assert any(
        f"gh.yaml:{line}:" in p and "unknown key" in p and repr(suggestion) in p for p in found
    ), found


def test_unknown_key_without_suggestion_is_still_an_error() -> None:
    found = problems(BASE + "completely_unrelated_thing: 1\n")
    assert any("completely_unrelated_thing" in p and "unknown key" in p for p in found), found


def test_yaml_syntax_error_has_a_line() -> None:
    found = problems(BASE + "routes:\n  - from: [unclosed\n")
    assert found[0].startswith("gh.yaml:")
    assert "invalid YAML" in found[0]


def test_duplicate_key_is_an_error() -> None:
    found = problems(BASE + "timeout_idle: 5s\ntimeout_idle: 6s\n")
    assert any("timeout_idle" in p and "twice" in p for p in found), found


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("2h", 7200.0),
        ("1m30s", 90.0),
        (10, 10.0),
        ("0", 0.0),
    ],
)
def test_go_durations(text: object, seconds: float) -> None:
    opts = load_text(BASE + yaml.safe_dump({"default_upstream_timeout": text}), env={}).options
    assert opts.default_upstream_timeout == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5 minutes", "1d", "-5s", "s", "1h-30m"])
def test_bad_durations(bad: str) -> None:
    found = problems(BASE + yaml.safe_dump({"timeout_read": bad}))
    assert any("timeout_read" in p for p in found), found


def test_env_overrides_win() -> None:
    text = "address: 127.0.0.1:1\ninsecure_server: false\ncertificate_file: x\ncertificate_key_file: y\n"
    opts = load_text(
        text,
        env={
            "ADDRESS": "127.0.0.1:9999",
            "INSECURE_SERVER": "true",
            "DEFAULT_UPSTREAM_TIMEOUT": "45s",
        },
    ).options
    assert opts.address == "127.0.0.1:9999"
    assert opts.insecure_server is True
    assert opts.default_upstream_timeout == 45.0


ROUTES_YAML = "- from: http://env.test\n  to: http://127.0.0.1:1\n"


@pytest.mark.parametrize(
    "value",
    [
        ROUTES_YAML,
        base64.b64encode(ROUTES_YAML.encode()).decode(),
        '[{"from": "http://env.test", "to": "http://127.0.0.1:1"}]',
    ],
    ids=["yaml", "base64", "json"],
)
def test_routes_from_env(value: str) -> None:
    text = BASE + "routes:\n  - from: http://file.test\n    to: http://127.0.0.1:2\n"
    opts = load_text(text, env={"ROUTES": value}).options
    assert [r.from_ for r in opts.routes] == ["http://env.test"]


def test_bad_env_value_is_reported() -> None:
    found = problems(BASE, env={"TIMEOUT_IDLE": "whenever"})
    assert any("timeout_idle" in p for p in found), found


def test_unknown_keys_in_nested_objects_are_errors() -> None:
    found = problems(
        BASE + "routes:\n  - from: http://a.test\n    redirect: {host_redirect: b.test, bogus: 1}\n"
    )
    assert any("bogus" in p for p in found), found


def test_route_rules() -> None:
    found = problems(BASE + "routes:\n  - from: http://a.test\n")
    assert any("exactly one of to, redirect or response" in p for p in found), found
    found = problems(
        BASE + "routes:\n  - from: http://a.test\n    to: http://b\n    prefix: /a\n    path: /b\n"
    )
    assert any("only one of prefix, path or regex" in p for p in found), found
    found = problems("routes:\n  - from: http://a.test\n    to: http://b\n")
    assert any("insecure_server" in p for p in found), found
    found = problems(BASE + "routes:\n  - from: http://a.test/path\n    to: http://b\n")
    assert any("routes[0].from" in p for p in found), found
    found = problems(BASE + "routes:\n  - from: http://a.test\n    to: http://b,0\n")
    assert any("weight" in p for p in found), found
    found = problems(BASE + "routes:\n  - from: http://a.test\n    to: http://b\n    regex: '(['\n")
    assert any("regular expression" in p for p in found), found


def test_weights_parsed() -> None:
    opts = load_text(
        BASE + "routes:\n  - from: http://a.test\n    to: ['http://b:1,3', 'http://c:2']\n", env={}
    ).options
    assert [(u.port, u.weight) for u in opts.routes[0].to or []] == [(1, 3), (2, 1)]


def test_load_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf.yaml"
    path.write_text(BASE + "timout_idle: 1s\n")
    with pytest.raises(ConfigError) as info:
        load_file(path, env={})
    assert info.value.problems[0].startswith(f"{path}:2:")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_file(tmp_path / "nope.yaml", env={})


def test_response_headers_defaults_and_removal() -> None:
    opts = load_text(
        BASE + "set_response_headers: {X-Frame-Options: DENY, X-XSS-Protection: '', X-New: v}\n",
        env={},
    ).options
    headers = opts.response_headers()
    assert headers["X-Frame-Options"] == "DENY"
    assert "X-XSS-Protection" not in headers
    assert headers["X-New"] == "v"
    assert headers["X-Content-Type-Options"] == "nosniff"
