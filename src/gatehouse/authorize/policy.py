"""A route's compiled policy and its evaluation: :class:`Policy`, :func:`compile_route_policy`.

Theory of operation. At config load a route's legacy options and its PPL ``policy`` are
turned into clauses (one operator block of one ``allow``/``deny`` rule), legacy first as
in Pomerium's ``ToPPL``; each criterion compiles to a closure. Evaluating a request runs
every criterion of every clause once — Pomerium's reasons are unions over all of them,
and "sign in first" depends on those reasons — and combines them:

- a clause's value follows its operator: ``and`` all, ``or`` any, ``not`` none,
  ``nor`` not all; its *reasons* are those of the criteria whose effective value (after
  the inversion of ``not``/``nor``) equals the clause's value;
- ``allow`` is the OR of the allow clauses, ``deny`` the OR of the deny clauses; the
  reasons of a side are those of its matching clauses, or of all its clauses when none
  matches.

The outcome, in order (Pomerium's ``handleResult``): NEEDS_LOGIN if either side's reasons
include ``user-unauthenticated`` (the answer depends on a user we do not know yet, even
when a deny rule about the request alone also matches: signing in does not get past that
rule, it only comes first); DENY if a deny clause matches; ALLOW if an allow clause
matches; DENY otherwise (also when there are no rules at all).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..config.routes import RouteOptions
from ..errors import ConfigError
from .clause_index import SideIndex, clause_guard, criterion_keys, session_keys
from .criteria import CRITERIA, Criterion
from .decision import (
    REASON_USER_UNAUTHENTICATED,
    ClauseInfo,
    CriterionOutcome,
    Decision,
    Operator,
    Outcome,
    RawClause,
)
from .input import PolicyInput
from .ppl import ClauseSpec, CriterionSpec, parse_policy
from .problems import Loc, PolicyProblem, PolicySyntaxError, format_loc

_AND, _OR, _NOT, _NOR = 0, 1, 2, 3
_OP_CODES = {Operator.AND: _AND, Operator.OR: _OR, Operator.NOT: _NOT, Operator.NOR: _NOR}
_UNAUTH = REASON_USER_UNAUTHENTICATED
_ALLOW, _DENY, _LOGIN = Outcome.ALLOW, Outcome.DENY, Outcome.NEEDS_LOGIN

#: (is_deny, operator code, criteria)
_Compiled = tuple[bool, int, tuple[Criterion, ...]]
#: Criteria that answer "user-unauthenticated" only without a session: with a session,
#: a policy of these alone is decided by the clause index (see :meth:`Policy.evaluate`).
_INDEXABLE_CRITERIA = frozenset(
    {
        "accept", "reject", "authenticated_user", "cors_preflight", "email", "domain",
        "user", "claim", "groups", "http_method", "http_path", "source_ip", "date",
        "day_of_week", "time_of_day", "client_certificate", "invalid_client_certificate",
    }
)  # fmt: skip
#: Policies with fewer clauses are evaluated whole: the index would not pay for itself
#: (and 10,000 one-rule routes compile faster without it).
INDEX_MIN_CLAUSES = 4


class Policy:
    """A route's rules, compiled; immutable and safe to share between requests."""

    __slots__ = (
        "_allow",
        "_compiled",
        "_deny",
        "_keyed",
        "allows_everyone",
        "clauses",
        "reads_cors_headers",
        "route",
    )

    def __init__(
        self,
        route: str,
        clauses: Sequence[ClauseInfo],
        compiled: Sequence[_Compiled],
        guards: Sequence[frozenset[tuple[str, str]] | None] | None = None,
    ):
        """``guards``: per clause, the keys of :mod:`.clause_index` (``None`` for a policy
        that must always be evaluated whole)."""
        self.route = route
        self.clauses: tuple[ClauseInfo, ...] = tuple(clauses)
        self._compiled: tuple[_Compiled, ...] = tuple(compiled)
        self._deny: SideIndex | None = None
        self._allow: SideIndex | None = None
        if guards is not None:
            pairs = list(zip(self._compiled, guards, strict=True))
            self._deny = SideIndex((op, c, g) for (d, op, c), g in pairs if d)
            self._allow = SideIndex((op, c, g) for (d, op, c), g in pairs if not d)
        self._keyed = self._allow is not None and (
            self._allow.guarded or (self._deny is not None and self._deny.guarded)
        )
        #: True when the policy is only ``accept`` allows (a public route): nothing to evaluate.
        self.allows_everyone: bool = bool(self.clauses) and all(
            c.action == "allow"
            and c.operator.value in ("or", "and")
            and bool(c.criteria)
            and all(_criterion_name(label) == "accept" for label in c.criteria)
            for c in self.clauses
        )
        #: Whether any criterion reads ``Origin`` / ``Access-Control-Request-Method``
        #: (only ``cors_preflight``): the pipeline skips looking them up otherwise.
        self.reads_cors_headers: bool = any(
            _criterion_name(label) == "cors_preflight" for c in self.clauses for label in c.criteria
        )

    def __len__(self) -> int:
        return len(self.clauses)

    def for_route(self, route: str) -> Policy:
        """These rules for another route (decisions name ``route``): every compiled part
        is immutable, so the two share them instead of compiling the same rules twice."""
        if route == self.route:
            return self
        other = Policy(route, (), ())
        other.clauses = self.clauses
        other._compiled = self._compiled
        other._deny = self._deny
        other._allow = self._allow
        other._keyed = self._keyed
        other.allows_everyone = self.allows_everyone
        other.reads_cors_headers = self.reads_cors_headers
        return other

    def __repr__(self) -> str:
        return f"<Policy {self.route!r}: {len(self.clauses)} clauses>"

    def evaluate(self, inp: PolicyInput) -> Decision:
        """Decide one request (see the module docstring for the rules).

        With a session, no criterion answers "sign in first", so the outcome is: DENY if a
        deny clause matches, else ALLOW if an allow clause does, else DENY — decided from
        the clauses the session's keys select (:mod:`.clause_index`); the per-clause
        record is made only if a report asks for it. Without one, every clause counts.
        """
        allow_side = self._allow
        deny_side = self._deny
        session = inp.session
        if session is None or allow_side is None or deny_side is None:
            return self.evaluate_all(inp)
        keys = session_keys(session) if self._keyed else None
        if deny_side.any_match(inp, keys):
            outcome = _DENY
        elif allow_side.any_match(inp, keys):
            outcome = _ALLOW
        else:
            outcome = _DENY
        return Decision(outcome, self.route, self.clauses, None, lambda: self._record(inp))

    def _record(self, inp: PolicyInput) -> tuple[RawClause, ...]:
        return self.evaluate_all(inp).raw

    def evaluate_all(self, inp: PolicyInput) -> Decision:
        """Decide one request evaluating every criterion of every clause (the reference
        evaluator: Pomerium's reasons are unions over all of them)."""
        raw: list[RawClause] = []
        allow = allow_unauth_hit = allow_unauth_any = False
        deny = deny_unauth_hit = deny_unauth_any = False
        for is_deny, op, crits in self._compiled:
            results: Sequence[CriterionOutcome]
            if len(crits) == 1:
                # The common one-criterion clause: and/or keep its value, not/nor invert
                # it; an unauthenticated result is always among the deciding ones.
                result = crits[0](inp)
                matched = result[0] is (op <= _OR)
                relevant_unauth = result[1] == _UNAUTH
                results = (result,)
            else:
                results, matched, relevant_unauth = _combine(op, [c(inp) for c in crits])
            raw.append((matched, results))
            if is_deny:
                if matched:
                    deny = True
                    if relevant_unauth:
                        deny_unauth_hit = True
                elif relevant_unauth:
                    deny_unauth_any = True
            else:
                if matched:
                    allow = True
                    if relevant_unauth:
                        allow_unauth_hit = True
                elif relevant_unauth:
                    allow_unauth_any = True
        # A side's reasons are those of its matching clauses, or of all of them when none
        # matches; user-unauthenticated among either side's reasons means sign in first.
        if (allow_unauth_hit if allow else allow_unauth_any) or (
            deny_unauth_hit if deny else deny_unauth_any
        ):
            outcome = _LOGIN
        elif deny:
            outcome = _DENY
        elif allow:
            outcome = _ALLOW
        else:
            outcome = _DENY
        return Decision(outcome, self.route, self.clauses, tuple(raw))


