"""Criteria on who the user is: ``email``, ``domain``, ``user`` (all string matchers).

Comparisons are exact, as in Pomerium (an IdP that returns ``Alice@Example.com`` must be
matched with that spelling). ``domain`` is the part after the first ``@`` and before any
second one (Pomerium's ``split(email, "@")[1]``); an email without ``@`` matches no domain.
"""

from __future__ import annotations

from typing import Any

from ...sessions.model import Session
from ..matchers import compile_string_matcher
from ..problems import Loc
from .base import Criterion, no_sub_path, session_criterion


def compile_email(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("email", sub_path, loc)
    pred = compile_string_matcher(data, loc)
    return session_criterion("email-ok", "email-unauthorized", lambda s: pred(s.email))


def compile_domain(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("domain", sub_path, loc)
    pred = compile_string_matcher(data, loc)

    def test(session: Session) -> bool:
        parts = session.email.split("@")
        return len(parts) > 1 and pred(parts[1])

    return session_criterion("domain-ok", "domain-unauthorized", test)


def compile_user(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("user", sub_path, loc)
    pred = compile_string_matcher(data, loc)
    return session_criterion("user-ok", "user-unauthorized", lambda s: pred(s.user_id))
