"""Which Cookie header value the pipeline takes as gatehouse's session cookie (RFC 6265 §5.4).

The session handle is found by a byte search on the hot path; these cases pin down that it
matches only a whole cookie-pair of that exact name, as a split on ``;`` would.
"""

from __future__ import annotations

import pytest

from gatehouse.proxy.pipeline import _cookie

NAME = b"_gatehouse"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"cookie", b"_gatehouse=abc")], "abc"),
        ([(b"cookie", b"a=1; _gatehouse=abc; b=2")], "abc"),
        ([(b"cookie", b"a=1;_gatehouse=abc")], "abc"),
        ([(b"cookie", b'_gatehouse="abc"')], "abc"),
        ([(b"cookie", b"_gatehouse= abc ;x=1")], "abc"),
        # Another cookie whose name ends with ours, or whose value contains it: not ours.
        ([(b"cookie", b"x_gatehouse=evil")], None),
        ([(b"cookie", b"x_gatehouse=evil; _gatehouse=good")], "good"),
        ([(b"cookie", b"a=_gatehouse=evil")], None),
        ([(b"cookie", b"_gatehousex=evil")], None),
        # The first of several wins, across headers too.
        ([(b"cookie", b"_gatehouse=one; _gatehouse=two")], "one"),
        ([(b"cookie", b"a=1"), (b"cookie", b"_gatehouse=second-header")], "second-header"),
        ([(b"x-cookie", b"_gatehouse=abc")], None),
        # Many near-matches before the real one (each must be skipped, none misread).
        ([(b"cookie", b"x_gatehouse=1;" * 2000 + b" _gatehouse=real")], "real"),
        ([(b"cookie", b"a=" + b"_gatehouse=" * 2000)], None),
        ([], None),
    ],
)
def test_session_cookie_is_a_whole_cookie_pair(
    headers: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    assert _cookie(headers, NAME) == expected
