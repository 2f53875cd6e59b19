"""Generate the configuration reference from the options models, so it never drifts.

Each option's description is the ``#:`` comment above its field in the model source;
types and defaults come from the models themselves. ``gatehouse reference`` prints it;
docs/configuration.md is its output (a test keeps the two equal).
"""

from __future__ import annotations

import inspect
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from .auth import AuthOptions, IdpUser
from .durations import format_duration
from .identity import IdentityOptions
from .mtls import DownstreamMTLS
from .options import IGNORED_POMERIUM_KEYS, Options
from .pomerium_keys import (
    ALWAYS_ON,
    IGNORED,
    NOT_SUPPORTED,
    ONLY_VALUE,
    ROUTE_IGNORED,
    ROUTE_NOT_SUPPORTED,
)
from .rewrites import RewriteHeader
from .routes import DirectResponse, RedirectAction, RouteOptions
from .server import ServerOptions
from .sub_policies import SubPolicy
from .upstream_health import GrpcHealthCheck, HealthCheck, HttpHealthCheck, OutlierDetection

_FIELD = re.compile(r"^\s+(\w+):\s")


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the ``#:`` comment lines right above it, for ``model`` and its bases."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            m = _FIELD.match(line)
            if m and pending:
                out[m.group(1)] = " ".join(pending)
            if not stripped.startswith("#"):
                pending = []
    return out


def _unannotated(annotation: Any) -> Any:
    """The type without ``Annotated`` validators, also inside ``X | None``."""
    if get_origin(annotation) is Annotated:
        return _unannotated(get_args(annotation)[0])
    args = get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType) and any(
        get_origin(arg) is Annotated for arg in args
    ):
        plain = tuple(_unannotated(arg) for arg in args)
        return " | ".join("None" if arg is type(None) else str(arg) for arg in plain)
    return annotation


def _type(annotation: Any, metadata: str = "") -> str:
    if "parse_duration" in metadata or "parse_duration" in str(annotation):
        return "duration" + (" | None" if "Optional[" in str(annotation) else "")
    text = str(_unannotated(annotation))
    text = re.sub(
        r"typing\.|gatehouse\.config\.\w+\.|<class '|'>|Annotated\[|, .*?Validator.*?\]", "", text
    )
    text = text.replace("NoneType", "null")
    return text


def _default(field: Any, name: str) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "—"
    if value == "":
        return '`""`'
    metadata = " ".join(str(m) for m in field.metadata)
    if isinstance(value, float) and (
        "parse_duration" in metadata or "Duration" in str(field.annotation)
    ):
        return f"`{format_duration(value)}`"
    if isinstance(value, float) and name.startswith(
        ("timeout", "cookie_expire", "default_upstream")
    ):
        return f"`{format_duration(value)}`"
    if value in ([], {}):
        return "empty"
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def _table(model: type[BaseModel], skip: set[str] | None = None) -> list[str]:
    docs = _comments(model)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if skip and name in skip:
            continue
        key = field.alias or name
        type_text = _type(field.annotation, " ".join(map(str, field.metadata))).replace("|", "\\|")
        rows.append(f"| `{key}` | {type_text} | {_default(field, name)} | {docs.get(name, '')} |")
    return rows


def reference_markdown() -> str:
    """The whole reference as Markdown."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the options models (`gatehouse reference`). Keys follow Pomerium's;",
        "every global key can also be set from the environment as its upper-case name,",
        "which wins over the file. Durations are Go-style: `30s`, `5m`, `1h30m`.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel], set[str] | None]] = [
        ("Server, TLS, timeouts and limits", ServerOptions, None),
        ("Authentication, identity provider, cookies and sessions", AuthOptions, None),
        ("Identity assertions and signing keys", IdentityOptions, None),
    ]
    for title, model, skip in sections:
        out += [f"## {title}", "", *_table(model, skip), ""]
    own = (
        set(ServerOptions.model_fields)
        | set(AuthOptions.model_fields)
        | set(IdentityOptions.model_fields)
    )
    out += ["## Other global keys", "", *_table(Options, own), ""]
    out += ["## Routes (`routes:` entries)", "", *_table(RouteOptions), ""]
    out += ["### `redirect` action", "", *_table(RedirectAction), ""]
    out += ["### `response` action", "", *_table(DirectResponse), ""]
    out += ["### `rewrite_response_headers` entries", "", *_table(RewriteHeader), ""]
    out += ["### `sub_policies` entries", "", *_table(SubPolicy), ""]
    out += ["### `health_checks` entries", "", *_table(HealthCheck), ""]
    out += ["#### `http_health_check`", "", *_table(HttpHealthCheck), ""]
    out += ["#### `grpc_health_check`", "", *_table(GrpcHealthCheck), ""]
    out += ["### `outlier_detection`", "", *_table(OutlierDetection), ""]
    out += ["### `downstream_mtls`", "", *_table(DownstreamMTLS), ""]
    out += ["### Built-in IdP users (`idp_users:` entries)", "", *_table(IdpUser), ""]
    out += ["## Pomerium keys accepted and ignored (with a warning)", ""]
    out += [f"- `{k}`: {v}" for k, v in {**IGNORED_POMERIUM_KEYS, **IGNORED}.items()]
    out += [f"- `routes[].{k}`: {v}" for k, v in ROUTE_IGNORED.items()]
    out += [f"- `{k}: true`: {v} (`false` is refused)" for k, v in ALWAYS_ON.items()]
    out += [
        f"- `{k}` and `routes[].{k}`: `{v}` only; other values are refused: {why}"
        for k, (v, why) in ONLY_VALUE.items()
    ]
    out += ["", "## Pomerium keys refused as not supported", ""]
    out += [f"- `{k}`: {v}" for k, v in NOT_SUPPORTED.items()]
    out += [f"- `routes[].{k}`: {v}" for k, v in ROUTE_NOT_SUPPORTED.items()]
    return "\n".join(out) + "\n"
