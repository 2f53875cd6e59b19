"""PPL matchers compiled to predicates: string matchers and string-list matchers.

String matcher (Pomerium's): an object whose keys are operators, all of which must hold —
``is``, ``starts_with``, ``ends_with``, ``contains``, ``in``, ``not_in``, ``not`` (is not).
A bare value means ``is``.

List matcher (Pomerium's "string list matcher", for ``groups`` and ``claim/<name>``):
``has`` (the list contains the value), ``is`` (the list is exactly that one value),
``exclude`` (the list does not contain it). A bare value means ``has``.

Values compare as JSON, as in Pomerium's generated Rego: a boolean, number or null under a
string matcher (``email: true``, ``http_path: 1234``) loads, and equals no string (so
``is`` never holds and ``not`` always does; ``starts_with`` and the like never hold). Null
under a list matcher matches a null claim. Gatehouse still refuses the spellings Pomerium
refuses or that are surely mistakes with no meaning to give them (a bare list under a string
matcher, non-strings in ``in``/``not_in``, an empty matcher object).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from .problems import Loc, PolicySyntaxError

StrPredicate = Callable[[str], bool]
ListPredicate = Callable[[Sequence[object]], bool]

STRING_OPERATORS = ("is", "starts_with", "ends_with", "contains", "in", "not_in", "not")
LIST_OPERATORS = ("has", "is", "exclude")


def _need_str(value: Any, loc: Loc) -> str:
    if not isinstance(value, str):
        hint = ""
        if isinstance(value, list):
            hint = "; to match any of several values use `in: [...]`"
        elif isinstance(value, bool | int | float):
            hint = "; quote the value"
        raise PolicySyntaxError(loc, f"expected a string, got {type(value).__name__}{hint}")
    return value


def _need_str_list(value: Any, loc: Loc) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise PolicySyntaxError(loc, "expected a non-empty list of strings")
    return frozenset(_need_str(v, (*loc, i)) for i, v in enumerate(value))


def _never(s: str) -> bool:
    return False


def _always(s: str) -> bool:
    return True


def _string_op(op: str, value: Any, loc: Loc) -> StrPredicate:
    if op in ("in", "not_in"):
        items = _need_str_list(value, loc)
        if op == "in":
            return items.__contains__
        return lambda s: s not in items
    if value is None or isinstance(value, bool | int | float):
        # A JSON scalar that is not a string equals no string (Rego's `==`); the string
        # built-ins are undefined on it, which Rego reads as false.
        return _always if op == "not" else _never
    text = _need_str(value, loc)
    if op == "is":
        return lambda s: s == text
    if op == "not":
        return lambda s: s != text
    if op == "starts_with":
        return lambda s: s.startswith(text)
    if op == "ends_with":
        return lambda s: s.endswith(text)
    # contains
    return lambda s: text in s


def compile_string_matcher(data: Any, loc: Loc) -> StrPredicate:
    """Compile a string matcher; every operator of the object must hold."""
    if not isinstance(data, dict):
        return _string_op("is", data, loc)
    if not data:
        raise PolicySyntaxError(loc, f"empty matcher: use one of {', '.join(STRING_OPERATORS)}")
    preds = []
    for op, value in data.items():
        if op not in STRING_OPERATORS:
            raise PolicySyntaxError(
                (*loc, str(op)),
                f"unknown string matcher operator {op!r}; expected one of "
                + ", ".join(STRING_OPERATORS),
            )
        preds.append(_string_op(op, value, (*loc, op)))
    if len(preds) == 1:
        return preds[0]
    ptuple = tuple(preds)

    def all_of(s: str) -> bool:
        for p in ptuple:
            if not p(s):
                return False
        return True

    return all_of


def value_key(value: object) -> object:
    """A hashable key under which JSON values compare as JSON does.

    Strings are their own key (the common case costs nothing); booleans and numbers are
    tagged so that ``true`` never equals ``1`` (as it would in Python).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", float(value))
    return ("json", json.dumps(value, sort_keys=True, default=str))


def _list_op(op: str, key: object) -> ListPredicate:
    if op == "has":
        return lambda xs: key in xs
    if op == "is":
        return lambda xs: len(xs) == 1 and xs[0] == key
    return lambda xs: key not in xs


def compile_list_matcher(data: Any, loc: Loc) -> ListPredicate:
    """Compile a list matcher over a sequence of :func:`value_key` keys."""
    if not isinstance(data, dict):
        data = {"has": data}
        op_loc = False
    else:
        op_loc = True
        if not data:
            raise PolicySyntaxError(loc, f"empty matcher: use one of {', '.join(LIST_OPERATORS)}")
    preds: list[ListPredicate] = []
    for op, value in data.items():
        where = (*loc, str(op)) if op_loc else loc
        if op not in LIST_OPERATORS:
            raise PolicySyntaxError(
                where,
                f"unknown list matcher operator {op!r}; expected one of "
                + ", ".join(LIST_OPERATORS),
            )
        if isinstance(value, list | dict):
            raise PolicySyntaxError(
                where,
                "expected a single value (string, number or boolean); "
                "to accept any of several values, write several criteria under `or`",
            )
        preds.append(_list_op(op, value_key(value)))
    if len(preds) == 1:
        return preds[0]
    ptuple = tuple(preds)
    return lambda xs: all(p(xs) for p in ptuple)
