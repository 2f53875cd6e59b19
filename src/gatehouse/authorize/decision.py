"""Policy decisions with their reasons: :class:`Outcome`, :class:`Decision`.

Theory of operation: the evaluator (:mod:`gatehouse.authorize.policy`) records, for each
clause (one operator block of one ``allow``/``deny`` rule), whether it matched and the
raw ``(value, reason)`` result of each of its criteria; for a signed-in request it does
so only when a report asks (the outcome comes from the clauses that could match, see
:mod:`gatehouse.authorize.clause_index`). The readable forms — per-rule results, the
decisive reasons, the text for logs and ``show_error_details`` — are built from those
records only when asked for.

Reasons follow Pomerium's names (``email-ok``, ``email-unauthorized``,
``user-unauthenticated`` ...), so log searches carry over.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Well-known reasons (Pomerium's spelling).
REASON_USER_UNAUTHENTICATED = "user-unauthenticated"

#: The raw result of one criterion: (value, reason). Criteria return shared constants.
CriterionOutcome = tuple[bool, str]


class Outcome(enum.Enum):
    """What to do with the request."""

    ALLOW = "allow"
    DENY = "deny"
    #: A rule needs to know who the user is and there is no session: sign in first.
    NEEDS_LOGIN = "needs-login"


class Operator(enum.Enum):
    """A PPL logical operator and how it combines its criteria."""

    AND = "and"  # all match
    OR = "or"  # at least one matches
    NOT = "not"  # none matches: (not A) and (not B)
    NOR = "nor"  # not all match: (not A) or (not B)

    @property
    def negated(self) -> bool:
        return self in (Operator.NOT, Operator.NOR)


@dataclass(frozen=True, slots=True)
class ClauseInfo:
    """Static description of one clause, for reports."""

    #: ``"allow"`` or ``"deny"``.
    action: str
    operator: Operator
    #: Where it came from: ``policy[0].allow.or`` or ``allowed_users`` etc.
    label: str
    #: One label per criterion, e.g. ``email: {"is": "a@example.com"}``.
    criteria: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CriterionResult:
    label: str
    #: The criterion's own value, before any ``not``/``nor`` inversion.
    matched: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ClauseResult:
    """How one clause fared."""

    action: str
    operator: Operator
    label: str
    matched: bool
    #: The reasons that decided the clause (Pomerium's merge: those of the criteria
    #: whose effective value equals the clause's value).
    reasons: tuple[str, ...]
    criteria: tuple[CriterionResult, ...]

    @property
    def needs_login(self) -> bool:
        return REASON_USER_UNAUTHENTICATED in self.reasons


#: What the evaluator records per clause: (matched, raw criterion outcomes).
RawClause = tuple[bool, Sequence[CriterionOutcome]]


class Decision:
    """The outcome of evaluating a route's policy for one request (read-only by convention).

    A plain slotted class (one per request; see :class:`~gatehouse.authorize.input.PolicyInput`).
    """

    __slots__ = ("_raw", "_source", "clauses", "outcome", "route")

    def __init__(
        self,
        outcome: Outcome,
        route: str,
        clauses: tuple[ClauseInfo, ...],
        raw: tuple[RawClause, ...] | None,
        source: Callable[[], tuple[RawClause, ...]] | None = None,
    ) -> None:
        """``raw`` may be ``None`` when ``source`` computes it: an outcome decided from a
        few clauses records the rest only when a report asks for them."""
        self.outcome = outcome
        #: The route's display name (for logs).
        self.route = route
        self.clauses = clauses
        self._raw = raw
        self._source = source

    @property
    def raw(self) -> tuple[RawClause, ...]:
        """Per clause: whether it matched, and its criteria's raw outcomes."""
        raw = self._raw
        if raw is None:
            source = self._source
            raw = source() if source is not None else ()
            self._raw = raw
        return raw

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    def clause_results(self) -> tuple[ClauseResult, ...]:
        """Every clause with its outcome and reasons, in policy order."""
        out = []
        for info, (matched, results) in zip(self.clauses, self.raw, strict=True):
            want = (not matched) if info.operator.negated else matched
            reasons = tuple(sorted({reason for value, reason in results if value is want}))
            crits = tuple(
                CriterionResult(label, value, reason)
                for label, (value, reason) in zip(info.criteria, results, strict=True)
            )
            out.append(
                ClauseResult(info.action, info.operator, info.label, matched, reasons, crits)
            )
        return tuple(out)

    def reasons(self) -> tuple[str, ...]:
        """The decisive reasons: of the matching deny rules if denied by one, else of allow."""
        results = self.clause_results()
        denies = [c for c in results if c.action == "deny"]
        allows = [c for c in results if c.action == "allow"]
        if self.outcome is Outcome.DENY and any(c.matched for c in denies):
            picked = [c for c in denies if c.matched]
        else:
            picked = [c for c in allows if c.matched] or allows
            if self.outcome is Outcome.NEEDS_LOGIN:
                picked = picked + [c for c in denies if c.needs_login]
        return tuple(sorted({r for c in picked for r in c.reasons}))

    @property
    def matched_deny(self) -> bool:
        """True when a ``deny`` rule matched (an explicit refusal, not a missing allow)."""
        return any(
            matched and info.action == "deny"
            for info, (matched, _) in zip(self.clauses, self.raw, strict=True)
        )

    def matched_rules(self) -> tuple[str, ...]:
        return tuple(
            f"{info.label}.{info.operator.value}"
            for info, (matched, _) in zip(self.clauses, self.raw, strict=True)
            if matched
        )

    def failed_rules(self) -> tuple[str, ...]:
        return tuple(
            f"{info.label}.{info.operator.value}"
            for info, (matched, _) in zip(self.clauses, self.raw, strict=True)
            if not matched
        )

    def log_fields(self) -> dict[str, str | list[str]]:
        """Structured fields for the decision log line."""
        return {
            "route": self.route,
            "decision": self.outcome.value,
            "matched_rules": list(self.matched_rules()),
            "failed_rules": list(self.failed_rules()),
            "reasons": list(self.reasons()),
        }

    def explain(self) -> str:
        """A multi-line, human-readable account of every rule's outcome."""
        lines = [f"decision: {self.outcome.value.upper()} (route {self.route})"]
        if not self.clauses:
            lines.append("  no rules: nothing allows access")
        for res in self.clause_results():
            mark = "MATCH" if res.matched else "no match"
            lines.append(
                f"  {res.action:5} {res.label}.{res.operator.value}: {mark}"
                f" [{', '.join(res.reasons) or '-'}]"
            )
            for crit in res.criteria:
                lines.append(f"      {'+' if crit.matched else '-'} {crit.label} ({crit.reason})")
        reasons = self.reasons()
        if reasons:
            lines.append(f"reasons: {', '.join(reasons)}")
        return "\n".join(lines)