def _combine(op: int, results: list[CriterionOutcome]) -> tuple[list[CriterionOutcome], bool, bool]:
    """(results, clause matched, an unauthenticated result is among the deciding ones)."""
    true_count = 0
    unauth = False
    for value, reason in results:
        if value:
            true_count += 1
        elif reason == _UNAUTH:
            unauth = True
    if op == _AND:
        matched = true_count == len(results)
        return results, matched, unauth and not matched
    if op == _OR:
        matched = true_count > 0
        return results, matched, unauth and not matched
    if op == _NOT:
        matched = true_count == 0
    else:
        matched = true_count < len(results)
    return results, matched, unauth and matched


def _criterion_name(label: str) -> str:
    """The criterion name from a report label (``"email: {...}"``, ``"legacy -> accept: true"``)."""
    return label.rsplit("->", 1)[-1].split(":", 1)[0].strip()


def _criterion_label(spec: CriterionSpec, origin: str = "") -> str:
    try:
        shown = json.dumps(spec.data, sort_keys=True, default=str)
    except (TypeError, ValueError):
        shown = repr(spec.data)
    return f"{origin}{spec.key}: {shown}"


def _legacy_clause(
    route: RouteOptions, problems: list[PolicySyntaxError]
) -> tuple[ClauseSpec | None, list[str]]:
    """Pomerium's ``ToPPL``: one ``allow``/``or`` clause from the legacy options."""
    specs: list[CriterionSpec] = []
    origins: list[str] = []

    def add(name: str, sub: str, data: Any, loc: Loc) -> None:
        specs.append(CriterionSpec(name, sub, data, loc))
        origins.append(f"{loc[0]} -> ")

    if route.allow_public_unauthenticated_access:
        if (
            route.allowed_users
            or route.allowed_domains
            or route.allowed_idp_claims
            or route.allow_any_authenticated_user
        ):
            problems.append(
                PolicySyntaxError(
                    ("allow_public_unauthenticated_access",),
                    "a public route cannot also list allowed users, domains or claims "
                    "(everyone is allowed already)",
                )
            )
        add("accept", "", True, ("allow_public_unauthenticated_access",))
    if route.cors_allow_preflight:
        add("cors_preflight", "", True, ("cors_allow_preflight",))
    if route.allow_any_authenticated_user:
        add("authenticated_user", "", True, ("allow_any_authenticated_user",))
    # The route's lists, then each sub-policy's, in Pomerium's order (``AllAllowed*``).
    sources: list[tuple[str, Any]] = [("", route)]
    sources += [(f"sub_policies[{n}].", sub) for n, sub in enumerate(route.sub_policies)]
    for at, src in sources:
        for i, domain in enumerate(src.allowed_domains):
            add("domain", "", {"is": domain}, (f"{at}allowed_domains", i))
    for at, src in sources:
        for claim in sorted(src.allowed_idp_claims):
            for i, value in enumerate(src.allowed_idp_claims[claim]):
                add("claim", claim, value, (f"{at}allowed_idp_claims", claim, i))
    for at, src in sources:
        for i, user in enumerate(src.allowed_users):
            # Pomerium matches an allowed user by id or by email.
            add("user", "", {"is": user}, (f"{at}allowed_users", i))
            add("email", "", {"is": user}, (f"{at}allowed_users", i))
    if not specs:
        return None, []
    return ClauseSpec("allow", Operator.OR, tuple(specs), ("legacy", "allow")), origins


