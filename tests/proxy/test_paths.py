"""normalize_path: every bypass spelling of /admin, refusals, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.errors import InvalidPath
from gatehouse.proxy.paths import normalize_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/admin", "/admin"),
        ("/", "/"),
        ("/%61dmin", "/admin"),  # encoded unreserved letter
        ("/%41DMIN", "/ADMIN"),
        ("/adm%69n/", "/admin/"),
        ("//admin", "/admin"),  # repeated slashes merged
        ("///admin//x", "/admin/x"),
        ("/./admin", "/admin"),
        ("/x/../admin", "/admin"),
        ("/x/y/../../admin", "/admin"),
        ("/../admin", "/admin"),  # cannot climb above the root
        ("/../../../admin", "/admin"),
        ("/%2e%2e/admin", "/admin"),  # encoded dot segments
        ("/x/%2E%2E/admin", "/admin"),
        ("/x/.%2e/admin", "/admin"),
        ("/%2e/admin", "/admin"),
        ("/admin/.", "/admin/"),
        ("/admin/..", "/"),
        ("/admin/x/..", "/admin/"),
        ("/ADMIN", "/ADMIN"),  # case is kept: matching is case-sensitive
        ("/admin;jsessionid=1", "/admin;jsessionid=1"),  # parameters kept literally
        ("/a;b/c", "/a;b/c"),
        ("/...", "/..."),  # not a dot segment
        ("/.well-known/jwks.json", "/.well-known/jwks.json"),
        ("/a%3ab", "/a%3Ab"),  # reserved stays encoded, hex upper-cased
        ("/a%20b", "/a%20b"),
        ("/%25", "/%25"),
        ("/%252e%252e/admin", "/%252e%252e/admin"),  # double encoding is not decoded twice
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a+b@c:d!$&'()*,=", "/a+b@c:d!$&'()*,="),
        ("/%7e%2d%5f", "/~-_"),
    ],
)
def test_normalises(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/admin%2f",  # encoded slash
        "/admin%2Fx",
        "/x%2f..%2fadmin",
        "/admin%5c",  # encoded backslash
        "\\admin",  # raw backslash
        "/x\\..\\admin",
        "/%c0%af",  # overlong '/'
        "/%c0%ae%c0%ae/admin",  # overlong '.'
        "/%e0%80%af",
        "/%ed%a0%80",  # UTF-16 surrogate
        "/%ff",
        "/%c3",  # truncated sequence
        "/%",
        "/%4",
        "/%zz",
        "/%00",  # NUL
        "/a\x00b",
        "/%0d%0aX",  # encoded CR LF
        "/%7f",
        "/a\tb",
        "/a b",
        "/é",  # raw non-ASCII
        "/a#b",
        "/a?b",
        "admin",
        "",
        "*",
        "/..;/admin",  # Tomcat would read this as ../
        "/x/.;a/admin",
        "/%2e%2e;/admin",
    ],
)
def test_refuses(raw: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_path(raw)


def test_invalid_path_is_a_400() -> None:
    assert InvalidPath.status == 400


def test_fast_path_returns_the_same_object() -> None:
    path = "/api/v1/users/42"
    assert normalize_path(path) is path


# --- properties -----------------------------------------------------------------------

_SEGMENT_CHARS = st.sampled_from(
    [
        "a",
        "B",
        "0",
        "-",
        ".",
        "_",
        "~",
        "%2e",
        "%2E",
        "%61",
        "%41",
        "%3a",
        "%25",
        "%c3%a9",
        ";",
        "=",
        "..",
        ".",
        "",
        "x",
        "%20",
        "@",
        "+",
    ]
)
_segment = st.lists(_SEGMENT_CHARS, max_size=5).map("".join)
_path = st.lists(_segment, min_size=1, max_size=8).map(lambda segs: "/" + "/".join(segs))


@settings(max_examples=500, deadline=None)
@given(_path)
def test_idempotent_and_canonical(raw: str) -> None:
    try:
        once = normalize_path(raw)
    except InvalidPath:
        return
    assert normalize_path(once) == once
    assert once.startswith("/")
    assert "//" not in once
    assert "/../" not in once and "/./" not in once
    assert not once.endswith("/..") and not once.endswith("/.")
    for segment in once.split("/"):
        assert segment.split(";")[0] not in (".", "..") or segment == ""


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_never_crashes_and_output_is_safe(raw: str) -> None:
    try:
        once = normalize_path(raw)
    except InvalidPath:
        return
    assert normalize_path(once) == once
    assert "\\" not in once and "//" not in once
    assert all(0x21 <= ord(c) <= 0x7E for c in once[1:])
    assert "%2F" not in once.upper() and "%5C" not in once.upper()
