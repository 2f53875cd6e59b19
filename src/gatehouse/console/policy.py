"""The console's policy work: ``console_policy`` compiled, one-line summaries for the
routes list, and the editor's dry run (the evaluator of ``gatehouse check-policy``)."""

from __future__ import annotations

import json
from typing import Any

from ..authorize.decision import Decision
from ..authorize.dryrun import dry_run_session, evaluate_route
from ..authorize.policy import Policy, compile_route_policy
from ..config.options import Options
from ..config.routes import RouteOptions
from ..errors import ConfigError, InvalidPath
from ..proxy.paths import normalize_request_path

#: The dry-run form's fields.
DRY_FIELDS = ("dr_email", "dr_groups", "dr_claims", "dr_method", "dr_path")


def console_policy(options: Options) -> Policy:
    """Compile ``console_policy`` as a route policy (no rules: nobody is allowed).

    Raises:
        ConfigError: the policy does not compile; problems are named ``console_policy…``.
    """
    route = RouteOptions.model_validate(
        {"from": options.console_url, "to": "http://127.0.0.1:1", "policy": options.console_policy}
    )
    try:
        policy = compile_route_policy(route, 0)
    except ConfigError as exc:
        raise ConfigError(
            [p.replace("routes[0].policy", "console_policy", 1) for p in exc.problems]
        ) from None
    policy.route = "console"
    return policy


def policy_summary(policy: Policy) -> str:
    """One line for the routes list: ``allow or: email, groups; deny and: …``."""
    if policy.allows_everyone:
        return "public"
    if not policy.clauses:
        return "no rules: nobody"
    parts = []
    for clause in policy.clauses:
        names = sorted({c.rsplit("->", 1)[-1].split(":", 1)[0].strip() for c in clause.criteria})
        parts.append(f"{clause.action} {clause.operator.value}: {', '.join(names) or '-'}")
    return "; ".join(parts)


def _claims(text: str) -> dict[str, Any]:
    """``name=value`` lines (a JSON value when it parses) or one JSON object."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError("claims: not a JSON object") from None
        if not isinstance(value, dict):
            raise ValueError("claims: not a JSON object")
        return value
    claims: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, raw = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"claims: expected name=value, got {line.strip()!r}")
        try:
            claims[key.strip()] = json.loads(raw)
        except ValueError:
            claims[key.strip()] = raw.strip()
    return claims


def dry_run_result(route: Any, index: int, inputs: dict[str, str]) -> dict[str, Any]:
    """Decide the dry-run request against the edited route, as ``check-policy`` would."""
    email = inputs.get("dr_email", "").strip() or None
    groups = [g.strip() for g in inputs.get("dr_groups", "").split(",") if g.strip()]
    method = inputs.get("dr_method", "").strip().upper() or "GET"
    raw_path = inputs.get("dr_path", "").strip() or "/"
    try:
        claims = _claims(inputs.get("dr_claims", ""))
        path = normalize_request_path(raw_path if raw_path.startswith("/") else "/" + raw_path)
    except InvalidPath as exc:
        return {"error": f"the proxy would refuse this path (400): {exc}"}
    except ValueError as exc:
        return {"error": str(exc)}
    session = dry_run_session(email, groups, claims)
    try:
        decision: Decision = evaluate_route(route, index, path, session, method=method)
    except ConfigError as exc:
        return {"error": "; ".join(exc.problems)}
    return {
        "outcome": decision.outcome.value,
        "clauses": decision.clause_results(),
        "reasons": decision.reasons(),
        "explain": decision.explain(),
        "who": "anonymous" if session is None else (session.email or session.user_id),
        "request": f"{method} {path}",
    }
