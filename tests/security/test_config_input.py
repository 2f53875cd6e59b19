"""Hostile config text: a YAML alias bomb ("billion laughs") is refused with one located
problem before it is expanded, wherever config text enters (file, console apply, a
structured environment override), and real configs that use aliases still load."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from gatehouse.config.loader import MAX_ALIAS_VALUES, load_text
from gatehouse.console.apply import parse_only
from gatehouse.errors import ConfigError
from support.gatehouse import run_cli

ROUTE = "routes:\n  - from: https://a.example.com\n    to: http://127.0.0.1:1\n"


def bomb(levels: int = 9, width: int = 10) -> str:
    """Anchors that each alias the previous one ``width`` times: ``width**levels`` values
    from a few hundred bytes (9 levels of 10: a billion)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_alias_bomb_in_a_file_is_one_located_problem() -> None:
    before = _max_rss_mib()
    with pytest.raises(ConfigError) as caught:
        load_text(ROUTE + bomb(), "gatehouse.yaml")
    assert len(caught.value.problems) == 1
    problem = caught.value.problems[0]
    assert problem.startswith("gatehouse.yaml:")
    assert "aliases expand to more than" in problem
    # Refused before the copy: the process did not grow by the expansion.
    assert _max_rss_mib() - before < 200


def test_alias_bomb_through_the_console_apply_is_refused() -> None:
    result = parse_only(ROUTE + bomb(), "console")
    assert result.loaded is None
    assert any("aliases expand to more than" in p for p in result.problems)


def test_alias_bomb_in_a_structured_environment_override_is_refused() -> None:
    env = {"ROUTES": bomb() + "x: *l9\n"}
    with pytest.raises(ConfigError) as caught:
        load_text(ROUTE, "gatehouse.yaml", env=env)
    assert any("aliases expand to more than" in p for p in caught.value.problems)


def test_gatehouse_check_refuses_the_bomb_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.yaml"
    path.write_text(ROUTE + bomb())
    check = run_cli("check", "-c", str(path), timeout=60)
    assert check.returncode != 0
    assert "aliases expand to more than" in check.stderr
    assert "Traceback" not in check.stderr


def test_configs_that_use_aliases_for_repeated_policies_still_load() -> None:
    first = (
        "  - from: https://r0.example.com\n    to: http://127.0.0.1:1\n    policy: &policy\n"
        "      - allow:\n          or:\n            - email: {is: a@example.com}\n"
    )
    routes = first + "".join(
        f"  - from: https://r{i}.example.com\n    to: http://127.0.0.1:1\n    policy: *policy\n"
        for i in range(1, 2000)
    )
    loaded = load_text("routes:\n" + routes, "gatehouse.yaml")
    assert len(loaded.options.routes) == 2000
    assert MAX_ALIAS_VALUES >= 1_000_000  # 10,000 routes x 100-value policies fit
