"""Render the package's Jinja2 templates with autoescaping (nothing user-supplied is trusted).

Jinja2 is imported at the first page rendered, not with this module: the proxy imports
this module for its error pages, and a config that serves no page never needs Jinja2
(~40 ms of start-up).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment


@lru_cache(maxsize=1)
def _env() -> Environment:
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("gatehouse.pages", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """Render ``template`` (a file name under ``pages/templates``) with ``context``."""
    return _env().get_template(template).render(**context)
