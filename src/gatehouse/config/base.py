"""Shared pieces of the options models: the strict base model and small field types."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict


class StrictModel(BaseModel):
    """Base of every options model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _comma_list(value: Any) -> Any:
    """Accept ``"a,b"`` or ``"a b"`` as well as a YAML list (Pomerium does for string lists)."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


def any_case(*choices: str) -> BeforeValidator:
    """A validator mapping any spelling of one of ``choices`` to it: Pomerium reads enum
    values case-insensitively (``cookie_same_site: Lax``, ``log_level: INFO``)."""
    canonical = {choice.lower(): choice for choice in choices}

    def pick(value: Any) -> Any:
        return canonical.get(value.lower(), value) if isinstance(value, str) else value

    return BeforeValidator(pick)


#: A list of strings that may also be written as one comma- or space-separated string.
StringList = Annotated[list[str], BeforeValidator(_comma_list)]


def _header_map(value: Any) -> Any:
    """Accept ``{name: value}`` or ``"Name:value,Name2:value2"`` for a header map."""
    if isinstance(value, str):
        out: dict[str, str] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            name, sep, val = item.partition(":")
            if not sep:
                raise ValueError(f"expected Name:value, got {item!r}")
            out[name.strip()] = val.strip()
        return out
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return value


def _validate_header_names(value: dict[str, str]) -> dict[str, str]:
    """Header names must be tokens; values must carry no CR, LF or NUL (RFC 9110 §5)."""
    for name, val in value.items():
        if not name or any(c in name for c in ' \t\r\n:()<>@,;\\"/[]?={}') or not name.isascii():
            raise ValueError(f"invalid header name {name!r}")
        if any(c in val for c in "\r\n\x00"):
            raise ValueError(f"header {name!r} has a value with CR, LF or NUL")
    return value


#: A header map written as a YAML mapping or a ``Name:value,...`` string.
HeaderMap = Annotated[
    dict[str, str], BeforeValidator(_header_map), AfterValidator(_validate_header_names)
]


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(text: str) -> str | None:
    """An Origin (RFC 6454 §6.1) as ``scheme://host[:port]``, lower case, without a default
    port; ``None`` for ``null`` or anything that is not a serialised origin."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep or not scheme or not rest or "/" in rest or "@" in rest or "?" in rest:
        return None
    scheme, rest = scheme.lower(), rest.lower()
    host, colon, port = rest.rpartition(":") if not rest.endswith("]") else (rest, "", "")
    if colon:
        if not port.isdigit() or not 0 < int(port) < 65536 or not host:
            return None
        if int(port) == _DEFAULT_PORTS.get(scheme):
            rest = host
        else:
            rest = f"{host}:{int(port)}"
    return f"{scheme}://{rest}"


def normalize_origin_setting(text: str) -> str:
    """:func:`normalize_origin` for a configured origin; raises ValueError when it is not one."""
    origin = normalize_origin(text.rstrip("/"))
    if origin is None:
        raise ValueError(f"{text!r} is not an origin (scheme://host[:port])")
    return origin
