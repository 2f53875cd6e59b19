"""A table of cases per criterion: (criterion, data, request, expected value and reason)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest

from gatehouse.authorize.criteria import CRITERIA
from gatehouse.authorize.input import PolicyInput
from gatehouse.authorize.problems import PolicySyntaxError
from gatehouse.sessions.model import Session

ALICE = Session(
    id="s1",
    user_id="u-alice",
    email="alice@example.com",
    groups=("admins", "devs"),
    claims=MappingProxyType(
        {
            "email_verified": True,
            "family_name": "Smith",
            "roles": ["reader", "writer"],
            "org": {"team": {"name": "core"}},
            "level": 3,
            "a/b": "slashed",
        }
    ),
)
ODD = Session(id="s2", user_id="u-odd", email="no-at-sign", groups=())
# 2026-11-27 is a Friday.
FRI_1030_UTC = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)


def req(**kw: Any) -> PolicyInput:
    base: dict[str, Any] = {
        "method": "GET",
        "path": "/",
        "source_ip": "10.1.2.3",
        "now": FRI_1030_UTC,
    }
    base.update(kw)
    return PolicyInput(**base)


def run(key: str, data: Any, inp: PolicyInput) -> tuple[bool, str]:
    name, _, sub = key.partition("/")
    return CRITERIA[name](data, sub, ("c",))(inp)


U = (False, "user-unauthenticated")

CASES: list[tuple[str, Any, PolicyInput, tuple[bool, str]]] = [
    # accept / reject
    ("accept", True, req(), (True, "accept")),
    ("reject", True, req(session=ALICE), (False, "reject")),
    # authenticated_user
    ("authenticated_user", True, req(session=ALICE), (True, "user-ok")),
    ("authenticated_user", True, req(), U),
    # email
    ("email", "alice@example.com", req(session=ALICE), (True, "email-ok")),
    ("email", {"is": "bob@example.com"}, req(session=ALICE), (False, "email-unauthorized")),
    ("email", {"ends_with": "@example.com"}, req(session=ALICE), (True, "email-ok")),
    ("email", {"in": ["x@y", "alice@example.com"]}, req(session=ALICE), (True, "email-ok")),
    ("email", {"not_in": ["alice@example.com"]}, req(session=ALICE), (False, "email-unauthorized")),
    ("email", "alice@example.com", req(), U),
    # domain
    ("domain", "example.com", req(session=ALICE), (True, "domain-ok")),
    ("domain", {"is": "example.org"}, req(session=ALICE), (False, "domain-unauthorized")),
    ("domain", {"ends_with": "example.com"}, req(session=ALICE), (True, "domain-ok")),
    ("domain", {"not": "x"}, req(session=ODD), (False, "domain-unauthorized")),
    ("domain", "example.com", req(), U),
    # user
    ("user", "u-alice", req(session=ALICE), (True, "user-ok")),
    ("user", {"starts_with": "u-b"}, req(session=ALICE), (False, "user-unauthorized")),
    ("user", "u-alice", req(), U),
    # claim/<name>
    ("claim/family_name", "Smith", req(session=ALICE), (True, "claim-ok")),
    ("claim/family_name", "Jones", req(session=ALICE), (False, "claim-unauthorized")),
    ("claim/roles", "writer", req(session=ALICE), (True, "claim-ok")),
    ("claim/roles", {"is": "writer"}, req(session=ALICE), (False, "claim-unauthorized")),
    ("claim/roles", {"exclude": "admin"}, req(session=ALICE), (True, "claim-ok")),
    ("claim/email_verified", True, req(session=ALICE), (True, "claim-ok")),
    ("claim/email_verified", "true", req(session=ALICE), (False, "claim-unauthorized")),
    ("claim/level", 3, req(session=ALICE), (True, "claim-ok")),
    ("claim/org/team/name", "core", req(session=ALICE), (True, "claim-ok")),
    ("claim/org.team.name", "core", req(session=ALICE), (True, "claim-ok")),
    ("claim/a/b", "slashed", req(session=ALICE), (True, "claim-ok")),
    ("claim/missing", "x", req(session=ALICE), (False, "claim-unauthorized")),
    ("claim/missing", {"exclude": "x"}, req(session=ALICE), (True, "claim-ok")),
    ("claim/family_name", "Smith", req(), U),
    # groups
    ("groups", "admins", req(session=ALICE), (True, "groups-ok")),
    ("groups", {"has": "ops"}, req(session=ALICE), (False, "groups-unauthorized")),
    ("groups", {"is": "admins"}, req(session=ALICE), (False, "groups-unauthorized")),
    ("groups", {"exclude": "ops"}, req(session=ALICE), (True, "groups-ok")),
    ("groups", {"exclude": "ops"}, req(session=ODD), (True, "groups-ok")),
    ("groups", "admins", req(), U),
    # http_method
    ("http_method", "GET", req(), (True, "http-method-ok")),
    ("http_method", {"in": ["POST", "PUT"]}, req(), (False, "http-method-unauthorized")),
    ("http_method", "get", req(), (False, "http-method-unauthorized")),
    # http_path
    ("http_path", {"starts_with": "/admin"}, req(path="/admin/users"), (True, "http-path-ok")),
    ("http_path", {"starts_with": "/admin"}, req(path="/ADMIN"), (False, "http-path-unauthorized")),
    ("http_path", "/", req(), (True, "http-path-ok")),
    # source_ip
    ("source_ip", "10.0.0.0/8", req(), (True, "source-ip-ok")),
    ("source_ip", "10.1.2.3", req(), (True, "source-ip-ok")),
    ("source_ip", ["192.168.0.0/16", "10.1.2.0/24"], req(), (True, "source-ip-ok")),
    ("source_ip", "192.168.0.0/16", req(), (False, "source-ip-unauthorized")),
    ("source_ip", "2001:db8::/32", req(source_ip="2001:db8::1"), (True, "source-ip-ok")),
    ("source_ip", "2001:db8::/32", req(source_ip="2001:db9::1"), (False, "source-ip-unauthorized")),
    ("source_ip", "10.0.0.0/8", req(source_ip="::ffff:10.9.9.9"), (True, "source-ip-ok")),
    ("source_ip", "::/0", req(source_ip="10.9.9.9"), (False, "source-ip-unauthorized")),
    # host bits are masked (Pomerium); IPv4-mapped networks and clients are IPv4
    ("source_ip", "10.1.2.99/24", req(), (True, "source-ip-ok")),
    ("source_ip", "::ffff:10.0.0.0/104", req(), (True, "source-ip-ok")),
    ("source_ip", "::ffff:10.1.2.3", req(), (True, "source-ip-ok")),
    ("source_ip", "::ffff:10.1.2.3", req(source_ip="::ffff:10.1.2.3"), (True, "source-ip-ok")),
    ("source_ip", "::ffff:11.0.0.0/104", req(), (False, "source-ip-unauthorized")),
    # a non-string group loads and matches no group (groups are strings)
    ("groups", 1234, req(session=ALICE), (False, "groups-unauthorized")),
    ("source_ip", "0.0.0.0/0", req(source_ip=""), (False, "source-ip-unauthorized")),
    ("source_ip", "0.0.0.0/0", req(source_ip="garbage"), (False, "source-ip-unauthorized")),
    # cors_preflight
    (
        "cors_preflight",
        True,
        req(method="OPTIONS", origin="https://a", access_control_request_method="POST"),
        (True, "cors-request"),
    ),
    (
        "cors_preflight",
        True,
        req(method="OPTIONS", origin="https://a"),
        (False, "non-cors-request"),
    ),
    (
        "cors_preflight",
        True,
        req(method="GET", origin="https://a", access_control_request_method="POST"),
        (False, "non-cors-request"),
    ),
    # date
    ("date", {"after": "2026-01-01T00:00:00Z"}, req(), (True, "date-ok")),
    ("date", {"before": "2026-01-01"}, req(), (False, "date-unauthorized")),
    ("date", {"after": datetime(2026, 11, 27, 10, 30)}, req(), (True, "date-ok")),  # inclusive
    ("date", {"before": "2026-11-27T10:30:00+00:00"}, req(), (False, "date-unauthorized")),
    (
        "date",
        {"after": "2026-11-27T11:00:00+01:00"},
        req(now=FRI_1030_UTC.timestamp()),
        (True, "date-ok"),
    ),
    # day_of_week
    ("day_of_week", "mon-fri", req(), (True, "day-of-week-ok")),
    ("day_of_week", "sat,sun", req(), (False, "day-of-week-unauthorized")),
    ("day_of_week", "friday", req(), (True, "day-of-week-ok")),
    ("day_of_week", "fri-mon", req(), (True, "day-of-week-ok")),
    ("day_of_week", "*", req(), (True, "day-of-week-ok")),
    # 10:30 UTC Friday is 23:30 Friday in Pacific/Auckland (UTC+13); 00:30 Sat in Kiritimati (UTC+14)  # noqa: E501
    (
        "day_of_week",
        {"days": "sat", "timezone": "Pacific/Kiritimati"},
        req(),
        (True, "day-of-week-ok"),
    ),
    # time_of_day
    (
        "time_of_day",
        {"timezone": "UTC", "after": "9:00", "before": "17:00"},
        req(),
        (True, "time-of-day-ok"),
    ),
    ("time_of_day", {"timezone": "UTC", "after": "10:30"}, req(), (True, "time-of-day-ok")),
    (
        "time_of_day",
        {"timezone": "UTC", "before": "10:30"},
        req(),
        (False, "time-of-day-unauthorized"),
    ),
    (
        "time_of_day",
        {"timezone": "UTC", "after": "2:20:00", "before": "4:30PM"},
        req(),
        (True, "time-of-day-ok"),
    ),
    (
        "time_of_day",
        {"timezone": "America/New_York", "after": "9 AM"},
        req(),
        (False, "time-of-day-unauthorized"),
    ),
    (
        "time_of_day",
        {"timezone": "Europe/Paris", "after": "11:00", "before": "11:31"},
        req(),
        (True, "time-of-day-ok"),
    ),
    (
        "time_of_day",
        {"timezone": "UTC", "after": "22:00", "before": "06:00"},
        req(),
        (False, "time-of-day-unauthorized"),
    ),
    (
        "time_of_day",
        {"timezone": "UTC", "after": "22:00", "before": "11:00"},
        req(),
        (True, "time-of-day-ok"),
    ),
    ("time_of_day", {"timezone": "UTC", "after": "10:29:59.5"}, req(), (True, "time-of-day-ok")),
    (
        "time_of_day",
        {"timezone": "UTC", "after": "12 PM"},
        req(),
        (False, "time-of-day-unauthorized"),
    ),
    (
        "time_of_day",
        {"timezone": "UTC", "before": "12AM"},
        req(),
        (False, "time-of-day-unauthorized"),
    ),
]


@pytest.mark.parametrize(("key", "data", "inp", "expected"), CASES)
def test_criterion(key: str, data: Any, inp: PolicyInput, expected: tuple[bool, str]) -> None:
    assert run(key, data, inp) == expected


REFUSED: list[tuple[str, Any, str]] = [
    ("accept", False, "takes the value true"),
    ("authenticated_user", None, "takes the value true"),
    ("email/sub", "x", "takes no sub-path"),
    ("claim", "x", "claim needs the claim's name"),
    ("source_ip", "not-an-ip", "invalid IP address or CIDR"),
    ("source_ip", [], "expected an IP address"),
    ("source_ip", [42], "as a string"),
    ("date", "2026-01-01", "expects an object"),
    ("date", {"after": "yesterday"}, "invalid ISO 8601"),
    ("date", {"since": "2026-01-01"}, "unknown date key"),
    ("day_of_week", "mon-funday", "invalid day or range"),
    ("day_of_week", {"days": "mon", "timezone": "Mars/Olympus"}, "unknown time zone"),
    ("time_of_day", {"after": "9:00"}, "needs a timezone"),
    ("time_of_day", {"timezone": "UTC", "after": 904}, "quote the time"),
    ("time_of_day", {"timezone": "UTC", "after": "25:00"}, "invalid time of day"),
    ("time_of_day", {"timezone": "UTC", "after": "13PM"}, "invalid time of day"),
]


@pytest.mark.parametrize(("key", "data", "fragment"), REFUSED)
def test_criterion_refuses(key: str, data: Any, fragment: str) -> None:
    name, _, sub = key.partition("/")
    with pytest.raises(PolicySyntaxError) as info:
        CRITERIA[name](data, sub, ("c",))
    assert fragment in info.value.message


def test_policy_input_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError):
        PolicyInput("GET", "/", now=datetime(2026, 1, 1))
