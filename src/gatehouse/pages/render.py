"""Render the package's Jinja2 templates with autoescaping (nothing user-supplied is trusted)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("gatehouse.pages", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """Render ``template`` (a file name under ``pages/templates``) with ``context``."""
    return _env().get_template(template).render(**context)
