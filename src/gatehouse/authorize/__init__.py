"""authorize: the Pomerium Policy Language — parser, criteria, compiled policies, decisions.

Compile a route's policy once at config load with :func:`compile_route_policy`, then call
:meth:`Policy.evaluate` with a :class:`PolicyInput` per request; act on the
:class:`Decision`'s :class:`Outcome`. Semantics are documented in ``docs/policy.md``.
"""

from .decision import ClauseResult, CriterionResult, Decision, Outcome
from .input import PolicyInput
from .policy import Policy, compile_policy_data, compile_route_policy, route_policy_problems
from .problems import PolicyProblem

__all__ = [
    "ClauseResult",
    "CriterionResult",
    "Decision",
    "Outcome",
    "Policy",
    "PolicyInput",
    "PolicyProblem",
    "compile_policy_data",
    "compile_route_policy",
    "route_policy_problems",
]
