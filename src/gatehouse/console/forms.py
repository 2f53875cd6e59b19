"""The route editor's fields: how each route key is shown in a form and written back.

Theory of operation: every field renders the route's current YAML value as form text
(:func:`form_values`). On apply, a field whose submitted text equals the current value's
text is left alone — the key, its comments and its position stay exactly as they were —
and only changed fields are written (:func:`apply_form`). So the operator's file changes
only where the operator changed something.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from ..config.routes import RouteOptions
from .configfile import ConfigFileError, dump_node, parse_node

TEXT, BOOL, LINES, HEADERS, YAML_TEXT, MATCH = "text", "bool", "lines", "headers", "yaml", "match"
MATCH_KINDS = ("prefix", "path", "regex")


@dataclass(frozen=True, slots=True)
class Field:
    """One editor field: the route key it edits, its kind and where it is shown."""

    key: str
    kind: str
    tab: str
    label: str
    help: str = ""
    #: Edits the top-level key of that name (the same for every route), not the route's.
    global_key: bool = False


def _tls_fields() -> list[Field]:
    """Every ``tls_*`` key routes have (the TLS tab follows the model as it grows)."""
    out = []
    for name, info in RouteOptions.model_fields.items():
        key = info.alias or name
        if not key.startswith("tls_"):
            continue
        annotation = str(info.annotation)
        kind = BOOL if annotation in ("<class 'bool'>", "bool") else TEXT
        out.append(Field(key, kind, "tls", key, _first_doc_line(key)))
    return out


def _first_doc_line(key: str) -> str:
    from ..config.reference import _comments

    return _comments(RouteOptions).get(key, "")


FIELDS: tuple[Field, ...] = (
    Field("name", TEXT, "general", "Name", "shown in logs, metrics and here"),
    Field("from", TEXT, "general", "From", "external URL: https://host (scheme and host only)"),
    Field("to", LINES, "general", "To", "upstream URL(s), one per line; URL,weight to balance"),
    Field("match", MATCH, "general", "Path matching", "prefix, exact path or regular expression"),
    Field("prefix_rewrite", TEXT, "general", "Prefix rewrite", "replaces the matched prefix"),
    Field("regex_rewrite_pattern", TEXT, "general", "Regex rewrite pattern"),
    Field("regex_rewrite_substitution", TEXT, "general", "Regex rewrite substitution"),
    Field("timeout", TEXT, "general", "Timeout", "upstream response head, e.g. 30s (0: none)"),
    Field("idle_timeout", TEXT, "general", "Idle timeout", "streams and tunnels, e.g. 5m"),
    Field("allow_websockets", BOOL, "general", "Allow WebSockets"),
    Field("allow_spdy", BOOL, "general", "Allow SPDY (kubectl exec)"),
    Field(
        "pass_identity_headers",
        BOOL,
        "headers",
        "Pass Identity Headers",
        "send the signed X-Pomerium-Jwt-Assertion (and claim headers) upstream",
    ),
    Field(
        "jwt_claims_headers",
        HEADERS,
        "headers",
        "JWT claims headers (all routes)",
        "Header: claim, one per line; a global key",
        global_key=True,
    ),
    Field("set_request_headers", HEADERS, "headers", "Set request headers", "Name: value"),
    Field("remove_request_headers", LINES, "headers", "Remove request headers", "one per line"),
    Field("set_response_headers", HEADERS, "headers", "Set response headers", "Name: value"),
    Field("preserve_host_header", BOOL, "headers", "Preserve Host header"),
    Field("host_rewrite", TEXT, "headers", "Host rewrite", "Host sent upstream"),
    Field("policy", YAML_TEXT, "policy", "Policy (PPL)", "YAML: a rule or a list of rules"),
    *_tls_fields(),
)
FIELDS_BY_KEY = {f.key: f for f in FIELDS}
TABS = (("general", "General"), ("headers", "Headers"), ("policy", "Policy"), ("tls", "TLS"))
#: Route keys whose problems are shown beside another field.
PROBLEM_FIELD = {
    "prefix": "match",
    "path": "match",
    "regex": "match",
    "allowed_users": "policy",
    "allowed_domains": "policy",
    "allowed_idp_claims": "policy",
    "allow_public_unauthenticated_access": "policy",
    "allow_any_authenticated_user": "policy",
    "cors_allow_preflight": "policy",
}


def _bool_default(key: str, top: Mapping[str, Any]) -> bool:
    if key == "pass_identity_headers":
        return top.get("pass_identity_headers") is True
    info = RouteOptions.model_fields.get(key)
    return bool(info.default) if info is not None and isinstance(info.default, bool) else False


def _render(f: Field, value: Any, top: Mapping[str, Any]) -> str:
    if f.kind == BOOL:
        effective = value if isinstance(value, bool) else _bool_default(f.key, top)
        return "on" if effective else ""
    if value is None:
        return ""
    if f.kind == LINES:
        items = value if isinstance(value, list) else str(value).split(",")
        return "\n".join(str(v).strip() for v in items)
    if f.kind == HEADERS:
        if isinstance(value, Mapping):
            return "\n".join(f"{k}: {'' if v is None else v}" for k, v in value.items())
        return "\n".join(p.strip().replace(":", ": ", 1) for p in str(value).split(",") if p)
    if f.kind == YAML_TEXT:
        return textwrap.dedent(dump_node(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def normalize(text: str) -> str:
    """Form text compared without line-ending and trailing-space differences."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def form_values(route: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, str]:
    """Every field's text for a route as it is in the file."""
    values: dict[str, str] = {}
    for f in FIELDS:
        if f.kind == MATCH:
            kind = next((k for k in MATCH_KINDS if route.get(k) is not None), "")
            values["match_kind"] = kind
            values["match_value"] = "" if not kind else str(route.get(kind))
            continue
        source = top if f.global_key else route
        values[f.key] = _render(f, source.get(f.key), top)
    return values


