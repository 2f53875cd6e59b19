"""The PPL parser: raw YAML data -> rules, clauses and criterion specs, with locations.

Grammar (Pomerium's): a document is a rule object or a list of them. A rule object has
the keys ``allow`` and/or ``deny`` (each becomes its own rule; allow first). A rule body
has the operators ``and``, ``or``, ``not``, ``nor``, each a list of criteria; a criterion
is an object with exactly one key, ``name`` or ``name/sub-path``, whose value is the
criterion's data. An operator with an empty list contributes nothing (as in Pomerium).

Every problem is reported with its key path; unknown criteria get a "did you mean".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from .criteria import CRITERIA, UNSUPPORTED
from .decision import Operator
from .problems import Loc, PolicySyntaxError

ACTIONS = ("allow", "deny")
OPERATORS = tuple(op.value for op in Operator)


@dataclass(frozen=True, slots=True)
class CriterionSpec:
    name: str
    sub_path: str
    data: Any
    loc: Loc

    @property
    def key(self) -> str:
        return f"{self.name}/{self.sub_path}" if self.sub_path else self.name


@dataclass(frozen=True, slots=True)
class ClauseSpec:
    """One operator block of one rule."""

    action: str
    operator: Operator
    criteria: tuple[CriterionSpec, ...]
    #: Location of the rule (``("policy", 0, "allow")``).
    loc: Loc


def _criterion(raw: Any, loc: Loc, problems: list[PolicySyntaxError]) -> CriterionSpec | None:
    if not isinstance(raw, dict) or len(raw) != 1:
        problems.append(
            PolicySyntaxError(
                loc,
                "a criterion is an object with exactly one key, e.g. "
                "`- email: {is: alice@example.com}`",
            )
        )
        return None
    ((key, data),) = raw.items()
    if not isinstance(key, str):
        problems.append(PolicySyntaxError(loc, f"criterion name must be a string, got {key!r}"))
        return None
    name, _, sub_path = key.partition("/")
    where = (*loc, key)
    if name not in CRITERIA:
        if name in UNSUPPORTED:
            msg = f"criterion {name!r} is not supported: {UNSUPPORTED[name]}"
        else:
            close = difflib.get_close_matches(name, [*CRITERIA, *UNSUPPORTED], n=1, cutoff=0.6)
            msg = f"unknown criterion {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        problems.append(PolicySyntaxError(where, msg))
        return None
    return CriterionSpec(name, sub_path, data, where)


def _rule_body(
    action: str, body: Any, loc: Loc, problems: list[PolicySyntaxError]
) -> list[ClauseSpec]:
    if not isinstance(body, dict):
        problems.append(
            PolicySyntaxError(loc, f"{action} expects an object with and, or, not or nor")
        )
        return []
    clauses = []
    # Pomerium's order within a rule: and, or, not, nor (whatever the document's order).
    ordered = sorted(
        body.items(), key=lambda kv: OPERATORS.index(kv[0]) if kv[0] in OPERATORS else -1
    )
    for op_name, items in ordered:
        where = (*loc, str(op_name))
        if op_name not in OPERATORS:
            close = difflib.get_close_matches(str(op_name), OPERATORS, n=1, cutoff=0.5)
            problems.append(
                PolicySyntaxError(
                    where,
                    f"unknown operator {op_name!r}; expected and, or, not or nor"
                    + (f" (did you mean {close[0]!r}?)" if close else ""),
                )
            )
            continue
        if not isinstance(items, list):
            problems.append(PolicySyntaxError(where, f"{op_name} expects a list of criteria"))
            continue
        specs = [_criterion(item, (*where, i), problems) for i, item in enumerate(items)]
        found = tuple(s for s in specs if s is not None)
        if found:  # on problems the whole policy is refused; keep going to report them all
            clauses.append(ClauseSpec(action, Operator(op_name), found, loc))
    return clauses


def parse_policy(
    raw: Any, loc: Loc = ("policy",)
) -> tuple[list[ClauseSpec], list[PolicySyntaxError]]:
    """Parse a ``policy`` value into clauses (allow and deny, in document order).

    Returns the clauses and the problems found (the caller raises if there are any).
    """
    problems: list[PolicySyntaxError] = []
    clauses: list[ClauseSpec] = []
    if raw is None:
        return clauses, problems
    rules = raw if isinstance(raw, list) else [raw]
    for i, rule in enumerate(rules):
        where = (*loc, i) if isinstance(raw, list) else loc
        if not isinstance(rule, dict):
            problems.append(
                PolicySyntaxError(where, "a rule is an object with the key allow or deny")
            )
            continue
        for key in rule:
            if key not in ACTIONS:
                problems.append(
                    PolicySyntaxError(
                        (*where, str(key)), f"unknown action {key!r}; expected allow or deny"
                    )
                )
        for action in ACTIONS:
            if action in rule:
                clauses.extend(_rule_body(action, rule[action], (*where, action), problems))
    return clauses, problems