def route_policy_problems(route: RouteOptions, route_index: int) -> list[PolicyProblem]:
    """Every problem in a route's policy options (empty when it compiles)."""
    _, problems = _compile(route, route_index)
    return problems


def _compile(route: RouteOptions, route_index: int) -> tuple[Policy | None, list[PolicyProblem]]:
    errors: list[PolicySyntaxError] = []
    legacy, origins = _legacy_clause(route, errors)
    clauses, parse_errors = parse_policy(route.policy)
    errors.extend(parse_errors)
    all_clauses = ([legacy] if legacy is not None else []) + clauses
    infos: list[ClauseInfo] = []
    compiled: list[_Compiled] = []
    guards: list[frozenset[tuple[str, str]] | None] = []
    for n, clause in enumerate(all_clauses):
        crits: list[Criterion] = []
        labels: list[str] = []
        for j, spec in enumerate(clause.criteria):
            try:
                crits.append(CRITERIA[spec.name](spec.data, spec.sub_path, spec.loc))
            except PolicySyntaxError as exc:
                errors.append(exc)
                continue
            origin = origins[j] if (n == 0 and legacy is not None) else ""
            labels.append(_criterion_label(spec, origin))
        infos.append(
            ClauseInfo(clause.action, clause.operator, format_loc(clause.loc), tuple(labels))
        )
        compiled.append((clause.action == "deny", _OP_CODES[clause.operator], tuple(crits)))
        keys = [criterion_keys(c.name, c.sub_path, c.data) for c in clause.criteria]
        guards.append(clause_guard(_OP_CODES[clause.operator], keys))
    problems = [PolicyProblem(route_index, e.loc, e.message) for e in errors]
    if problems:
        return None, problems
    indexable = len(all_clauses) >= INDEX_MIN_CLAUSES and all(
        c.name in _INDEXABLE_CRITERIA for k in all_clauses for c in k.criteria
    )
    return Policy(route.display_name, infos, compiled, guards if indexable else None), []


