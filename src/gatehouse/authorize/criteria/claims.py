"""Criteria on the user's claims: ``claim/<name>`` and ``groups`` (list matchers).

A claim is read from the session's claims (ID token merged with userinfo). As in
Pomerium, its value is treated as a list: a list claim as is, a scalar (``null`` too) as
a list of one, a missing claim as empty. The name is looked up whole first; if absent and
it contains ``/`` or ``.``, it is read as a path into nested objects (``claim/address/country``).
``groups`` reads the session's groups, which are the IdP's groups claim (see
``authenticate/providers.py``), so ``claim/groups`` matches the same values. Group names
are strings: a boolean or number under ``groups`` loads and never matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...sessions.model import Session
from ..matchers import compile_list_matcher, value_key
from ..problems import Loc, PolicySyntaxError
from .base import Criterion, no_sub_path, session_criterion

_PATH_SEP = re.compile(r"[./]")


def claim_values(claims: Mapping[str, Any], name: str) -> list[object]:
    """The claim's values as :func:`value_key` keys (see module docstring)."""
    value = claims.get(name, None)
    if value is None and name not in claims and _PATH_SEP.search(name):
        node: Any = claims
        for part in _PATH_SEP.split(name):
            if not isinstance(node, Mapping) or part not in node:
                node = None
                break
            node = node[part]
        value = node
    if value is None:
        # Present as null: one null value (`claim/x: null` matches it); absent: none.
        return [value_key(None)] if name in claims else []
    if isinstance(value, list | tuple):
        return [value_key(v) for v in value]
    return [value_key(value)]


def compile_claim(data: Any, sub_path: str, loc: Loc) -> Criterion:
    if not sub_path:
        raise PolicySyntaxError(loc, "claim needs the claim's name: claim/<name>")
    pred = compile_list_matcher(data, loc)
    return session_criterion(
        "claim-ok", "claim-unauthorized", lambda s: pred(claim_values(s.claims, sub_path))
    )


def compile_groups(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("groups", sub_path, loc)
    pred = compile_list_matcher(data, loc)

    def test(session: Session) -> bool:
        # Groups are strings, which are their own value_key: no conversion needed.
        return pred(session.groups)

    return session_criterion("groups-ok", "groups-unauthorized", test)
