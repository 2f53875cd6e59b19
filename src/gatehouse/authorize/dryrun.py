"""``gatehouse check-policy``: evaluate a route's policy offline, without a server.

An operator gives a URL and who the user is (email, groups, claims ...); the dry run
finds the route the proxy would use (host, then prefix/path/regex, first match in config
order — the same order as :mod:`gatehouse.proxy.router`), normalises the path exactly as
the proxy does, evaluates the compiled policy and prints every rule's outcome.

Exit status: 0 allowed, 3 denied, 4 needs sign-in, 2 for usage or configuration errors,
5 when no route matches.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ..config import Options, RouteOptions, load_file
from ..errors import ConfigError, InvalidPath
from ..proxy.paths import normalize_request_path
from ..sessions.model import Session
from .decision import Decision, Outcome
from .input import PolicyInput
from .policy import compile_route_policy

EXIT_ALLOW, EXIT_USAGE, EXIT_DENY, EXIT_LOGIN, EXIT_NO_ROUTE = 0, 2, 3, 4, 5


class NoRouteMatched(LookupError):
    """The URL matches no route (the proxy would answer 404)."""


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return pattern == host


def _path_matches(route: RouteOptions, path: str) -> bool:
    if route.prefix is not None:
        return path.startswith(route.prefix)
    if route.path is not None:
        return path == route.path
    if route.regex is not None:
        # Envoy's safe_regex matches the whole path.
        return re.fullmatch(route.regex, path) is not None
    return True


def _find_route(
    options: Options, scheme: str, host: str, port: int | None, path: str
) -> tuple[int, RouteOptions]:
    for index, route in enumerate(options.all_routes):
        if route.from_scheme != scheme or not _host_matches(route.from_host, host):
            continue
        if route.from_port is not None and route.from_port != port:
            continue
        if _path_matches(route, path):
            return index, route
    raise NoRouteMatched(f"no route matches {scheme}://{host}{path}")


def _session(
    email: str | None, user: str | None, groups: Sequence[str], claims: Mapping[str, Any]
) -> Session | None:
    if email is None and user is None and not groups and not claims:
        return None
    merged = dict(claims)
    if email is not None:
        merged.setdefault("email", email)
    if groups:
        merged.setdefault("groups", list(groups))
    uid = user if user is not None else str(claims.get("sub", email or "dry-run-user"))
    return Session(
        id="dry-run",
        user_id=uid,
        email=email if email is not None else str(claims.get("email", "")),
        groups=tuple(groups),
        claims=MappingProxyType(merged),
    )


def dry_run_session(
    email: str | None,
    groups: Sequence[str] = (),
    claims: Mapping[str, Any] | None = None,
    user: str | None = None,
) -> Session | None:
    """The session a dry run evaluates with (``None``: anonymous), as ``check-policy`` makes it."""
    return _session(email, user, groups, claims or {})


def evaluate_route(
    route: RouteOptions,
    index: int,
    path: str,
    session: Session | None,
    *,
    method: str = "GET",
    source_ip: str = "127.0.0.1",
    now: datetime | None = None,
    origin: str = "",
    access_control_request_method: str = "",
) -> Decision:
    """Compile one route's policy and decide a request to ``path`` (already normalised).

    Raises:
        ConfigError: the route's policy does not compile.
    """
    policy = compile_route_policy(route, index)
    return policy.evaluate(
        PolicyInput(
            method=method,
            path=path,
            source_ip=source_ip,
            session=session,
            now=now or datetime.now(UTC),
            origin=origin,
            access_control_request_method=access_control_request_method,
        )
    )


def check_policy(
    options: Options,
    url: str,
    *,
    email: str | None = None,
    groups: Sequence[str] = (),
    claims: Mapping[str, Any] | None = None,
    method: str = "GET",
    source_ip: str = "127.0.0.1",
    user: str | None = None,
    now: datetime | None = None,
    origin: str = "",
    access_control_request_method: str = "",
) -> tuple[Decision, str]:
    """Decide a request to ``url`` for the given user; return the decision and a report.

    Without ``email``, ``user``, ``groups`` and ``claims`` the request is anonymous.

    Raises:
        NoRouteMatched: no route matches the URL.
        InvalidPath: the URL's path would be refused by the proxy (400).
        ConfigError: the matched route's policy does not compile.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    path = normalize_request_path(parts.path or "/", allow_parameters=options.allow_path_parameters)
    index, route = _find_route(options, scheme, host, parts.port, path)
    session = _session(email, user, groups, claims or {})
    decision = evaluate_route(
        route,
        index,
        path,
        session,
        method=method,
        source_ip=source_ip,
        now=now,
        origin=origin,
        access_control_request_method=access_control_request_method,
    )
    who = "anonymous"
    if session is not None:
        groups_text = ",".join(session.groups) or "-"
        who = f"user={session.user_id} email={session.email or '-'} groups={groups_text}"
    head = [
        f"request: {method} {scheme}://{host}{path}"
        + (f" (normalised from {parts.path})" if path != (parts.path or "/") else ""),
        f"as: {who} from {source_ip or '-'}",
        f"route: #{index} {route.display_name}",
    ]
    return decision, "\n".join([*head, decision.explain()])