def policy_key(route: RouteOptions) -> str:
    """Everything a route's compiled rules depend on, as text: routes with equal keys
    compile to equal policies (only the route name in decisions differs).

    ``repr`` of the plain values (str, int, bool, float, None, dates, lists and dicts from
    YAML, in file order) tells different data apart, ``1`` from ``True`` and ``1.0``
    included; two spellings of the same rules (keys in another order) merely compile twice.
    """
    return repr(
        (
            route.allow_public_unauthenticated_access,
            route.allow_any_authenticated_user,
            route.cors_allow_preflight,
            route.allowed_users,
            route.allowed_domains,
            route.allowed_idp_claims,
            route.sub_policies,
            route.policy,
        )
    )


def compile_route_policy(
    route: RouteOptions, route_index: int, shared: dict[str, Policy] | None = None
) -> Policy:
    """Compile a route's legacy options and PPL ``policy`` into one :class:`Policy`.

    ``shared``: policies compiled for earlier routes, by :func:`policy_key`; a route whose
    rules are already there shares their compiled parts (10,000 routes with one policy
    compile it once), and a new one is added.

    Raises:
        ConfigError: listing every problem, each as ``routes[i].policy[0].allow...: msg``.
    """
    key = ""
    if shared is not None:
        key = policy_key(route)
        known = shared.get(key)
        if known is not None:
            return known.for_route(route.display_name)
    policy, problems = _compile(route, route_index)
    if policy is None:
        raise ConfigError([str(p) for p in problems])
    if shared is not None:
        shared[key] = policy
    return policy


def compile_policy_data(raw: Any, route: str = "<policy>") -> Policy:
    """Compile a bare PPL document (no legacy options); for tests and tools."""
    route_options = RouteOptions.model_validate(
        {"from": "https://policy.invalid", "to": "http://127.0.0.1:1", "policy": raw}
    )
    policy = compile_route_policy(route_options, 0)
    policy.route = route
    return policy
