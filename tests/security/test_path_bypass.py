"""Path bypass against ``only.localhost``, whose policy allows ``/public`` and ``/public/...`` only.

Each raw target is sent as bytes (a client library would normalise it first). The
property for every spelling: either gatehouse refuses it (4xx) and the upstream saw
nothing, or the upstream received a path that is ``/public`` or under ``/public/`` for
the policy *and* under every lenient reading an upstream might apply (:func:`readings`:
percent-decoding, overlong UTF-8, backslashes as slashes, ``;`` parameters stripped,
dot segments, case folding, NUL truncation).

Debatable, as Pomerium and Envoy: ``%25`` is a literal ``%`` and is forwarded as
``%25``, so ``/public/%252e%252e/admin`` reaches the upstream as exactly that; an upstream
that percent-decodes twice would read ``/admin``. Decoding twice is the upstream's bug
(RFC 3986 §2.4); see :func:`test_double_encoding_is_forwarded_literally`.

Also debatable, as Pomerium: matching is case-sensitive, so ``/PUBLIC`` is not ``/public``
(refused here by the policy, not by normalisation); an upstream that folds case must
write its own rules in lower case.
"""

from __future__ import annotations

import re

import pytest

from .conftest import Stack, raw

_OVERLONG = {
    b"\xc0\xaf": b"/",
    b"\xc0\xae": b".",
    b"\xe0\x80\xaf": b"/",
    b"\xe0\x80\xae": b".",
    b"\xc1\x9c": b"\\",
}


def _pct(data: bytes) -> bytes:
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)


def _dots(path: str) -> str:
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


def readings(path: str) -> set[str]:
    """Every path a lenient upstream might make of ``path`` (decoded at most once)."""
    found = set()
    for rounds in (0, 1):
        data = path.encode("latin-1")
        for _ in range(rounds):
            data = _pct(data)
        for bad, good in _OVERLONG.items():
            data = data.replace(bad, good)
        text = data.decode("latin-1").replace("\\", "/").split("\x00")[0]
        for variant in (text, re.sub(r";[^/]*", "", text)):
            found.add(_dots(variant))
            found.add(_dots(variant).lower())
    return found


def _allowed(path: str) -> bool:
    return path == "/public" or path.startswith("/public/")


TARGETS = [
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/.%2e/admin",
    "/public/..%2fadmin",
    "/public/%2fadmin",
    "/public%2f..%2fadmin",
    "/public/..%5cadmin",
    "/public\\..\\admin",
    "/public/%5c..%5cadmin",
    "/public/%c0%ae%c0%ae/admin",
    "/public/%c0%af../admin",
    "/public/%e0%80%ae%e0%80%ae/admin",
    "/public/..%c1%9cadmin",
    "/public;/../admin",
    "/public/..;/admin",
    "/public/.;/admin",
    "/;/public/../admin",
    "/public;x=1",
    "//admin",
    "//public/../../admin",
    "/public//../../admin",
    "/./public/./../admin",
    "/PUBLIC/../admin",
    "/Public",
    "/%70ublic/../admin",
    "/%70ublic",
    "/admin%00/public",
    "/public%00/../admin",
    "/public/%00",
    "/public/%u002e%u002e/admin",
    "/public/%2",
    "/public/%zz",
    "/public/\x7f",
    "/public/\xff",
    "/public#/../admin",
    "/public/....//admin",
    "/publicadmin",
    "/public.json/../../admin",
    "*",
    "admin",
]


@pytest.mark.parametrize("target", TARGETS)
def test_no_spelling_reaches_a_forbidden_path(fresh: Stack, target: str) -> None:
    request = (
        f"GET {target} HTTP/1.1\r\nHost: only.localhost\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    response, out = raw(fresh.port, request)
    assert response is not None, out
    assert response.status < 500, out[:300]
    if response.status >= 300:
        assert fresh.app.requests == [], (target, [r.target for r in fresh.app.requests])
        return
    assert response.status == 200
    [seen] = fresh.app.requests
    assert _allowed(seen.path), (target, seen.target)
    escapes = {p for p in readings(seen.path) if not _allowed(p)}
    assert not escapes, (target, seen.target, escapes)


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/public", "/public"),
        ("/public/a/b?x=1", "/public/a/b?x=1"),
        ("/public/%61", "/public/a"),  # unreserved escapes decoded (RFC 3986 §6.2.2.2)
        ("/public/./a/../b", "/public/b"),  # dot segments removed (§5.2.4)
        ("/public//a", "/public/a"),
        ("/public/%3a", "/public/%3A"),  # reserved escapes kept, hex upper-cased
    ],
)
def test_allowed_paths_are_forwarded_in_their_normalised_form(
    fresh: Stack, target: str, forwarded: str
) -> None:
    """The policy and the upstream see the same normalised path."""
    request = f"GET {target} HTTP/1.1\r\nHost: only.localhost\r\nConnection: close\r\n\r\n"
    response, _ = raw(fresh.port, request.encode())
    assert response is not None and response.status == 200
    assert [r.target for r in fresh.app.requests] == [forwarded]


@pytest.mark.parametrize("target", ["/admin", "/", "/publi", "/.pomerium/../admin"])
def test_forbidden_paths_are_denied_without_reaching_the_upstream(
    fresh: Stack, target: str
) -> None:
    request = f"GET {target} HTTP/1.1\r\nHost: only.localhost\r\nConnection: close\r\n\r\n"
    response, _ = raw(fresh.port, request.encode())
    assert response is not None and response.status in (302, 401, 403)
    assert fresh.app.requests == []


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/public/%252e%252e/admin", "/public/%252e%252e/admin"),
        ("/public/%25%32%65%25%32%65/admin", "/public/%252e%252e/admin"),
    ],
)
def test_double_encoding_is_forwarded_literally(fresh: Stack, target: str, forwarded: str) -> None:
    """``%25`` stays ``%25`` (decoding unreserved escapes only): the upstream, decoding
    once, sees the literal text ``%2e%2e``, never a dot segment. An upstream that decodes
    twice is outside what any proxy can protect (documented in docs/security.md)."""
    request = f"GET {target} HTTP/1.1\r\nHost: only.localhost\r\nConnection: close\r\n\r\n"
    response, _ = raw(fresh.port, request.encode())
    assert response is not None and response.status == 200
    assert [r.target for r in fresh.app.requests] == [forwarded]
