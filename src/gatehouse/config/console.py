"""Console options (owned by ``console/``): where the admin console is served and who may use it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import field_validator

from .base import StrictModel


class ConsoleOptions(StrictModel):
    """The admin console (gatehouse addition): routes, policies and sessions in a browser."""

    #: The console's external URL (`https://console.example.com`); gatehouse serves the console
    #: on that host. Unset: no console. gatehouse addition.
    console_url: str | None = None
    #: PPL policy deciding who may use the console (same rules as a route's `policy`); every
    #: page and change is checked against it. Unset: nobody. gatehouse addition.
    console_policy: Any = None
    #: File the console appends one JSON line to per change (who, what, config digest before
    #: and after); unset = `console-audit.log` in `data_dir`. gatehouse addition.
    console_audit_log: str | None = None

    @field_validator("console_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"invalid URL {value!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an absolute http:// or https:// URL, got {value!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError("must be scheme and host only (the console is served at its root)")
        return value.rstrip("/")

    @property
    def console_host(self) -> str | None:
        """The console's host name in lower case, or ``None`` without a console."""
        if self.console_url is None:
            return None
        return (urlsplit(self.console_url).hostname or "").lower()