def _parse_claim(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected k=v, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gatehouse check-policy",
        description="Evaluate a route's policy for a URL and a user, without starting a server.",
    )
    p.add_argument("-c", "--config", required=True, help="YAML config file")
    p.add_argument(
        "--url", required=True, help="the request URL, e.g. https://app.example.com/admin"
    )
    p.add_argument("--email", help="the user's email (default: none)")
    p.add_argument("--user", help="the user id (IdP subject)")
    p.add_argument(
        "--groups", default="", help="comma-separated group names or ids (default: none)"
    )
    p.add_argument(
        "--claim",
        action="append",
        default=[],
        type=_parse_claim,
        metavar="K=V",
        help="a claim (repeat; the value is read as JSON when it parses, else as a string; "
        "a repeated name makes a list; default: none)",
    )
    p.add_argument("--method", default="GET", help="the request method (default: GET)")
    p.add_argument(
        "--source-ip", default="127.0.0.1", help="the client's address (default: 127.0.0.1)"
    )
    p.add_argument("--origin", default="", help="Origin header, for cors_preflight (default: none)")
    p.add_argument(
        "--access-control-request-method",
        default="",
        help="Access-Control-Request-Method header, for cors_preflight (default: none)",
    )
    p.add_argument("--at", help="the request time, ISO 8601 (default: now)")
    return p


def main(argv: list[str]) -> int:
    """Run ``gatehouse check-policy``; return the exit status (see module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else 0
    claims: dict[str, Any] = {}
    for key, value in args.claim:
        if key in claims:
            prev = claims[key]
            claims[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            claims[key] = value
    now = None
    if args.at:
        try:
            now = datetime.fromisoformat(args.at)
        except ValueError:
            print(f"check-policy: invalid --at {args.at!r}", file=sys.stderr)
            return EXIT_USAGE
        if now.utcoffset() is None:
            now = now.replace(tzinfo=UTC)
    try:
        options = load_file(args.config).options
        decision, report = check_policy(
            options,
            args.url,
            email=args.email,
            groups=[g for g in args.groups.split(",") if g.strip()],
            claims=claims,
            method=args.method,
            source_ip=args.source_ip,
            user=args.user,
            now=now,
            origin=args.origin,
            access_control_request_method=args.access_control_request_method,
        )
    except ConfigError as exc:
        print("check-policy: configuration errors:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidPath as exc:
        print(f"check-policy: the proxy would refuse this path (400): {exc}", file=sys.stderr)
        return EXIT_DENY
    except NoRouteMatched as exc:
        print(f"check-policy: {exc} (the proxy would answer 404)", file=sys.stderr)
        return EXIT_NO_ROUTE
    print(report)
    return {Outcome.ALLOW: EXIT_ALLOW, Outcome.DENY: EXIT_DENY, Outcome.NEEDS_LOGIN: EXIT_LOGIN}[
        decision.outcome
    ]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
