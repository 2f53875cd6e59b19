"""Render the console's Jinja2 templates (autoescaped: route names and policies are data)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("gatehouse.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


@lru_cache(maxsize=4)
def static(name: str) -> bytes:
    """A file from ``console/static`` (read once)."""
    return resources.files("gatehouse.console").joinpath("static", name).read_bytes()
