"""Criteria on the request time (gatehouse additions, modelled on Pomerium Enterprise):
``date``, ``day_of_week``, ``time_of_day``.

- ``date: {after: 2026-01-01T00:00:00Z, before: ...}`` — ISO 8601; a date or time without
  an offset is read as UTC. ``after`` is inclusive, ``before`` exclusive.
- ``day_of_week: mon-fri`` — ``*``, a comma list, or ranges (``mon-wed,fri``; a range may
  wrap: ``fri-mon``); full English names or 3-letter abbreviations. In UTC, or in a zone:
  ``day_of_week: {days: mon-fri, timezone: Europe/Paris}``.
- ``time_of_day: {timezone: America/Phoenix, after: "9:00", before: "5:30 PM"}`` —
  ``timezone`` is required; ``after`` inclusive, ``before`` exclusive; when ``after`` is
  later than ``before`` the window spans midnight. Formats: ``15:04``, ``15:04:05``,
  ``15:04:05.999999``, ``3:04 PM``, ``3:04PM``, ``3 PM``, ``3PM``. Quote the times: YAML
  reads an unquoted ``15:04`` as the base-60 number 904.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..decision import CriterionOutcome
from ..input import PolicyInput
from ..problems import Loc, PolicySyntaxError
from .base import Criterion, no_sub_path

_DAYS = {
    "mon": 0, "monday": 0, "tue": 1, "tuesday": 1, "wed": 2, "wednesday": 2,
    "thu": 3, "thursday": 3, "fri": 4, "friday": 4, "sat": 5, "saturday": 5,
    "sun": 6, "sunday": 6,
}  # fmt: skip

_DATE_OK: CriterionOutcome = (True, "date-ok")
_DATE_NO: CriterionOutcome = (False, "date-unauthorized")
_DOW_OK: CriterionOutcome = (True, "day-of-week-ok")
_DOW_NO: CriterionOutcome = (False, "day-of-week-unauthorized")
_TOD_OK: CriterionOutcome = (True, "time-of-day-ok")
_TOD_NO: CriterionOutcome = (False, "time-of-day-unauthorized")


def _object(name: str, data: Any, keys: tuple[str, ...], loc: Loc) -> dict[str, Any]:
    if not isinstance(data, dict) or not data:
        raise PolicySyntaxError(loc, f"{name} expects an object with {', '.join(keys)}")
    for key in data:
        if key not in keys:
            raise PolicySyntaxError(
                (*loc, str(key)), f"unknown {name} key {key!r}; expected {', '.join(keys)}"
            )
    return data


def _zone(value: Any, loc: Loc) -> ZoneInfo:
    if not isinstance(value, str) or not value:
        raise PolicySyntaxError(loc, "expected an IANA time zone name such as Europe/Paris")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicySyntaxError(loc, f"unknown time zone {value!r}") from None


def _instant(value: Any, loc: Loc) -> float:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PolicySyntaxError(loc, f"invalid ISO 8601 date/time {value!r}") from None
    else:
        raise PolicySyntaxError(loc, "expected an ISO 8601 date/time")
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def compile_date(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("date", sub_path, loc)
    obj = _object("date", data, ("after", "before"), loc)
    after = _instant(obj["after"], (*loc, "after")) if "after" in obj else float("-inf")
    before = _instant(obj["before"], (*loc, "before")) if "before" in obj else float("inf")

    def run(inp: PolicyInput) -> CriterionOutcome:
        return _DATE_OK if after <= inp.timestamp() < before else _DATE_NO

    return run


def parse_days(spec: Any, loc: Loc) -> frozenset[int]:
    if not isinstance(spec, str) or not spec.strip():
        raise PolicySyntaxError(loc, "expected days such as 'mon-fri', 'sat,sun' or '*'")
    text = spec.strip().lower()
    if text == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            start = _DAYS[first.strip()]
            end = _DAYS[last.strip()] if sep else start
        except KeyError:
            raise PolicySyntaxError(loc, f"invalid day or range {part.strip()!r}") from None
        day = start
        days.add(day)
        while day != end:
            day = (day + 1) % 7
            days.add(day)
    return frozenset(days)


@functools.lru_cache(maxsize=256)
def local_clock(unix_second: int, zone: ZoneInfo | None) -> tuple[int, int]:
    """(weekday, seconds since local midnight) of a Unix second in a zone (None = UTC).

    Cached per second: converting to a zone costs about a microsecond and every request in
    the same second asks the same question."""
    moment = datetime.fromtimestamp(unix_second, zone or UTC)
    return moment.weekday(), moment.hour * 3600 + moment.minute * 60 + moment.second


def compile_day_of_week(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("day_of_week", sub_path, loc)
    zone: ZoneInfo | None = None
    if isinstance(data, dict):
        obj = _object("day_of_week", data, ("days", "timezone"), loc)
        if "days" not in obj:
            raise PolicySyntaxError(loc, "day_of_week needs days")
        days = parse_days(obj["days"], (*loc, "days"))
        if "timezone" in obj:
            zone = _zone(obj["timezone"], (*loc, "timezone"))
    else:
        days = parse_days(data, loc)

    def run(inp: PolicyInput) -> CriterionOutcome:
        weekday, _ = local_clock(int(inp.timestamp() // 1), zone)
        return _DOW_OK if weekday in days else _DOW_NO

    return run


_CLOCK_24 = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")
_CLOCK_12 = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*([ap])\.?m\.?$", re.IGNORECASE)


def parse_clock(value: Any, loc: Loc) -> float:
    """A time of day as seconds since midnight."""
    if isinstance(value, time):
        return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise PolicySyntaxError(
            loc, "quote the time ('15:04'): YAML reads an unquoted h:mm as a base-60 number"
        )
    if not isinstance(value, str):
        raise PolicySyntaxError(loc, "expected a time of day such as '15:04' or '3:04 PM'")
    text = value.strip()
    m = _CLOCK_24.match(text)
    if m:
        hour, minute = int(m[1]), int(m[2])
        second = int(m[3] or 0)
        frac = float("0." + m[4]) if m[4] else 0.0
        if hour < 24 and minute < 60 and second < 60:
            return hour * 3600 + minute * 60 + second + frac
    m = _CLOCK_12.match(text)
    if m:
        hour, minute = int(m[1]), int(m[2] or 0)
        if 1 <= hour <= 12 and minute < 60:
            hour = hour % 12 + (12 if m[3].lower() == "p" else 0)
            return hour * 3600 + minute * 60
    raise PolicySyntaxError(loc, f"invalid time of day {value!r}")


def compile_time_of_day(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("time_of_day", sub_path, loc)
    obj = _object("time_of_day", data, ("timezone", "after", "before"), loc)
    if "timezone" not in obj:
        raise PolicySyntaxError(loc, "time_of_day needs a timezone (e.g. UTC or Europe/Paris)")
    zone = _zone(obj["timezone"], (*loc, "timezone"))
    after = parse_clock(obj["after"], (*loc, "after")) if "after" in obj else 0.0
    before = parse_clock(obj["before"], (*loc, "before")) if "before" in obj else 86400.0
    wraps = after > before

    def run(inp: PolicyInput) -> CriterionOutcome:
        ts = inp.timestamp()
        second = int(ts // 1)
        _, whole = local_clock(second, zone)
        t = whole + (ts - second)
        inside = (t >= after or t < before) if wraps else (after <= t < before)
        return _TOD_OK if inside else _TOD_NO

    return run
