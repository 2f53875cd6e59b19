"""Value-less criteria: ``accept``, ``reject``, ``authenticated_user``, ``cors_preflight``."""

from __future__ import annotations

from typing import Any

from ..decision import CriterionOutcome
from ..input import PolicyInput
from ..problems import Loc
from .base import UNAUTHENTICATED, Criterion, need_true, no_sub_path

_ACCEPT: CriterionOutcome = (True, "accept")
_REJECT: CriterionOutcome = (False, "reject")
_USER_OK: CriterionOutcome = (True, "user-ok")
_CORS: CriterionOutcome = (True, "cors-request")
_NON_CORS: CriterionOutcome = (False, "non-cors-request")


def compile_accept(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("accept", sub_path, loc)
    need_true("accept", data, loc)
    return lambda inp: _ACCEPT


def compile_reject(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("reject", sub_path, loc)
    need_true("reject", data, loc)
    return lambda inp: _REJECT


def compile_authenticated_user(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("authenticated_user", sub_path, loc)
    need_true("authenticated_user", data, loc)

    def run(inp: PolicyInput) -> CriterionOutcome:
        return UNAUTHENTICATED if inp.session is None else _USER_OK

    return run


def compile_cors_preflight(data: Any, sub_path: str, loc: Loc) -> Criterion:
    """An ``OPTIONS`` request carrying both ``Origin`` and ``Access-Control-Request-Method``
    (the Fetch standard's CORS-preflight request)."""
    no_sub_path("cors_preflight", sub_path, loc)
    need_true("cors_preflight", data, loc)

    def run(inp: PolicyInput) -> CriterionOutcome:
        if inp.method == "OPTIONS" and inp.origin and inp.access_control_request_method:
            return _CORS
        return _NON_CORS

    return run