def submitted_values(form: Mapping[str, str]) -> dict[str, str]:
    """The fields' text from a submitted form (an unchecked box is absent: ``""``)."""
    values = {f.key: form.get(f.key, "") for f in FIELDS if f.kind != MATCH}
    values["match_kind"] = form.get("match_kind", "")
    values["match_value"] = form.get("match_value", "")
    return values


def plain(text: str) -> str:
    """``text`` as a YAML string the config loader reads back as that same string.

    The loader reads YAML 1.1 (``yes``, ``on``, ``1e3`` are not strings there), while
    ruamel.yaml writes YAML 1.2: such values are written quoted.
    """
    try:
        same = yaml.safe_load(text) == text
    except yaml.YAMLError:
        same = False
    return text if same and "\n" not in text else DoubleQuotedScalarString(text)


def _parse(f: Field, text: str, top: Mapping[str, Any]) -> Any:
    """The YAML value for a field's text; ``None`` removes the key.

    Raises:
        ValueError: text this field cannot hold (shown beside it).
    """
    text = normalize(text)
    if f.kind == BOOL:
        checked = text == "on"
        return None if checked == _bool_default(f.key, top) else checked
    if not text:
        return None
    if f.kind == TEXT:
        return plain(text)
    if f.kind == LINES:
        items = [plain(line.strip()) for line in text.split("\n") if line.strip()]
        if f.key == "to" and len(items) == 1:
            return items[0]
        seq = CommentedSeq(items)
        return seq
    if f.kind == HEADERS:
        out = CommentedMap()
        for line in text.split("\n"):
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise ValueError(f"expected Name: value, got {line.strip()!r}")
            out[plain(name.strip())] = plain(value.strip())
        return out
    if f.kind == YAML_TEXT:
        try:
            return parse_node(text)
        except ConfigFileError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError(f"unknown field kind {f.kind}")  # pragma: no cover


def _set(node: CommentedMap, key: str, value: Any, keep_style: bool = False) -> None:
    if value is None:
        node.pop(key, None)
        return
    old = node.get(key)
    # A list or map written inline (``[a, b]``) stays inline (YAML typed by the operator
    # keeps its own style).
    for kind in (CommentedSeq, CommentedMap) if keep_style else ():
        if isinstance(old, kind) and isinstance(value, kind) and old.fa.flow_style():
            value.fa.set_flow_style()
    node[key] = value


def apply_form(
    route: CommentedMap,
    top: CommentedMap,
    submitted: Mapping[str, str],
    current: Mapping[str, str],
) -> dict[str, list[str]]:
    """Write the changed fields into ``route`` (and global keys into ``top``).

    Returns:
        Problems by field name (nothing is written for a field with a problem).
    """
    errors: dict[str, list[str]] = {}
    for f in FIELDS:
        if f.kind == MATCH:
            kind, value = (
                submitted.get("match_kind", ""),
                normalize(submitted.get("match_value", "")),
            )
            if (kind, value) == (current.get("match_kind", ""), current.get("match_value", "")):
                continue
            if kind not in ("", *MATCH_KINDS):
                errors.setdefault("match", []).append(f"unknown path matching {kind!r}")
                continue
            for k in MATCH_KINDS:
                route.pop(k, None)
            if kind:
                route[kind] = plain(value)
            continue
        text = submitted.get(f.key, "")
        if normalize(text) == normalize(current.get(f.key, "")):
            continue
        try:
            value = _parse(f, text, top)
        except ValueError as exc:
            errors.setdefault(f.key, []).append(str(exc))
            continue
        _set(top if f.global_key else route, f.key, value, f.kind in (LINES, HEADERS))
    return errors
