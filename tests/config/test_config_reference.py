"""The configuration reference in docs/ is generated from the options model and current."""

from __future__ import annotations

import re
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


#: reST that means nothing in Markdown: double backticks and roles such as :class:`X`.
_REST = re.compile(r"``|:[a-z]+:`")


def _rows(text: str) -> list[list[str]]:
    """The cells of every key row (``| `key` | type | default | meaning |``)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_every_key_has_a_meaning() -> None:
    rows = _rows(reference_markdown())
    assert len(rows) > 100  # every table was read
    missing = [cells[0] for cells in rows if len(cells) != 4 or not cells[3]]
    assert not missing, f"keys without a meaning (add a #: comment above the field): {missing}"


def test_no_rest_markup_in_the_reference() -> None:
    leaks = [line for line in reference_markdown().splitlines() if _REST.search(line)]
    assert not leaks, f"reST markup in the Markdown reference (use single backticks): {leaks}"
