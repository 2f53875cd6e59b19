"""String and list matchers: a table of cases per operator, and refused spellings."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.authorize.matchers import (
    compile_list_matcher,
    compile_string_matcher,
    value_key,
)
from gatehouse.authorize.problems import PolicySyntaxError

STRING_CASES: list[tuple[Any, str, bool]] = [
    ("a@x.com", "a@x.com", True),
    ("a@x.com", "A@x.com", False),  # exact, case-sensitive
    ({"is": "a"}, "a", True),
    ({"is": "a"}, "ab", False),
    ({"not": "a"}, "a", False),
    ({"not": "a"}, "b", True),
    ({"starts_with": "/admin"}, "/admin/x", True),
    ({"starts_with": "/admin"}, "/ADMIN", False),
    ({"ends_with": "@x.com"}, "b@x.com", True),
    ({"ends_with": "@x.com"}, "b@x.co", False),
    ({"contains": "mid"}, "amidst", True),
    ({"contains": "mid"}, "amd", False),
    ({"in": ["a", "b"]}, "b", True),
    ({"in": ["a", "b"]}, "c", False),
    ({"not_in": ["a", "b"]}, "c", True),
    ({"not_in": ["a", "b"]}, "a", False),
    # several operators: all must hold
    ({"starts_with": "/api", "not": "/api/admin"}, "/api/users", True),
    ({"starts_with": "/api", "not": "/api/admin"}, "/api/admin", False),
    ({"starts_with": "a", "ends_with": "z", "contains": "m"}, "amz", True),
    ({"starts_with": "a", "ends_with": "z", "contains": "m"}, "az", False),
    ({"is": ""}, "", True),
]


@pytest.mark.parametrize(("data", "value", "expected"), STRING_CASES)
def test_string_matcher(data: Any, value: str, expected: bool) -> None:
    assert compile_string_matcher(data, ("m",))(value) is expected


LIST_CASES: list[tuple[Any, list[Any], bool]] = [
    ("admin", ["admin", "dev"], True),  # bare value means has
    ("admin", ["dev"], False),
    ("admin", [], False),
    ({"has": "dev"}, ["admin", "dev"], True),
    ({"is": "admin"}, ["admin"], True),
    ({"is": "admin"}, ["admin", "dev"], False),  # is = exactly that one value
    ({"is": "admin"}, [], False),
    ({"exclude": "admin"}, ["dev"], True),
    ({"exclude": "admin"}, [], True),
    ({"exclude": "admin"}, ["admin", "dev"], False),
    ({"has": "dev", "exclude": "contractor"}, ["dev"], True),
    ({"has": "dev", "exclude": "contractor"}, ["dev", "contractor"], False),
    (True, [True], True),
    (True, [1], False),  # JSON: true is not 1
    (1, [1.0], True),
    (1, ["1"], False),
]


@pytest.mark.parametrize(("data", "values", "expected"), LIST_CASES)
def test_list_matcher(data: Any, values: list[Any], expected: bool) -> None:
    pred = compile_list_matcher(data, ("m",))
    assert pred([value_key(v) for v in values]) is expected


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"equals": "a"}, "unknown string matcher operator 'equals'"),
        ({}, "empty matcher"),
        (["a", "b"], "use `in: [...]`"),
        ({"in": "a"}, "non-empty list"),
        ({"in": []}, "non-empty list"),
        ({"not_in": [1]}, "expected a string"),
    ],
)
def test_string_matcher_refuses(data: Any, fragment: str) -> None:
    with pytest.raises(PolicySyntaxError) as info:
        compile_string_matcher(data, ("policy", 0))
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"contains": "a"}, "unknown list matcher operator"),
        ({}, "empty matcher"),
        (["a", "b"], "single value"),
    ],
)
def test_list_matcher_refuses(data: Any, fragment: str) -> None:
    with pytest.raises(PolicySyntaxError) as info:
        compile_list_matcher(data, ("x",))
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("data", "value", "expected"),
    [
        # Pomerium compares as JSON: a non-string equals no string.
        (True, "true", False),
        (1234, "1234", False),
        (None, "", False),
        ({"is": 1234}, "1234", False),
        ({"not": True}, "true", True),
        ({"starts_with": 12}, "123", False),
    ],
)
def test_string_matcher_non_string_loads_and_never_equals(
    data: Any, value: str, expected: bool
) -> None:
    assert compile_string_matcher(data, ("m",))(value) is expected


def test_list_matcher_null_matches_null_only() -> None:
    pred = compile_list_matcher(None, ("m",))
    assert pred([value_key(None)]) is True
    assert pred([]) is False
    assert pred([value_key("null")]) is False
