"""HTML pages gatehouse renders itself (errors, user info, signed out), from Jinja2 templates."""

from .render import render

__all__ = ["render"]
