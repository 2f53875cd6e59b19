"""The configuration reference in docs/ is generated from the options model and current."""

from __future__ import annotations

from pathlib import Path

from gatehouse.config.options import Options
from gatehouse.config.reference import reference_markdown

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_reference_doc_is_current() -> None:
    assert DOC.read_text() == reference_markdown(), (
        "run: gatehouse reference > docs/configuration.md"
    )


def test_every_global_key_is_documented() -> None:
    text = reference_markdown()
    for name, field in Options.model_fields.items():
        assert f"`{field.alias or name}`" in text
