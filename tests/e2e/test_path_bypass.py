"""Path-bypass attempts end to end: raw targets through a real gatehouse to a recording upstream.

Three routes share one recording upstream:

* ``app.localhost`` — signed-in alice is allowed, a ``deny`` on ``http_path starts_with /admin``;
* ``pub.localhost`` — anyone (no sign-in) is allowed, the same ``deny`` on ``/admin``;
* ``only.localhost`` — anyone, but only paths under ``/public/``.

Each target is sent as raw bytes (clients would normalise it first). The property checked
for every spelling: either gatehouse answers 4xx and the upstream saw nothing, or the
request was allowed and the upstream received a path that no plausible reading puts under
``/admin`` (:func:`readings` decodes percent-escapes, overlong UTF-8, backslashes, ``;``
parameters and dot segments the way lenient servers do) and that the policy allows. Where
the right answer is known, the exact status (400 unsafe spelling, 403 denied) or the exact
forwarded path is asserted too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authenticate.conftest import ProviderProcess
from e2e.conftest import sso_config
from support.browser import Browser
from support.client import parse_response, send_raw
from support.gatehouse import GatehouseProcess
from support.loop import LoopThread
from support.upstream import Upstream

DENY_ADMIN = {"or": [{"http_path": {"starts_with": "/admin"}}]}


@dataclass(frozen=True)
class Env:
    gh: GatehouseProcess
    upstream: Upstream
    cookie: str


@pytest.fixture(scope="module")
def env(
    idp: ProviderProcess, loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    upstream = Upstream(loop_thread, "app")
    routes = [
        {
            "from": "http://app.localhost",
            "to": upstream.url,
            "policy": [
                {"allow": {"or": [{"email": {"is": "alice@example.com"}}]}, "deny": DENY_ADMIN}
            ],
        },
        {
            "from": "http://pub.localhost",
            "to": upstream.url,
            "policy": [{"allow": {"or": [{"accept": True}]}, "deny": DENY_ADMIN}],
        },
        {
            "from": "http://exact.localhost",
            "to": upstream.url,
            "policy": [
                {
                    "allow": {"or": [{"accept": True}]},
                    "deny": {"or": [{"http_path": {"is": "/admin"}}]},
                }
            ],
        },
        {
            "from": "http://only.localhost",
            "to": upstream.url,
            "policy": [{"allow": {"or": [{"http_path": {"starts_with": "/public/"}}]}}],
        },
    ]
    workdir: Path = tmp_path_factory.mktemp("bypass")
    gh = GatehouseProcess(sso_config(idp, routes), workdir).start()
    try:
        browser = Browser(gh.port)
        assert browser.follow("http://app.localhost/").status_code == 200
        cookie = browser.cookies["app.localhost"]["_gatehouse"]
        yield Env(gh, upstream, cookie)
    finally:
        code = gh.stop()
        upstream.close()
        assert code == 0, gh.stderr_text()


# -- an independent, deliberately lenient reader of paths ------------------------------------

_OVERLONG = {
    b"\xc0\xaf": b"/",
    b"\xc0\xae": b".",
    b"\xe0\x80\xaf": b"/",
    b"\xe0\x80\xae": b".",
    b"\xc1\x9c": b"\\",
    b"\xc0\xdc": b"\\",
}


def _pct_decode(text: str) -> bytes:
    return re.sub(
        rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode("latin-1")
    )


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


def readings(forwarded: str) -> set[str]:
    """Every path a lenient upstream might serve for the forwarded target's path.

    Decoded once (a second decoding is the upstream's own bug), overlong UTF-8 read as
    ASCII, backslashes as slashes, and ``;params`` stripped from raw segments first as
    Tomcat, Jetty and Spring do (they strip before percent-decoding).
    """
    path = forwarded.partition("?")[0].partition("#")[0]
    stripped = "/".join(seg.partition(";")[0] for seg in path.split("/"))
    out = set()
    for raw_path in (path, stripped):
        raw = _pct_decode(raw_path)
        for bad, good in _OVERLONG.items():
            raw = raw.replace(bad, good)
        for candidate in (raw_path, raw.decode("utf-8", "replace")):
            out.add(_dots(candidate))
            out.add(_dots(candidate.replace("\\", "/")))
    return out


def under_admin(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/") or path.startswith("/admin;")


# -- sending raw targets -------------------------------------------------------------------


def send(
    env: Env,
    host: str,
    target: bytes,
    *,
    cookie: bool = True,
    host_header: bytes | None = None,
    version: bytes = b"HTTP/1.1",
) -> int:
    env.upstream.reset()
    lines = [b"GET " + target + b" " + version]
    if host_header is not None:
        lines.append(b"Host: " + host_header)
    elif host:
        lines.append(b"Host: " + host.encode())
    if cookie:
        lines.append(b"Cookie: _gatehouse=" + env.cookie.encode())
    lines += [b"Accept: application/json", b"Connection: close"]
    raw = send_raw(env.gh.port, b"\r\n".join(lines) + b"\r\n\r\n", timeout=10)
    assert raw, f"no response for {target!r}"
    return parse_response(raw).status


def not_admin(path: str) -> bool:
    return not under_admin(path)


def check_safe(
    env: Env, status: int, target: bytes, *, allows: Callable[[str], bool] = not_admin
) -> str | None:
    """The bypass property; returns the forwarded target when the request went through."""
    if 400 <= status < 500:
        assert env.upstream.requests == [], (
            f"{target!r}: {status} but the upstream saw {env.upstream.requests}"
        )
        return None
    assert status == 200, f"{target!r}: unexpected status {status}"
    assert len(env.upstream.requests) == 1
    seen = env.upstream.requests[0].target
    bad = {r for r in readings(seen) if not allows(r)}
    assert not bad, f"{target!r} reached the upstream as {seen!r}, readable as {sorted(bad)}"
    return seen


Expected = int | str | tuple[int | str, ...]


def expect(target: bytes, expected: Expected, status: int, seen: str | None) -> None:
    """``expected``: a status, the exact target the upstream must receive, or a tuple of either."""
    options = expected if isinstance(expected, tuple) else (expected,)
    ok = any(status == e if isinstance(e, int) else seen == e for e in options)
    assert ok, f"{target!r}: status {status}, upstream saw {seen!r}; expected {expected!r}"


# (target, expected): 400 unsafe spelling, 403 denied, or the exact target forwarded.
APP_CASES: list[tuple[bytes, Expected]] = [
    (b"/admin", 403),
    (b"/admin/", 403),
    (b"/admin/x", 403),
    (b"/%61dmin", 403),
    (b"/%61%64%6d%69%6e", 403),
    (b"/%41dmin", "/Admin"),
    (b"/adm%69n/users", 403),
    (b"//admin", 403),
    (b"///admin", 403),
    (b"/./admin", 403),
    (b"/x/../admin", 403),
    (b"/x/y/../../admin", 403),
    (b"/../admin", 403),
    (b"/../../../../admin", 403),
    (b"/x/%2e%2e/admin", 403),
    (b"/x/%2E%2E/admin", 403),
    (b"/x/.%2e/admin", 403),
    (b"/x/%2e./admin", 403),
    (b"/%2e/admin", 403),
    (b"/%2e%2e/admin", 403),
    (b"/admin%2f", 400),
    (b"/admin%2F", 400),
    (b"/admin%2F..", 400),
    (b"/x%2f..%2fadmin", 400),
    (b"/x/..%2fadmin", 400),
    (b"/x/..%2Fadmin", 400),
    (b"/x%2F%2E%2E%2Fadmin", 400),
    (b"/ADMIN", "/ADMIN"),
    (b"/Admin/x", "/Admin/x"),
    (b"\\admin", 400),
    (b"/\\admin", 400),
    (b"/x\\..\\admin", 400),
    (b"/%5cadmin", 400),
    (b"/%5Cadmin", 400),
    (b"/x/..%5cadmin", 400),
    (b"%2e%2e", 400),
    (b"%2e%2e/admin", 400),
    (b"/%c0%afadmin", 400),
    (b"/x/%c0%ae%c0%ae/admin", 400),
    (b"/x/%c0%ae%c0%ae%c0%afadmin", 400),
    (b"/x/%e0%80%ae%e0%80%ae/admin", 400),
    (b"/%c1%9cadmin", 400),
    (b"/%ed%a0%80admin", 400),
    (b"/%f8%80%80%80%afadmin", 400),
    (b"/%ff/admin", 400),
    (b"/admin;x=1", 400),
    (b"/admin;", 400),
    (b"/admin;/x", 400),
    (b"/x/..;/admin", 400),
    (b"/x/.;/admin", 400),
    (b"/x;/../admin", (400, 403)),
    (b"/;/admin", (400, 403)),
    (b"/;x=1/admin", (400, 403)),
    (b"/;/;/admin", (400, 403)),
    (b"/%2e;/admin", 400),
    (b"/x/%2e%2e;/admin", 400),
    (b"/%3b/admin", "/%3B/admin"),
    (b"/admin?x", 403),
    (b"/admin?x=/public", 403),
    (b"/admin#x", 400),
    (b"/x#/../admin", 400),
    (b"/admin%00", 400),
    (b"/admin%00.html", 400),
    (b"/admin%09", 400),
    (b"/admin%0d%0a", 400),
    (b"/admin%20", 403),
    (b"/admin.", 403),
    (b"/admin..", 403),
    (b"/admin/.", 403),
    (b"/admin/..", "/"),
    (b"/%2561dmin", "/%2561dmin"),
    (b"/%%36%31dmin", 400),
    (b"/%61", "/a"),
    (b"/%ef%bd%81dmin", "/%EF%BD%81dmin"),
    (b"/x/../x/./y", "/x/y"),
    (b"/%70ublic//a/./b/", "/public/a/b/"),
    (b"/adm\xc3\xadn", 400),
    (b"*", 400),
    (b"admin", 400),
    (b"app.localhost/admin", 400),
    (b"http://app.localhost/admin", 403),
    (b"HTTP://APP.LOCALHOST/admin", 403),
    (b"http://app.localhost//admin", 403),
    (b"http://app.localhost/x/../admin", 403),
    (b"http://app.localhost/%61dmin", 403),
    (b"http://app.localhost/admin%2f", 400),
    (b"http://app.localhost/admin#x", 403),
    (b"http://app.localhost/admin?x", 403),
    (b"http://app.localhost:80/admin", 403),
    (b"http://app.localhost/ok", "/ok"),
    (b"http://app.localhost", "/"),
    (b"https://app.localhost/admin", 403),
]


def _id(case: tuple[bytes, Expected]) -> str:
    return case[0].decode("latin-1")


@pytest.mark.parametrize("case", APP_CASES, ids=[_id(c) for c in APP_CASES])
def test_signed_in_spellings_of_admin(env: Env, case: tuple[bytes, Expected]) -> None:
    target, expected = case
    status = send(env, "app.localhost", target)
    seen = check_safe(env, status, target)
    expect(target, expected, status, seen)


# Anonymous: the same spellings on a public route (no cookie at all).
PUB_CASES = [c for c in APP_CASES if not c[0].startswith((b"http://", b"HTTP://", b"https://"))] + [
    (b"http://pub.localhost/admin", 403),
    (b"http://pub.localhost/%61dmin", 403),
    (b"http://pub.localhost/x/%2e%2e/admin", 403),
]


@pytest.mark.parametrize("case", PUB_CASES, ids=[_id(c) for c in PUB_CASES])
def test_anonymous_spellings_of_admin(env: Env, case: tuple[bytes, Expected]) -> None:
    target, expected = case
    status = send(env, "pub.localhost", target, cookie=False)
    seen = check_safe(env, status, target)
    expect(target, expected, status, seen)


def _public(path: str) -> bool:
    # readings() drops trailing slashes: "/public/" reads as "/public".
    return path == "/public" or path.startswith("/public/")


# Allow-list route: only /public/... may reach the upstream.
ONLY_CASES: list[tuple[bytes, Expected]] = [
    (b"/public/x", "/public/x"),
    (b"/public/", "/public/"),
    (b"/public", 403),
    (b"/admin", 403),
    (b"/public/../admin", 403),
    (b"/public/%2e%2e/admin", 403),
    (b"/public/%2E%2E/admin", 403),
    (b"/public/.%2e/admin", 403),
    (b"/public/..%2fadmin", 400),
    (b"/public/..%2Fadmin", 400),
    (b"/public%2f..%2fadmin", 400),
    (b"/public/..\\admin", 400),
    (b"/public/..%5cadmin", 400),
    (b"/public/%c0%ae%c0%ae/admin", 400),
    (b"/public/%c0%ae%c0%ae%c0%afadmin", 400),
    (b"/public/..;/admin", 400),
    (b"/public/.;/../admin", 400),
    (b"/public;/../admin", (400, 403)),
    (b"/public/;/../admin", (400, "/public/admin")),
    (b"/public/x/../../admin", 403),
    (b"//public/../admin", 403),
    # Slashes are merged before dot segments are resolved (as nginx's merge_slashes does);
    # what matters is that the policy and the upstream see the same result.
    (b"/public//../admin", 403),
    (b"/public/./x", "/public/x"),
    (b"/%70ublic/x", "/public/x"),
    (b"/public/%2561dmin", "/public/%2561dmin"),
    (b"/public/..%252fadmin", "/public/..%252fadmin"),
    (b"/public?/../admin", 403),
    (b"/public/x?/../../admin", "/public/x?/../../admin"),
    (b"/public/#/../../admin", 400),
    (b"http://only.localhost/public/../admin", 403),
    (b"http://only.localhost/public/x", "/public/x"),
    (b"http://only.localhost/public/x#/../../admin", "/public/x"),
]


@pytest.mark.parametrize("case", ONLY_CASES, ids=[_id(c) for c in ONLY_CASES])
def test_allow_list_route_only_forwards_public_paths(
    env: Env, case: tuple[bytes, Expected]
) -> None:
    target, expected = case
    status = send(env, "only.localhost", target, cookie=False)
    seen = check_safe(env, status, target, allows=_public)
    expect(target, expected, status, seen)


@pytest.mark.parametrize(
    "target",
    [b"/admin", b"/%61dmin", b"//admin", b"/x/../admin", b"/admin;x=1", b"/admin;", b"/;/admin"],
)
def test_exact_path_deny_covers_parameter_spellings(env: Env, target: bytes) -> None:
    """A ``http_path: {is: /admin}`` deny: ``/admin;x=1`` is ``/admin`` to Tomcat, Jetty, Spring."""
    status = send(env, "exact.localhost", target, cookie=False)
    check_safe(env, status, target)
    assert status in (400, 403), (
        f"{target!r}: {status}, upstream saw {env.upstream.requests[0].target!r}"
    )


def test_absolute_form_authority_wins_over_host_header(env: Env) -> None:
    """RFC 9112 §3.2.2: the target's authority replaces Host; a benign Host smuggles nothing."""
    # Host names the allow-list route, the target the deny-/admin route: /admin is denied.
    status = send(
        env, "", b"http://pub.localhost/admin", cookie=False, host_header=b"only.localhost"
    )
    assert status == 403 and env.upstream.requests == []
    # The reverse: Host names the lenient route, the target names the allow-list route.
    status = send(
        env, "", b"http://only.localhost/admin", cookie=False, host_header=b"pub.localhost"
    )
    assert status == 403 and env.upstream.requests == []
    # What the upstream is told is the authority gatehouse routed on.
    status = send(env, "", b"http://pub.localhost/ok", cookie=False, host_header=b"only.localhost")
    assert status == 200
    seen = env.upstream.requests[0]
    assert seen.target == "/ok"
    assert seen.header("x-forwarded-host") == "pub.localhost"


@pytest.mark.parametrize(
    "host",
    [
        b"app.localhost@pub.localhost",
        b"pub.localhost@app.localhost",
        b"app.localhost:80@pub.localhost",
    ],
)
def test_absolute_form_with_userinfo_is_not_routed_to_either_host(env: Env, host: bytes) -> None:
    status = send(
        env, "", b"http://" + host + b"/admin", cookie=False, host_header=b"pub.localhost"
    )
    assert 400 <= status < 500
    assert env.upstream.requests == []


def test_http10_without_host_is_not_routed(env: Env) -> None:
    status = send(env, "", b"/admin", cookie=False, version=b"HTTP/1.0")
    assert 400 <= status < 500 and env.upstream.requests == []


def test_signed_in_allowed_path_reaches_upstream_normalised(env: Env) -> None:
    status = send(env, "app.localhost", b"/%70ublic/./a//b/../c?q=%2e%2e")
    assert status == 200
    assert env.upstream.requests[0].target == "/public/a/c?q=%2e%2e"
