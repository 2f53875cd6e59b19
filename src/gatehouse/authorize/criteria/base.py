"""What a compiled criterion is, and helpers shared by the criterion modules.

A criterion compiles once (``compile(data, sub_path, loc)``) into a plain function
``PolicyInput -> (value, reason)`` that returns one of a few pre-built tuples, so
evaluating it allocates nothing. Criteria that need a user return
:data:`UNAUTHENTICATED` when there is no session: the policy turns that into
"sign in first" rather than "denied".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...sessions.model import Session
from ..decision import REASON_USER_UNAUTHENTICATED, CriterionOutcome
from ..input import PolicyInput
from ..problems import Loc, PolicySyntaxError

Criterion = Callable[[PolicyInput], CriterionOutcome]
#: ``compile(data, sub_path, loc) -> Criterion``; raises PolicySyntaxError.
CriterionCompiler = Callable[[Any, str, Loc], Criterion]

UNAUTHENTICATED: CriterionOutcome = (False, REASON_USER_UNAUTHENTICATED)


def no_sub_path(name: str, sub_path: str, loc: Loc) -> None:
    if sub_path:
        raise PolicySyntaxError(loc, f"{name} takes no sub-path (found {name}/{sub_path})")


def need_true(name: str, data: Any, loc: Loc) -> None:
    """For value-less criteria. Pomerium ignores the value; gatehouse refuses ``false``
    (or null), since ``accept: false`` reading as "accept" would be a nasty surprise."""
    if data is None or data is False:
        raise PolicySyntaxError(loc, f"{name} takes the value true (it has no false form)")


def request_criterion(ok: str, fail: str, test: Callable[[PolicyInput], bool]) -> Criterion:
    """A criterion on the request alone."""
    passed: CriterionOutcome = (True, ok)
    failed: CriterionOutcome = (False, fail)

    def run(inp: PolicyInput) -> CriterionOutcome:
        return passed if test(inp) else failed

    return run


def session_criterion(ok: str, fail: str, test: Callable[[Session], bool]) -> Criterion:
    """A criterion on the user: without a session it yields :data:`UNAUTHENTICATED`."""
    passed: CriterionOutcome = (True, ok)
    failed: CriterionOutcome = (False, fail)

    def run(inp: PolicyInput) -> CriterionOutcome:
        session = inp.session
        if session is None:
            return UNAUTHENTICATED
        return passed if test(session) else failed

    return run
