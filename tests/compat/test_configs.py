"""Pomerium's config examples, checked the way ``gatehouse check`` checks a config.

Each case of ``configs/index.yaml`` is a fixture file extracted from Pomerium's repositories
(``extract_configs.py``). It passes when it loads (:func:`load_text`) and has no start-up
problem (:func:`startup_problems` with a scratch data directory). A case that gatehouse
cannot take yet carries ``xfail: <why>``; the test fails when such a case starts passing
(remove its ``xfail``) and when any other case stops passing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse.config.loader import load_text
from gatehouse.errors import ConfigError
from gatehouse.preflight import startup_problems

HERE = Path(__file__).parent / "configs"
FIXTURES = HERE / "_fixtures"
INDEX: list[dict[str, Any]] = yaml.safe_load((HERE / "index.yaml").read_text())["cases"]
_INLINE = re.compile(r"@FIXTURES@/([\w.]+\.b64)")


def config_text(name: str) -> str:
    """A case's YAML with the fixture placeholders filled in."""
    text = (HERE / name).read_text()
    # Inline values (base64 of a PEM) are the file's contents; other fixtures are paths.
    text = _INLINE.sub(lambda m: (FIXTURES / m[1]).read_text().strip(), text)
    return text.replace("@FIXTURES@", str(FIXTURES))


def problems(name: str) -> list[str]:
    """Everything ``gatehouse check`` would report for the case (empty: it would start)."""
    try:
        loaded = load_text(config_text(name), name, env={})
    except ConfigError as exc:
        return list(exc.problems)
    return startup_problems(loaded, scratch_data_dir=True)


@pytest.mark.parametrize("case", INDEX, ids=[c["file"] for c in INDEX])
def test_config_case(case: dict[str, Any]) -> None:
    found = problems(case["file"])
    if "xfail" in case:
        assert found, f"now starts; remove its xfail ({case['xfail']}): {case['source']}"
    else:
        assert not found, f"{case['source']}: " + "; ".join(found)
