"""Everything ``gatehouse run`` would refuse, found without serving.

``gatehouse check`` and ``gatehouse run`` both call :func:`startup_problems`, so a config
that ``check`` passes starts, and one that cannot start is refused by ``run`` once, with
the same messages, before it binds or forks. It does what a worker does at start-up, short
of I/O to other services: reads every ``*_file`` the config names, the secrets and keys,
the certificates, builds the session manager and the identity-provider client
registration, and compiles every route and policy. Each step is independent, so every
problem is reported at once, located at the key it is about and sorted by line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from .config.loader import LoadedConfig, Location, format_loc
from .config.options import Options, sign_in_checks
from .config.routes import RouteOptions
from .errors import ConfigError
from .proxy.state import Services, build_state

#: A problem's leading key (``cookie_secret_file: …``).
_KEY = re.compile(r"(?:[^:]+:\d+: )?(?P<key>[A-Za-z_][\w.\[\]]*): ")


def startup_problems(loaded: LoadedConfig, *, scratch_data_dir: bool = False) -> list[str]:
    """Every reason this config cannot start, located and sorted (empty: it can).

    ``scratch_data_dir``: generate nothing in the configured ``data_dir`` (for ``check``):
    secrets and keys that ``run`` would create there go to a throwaway directory.
    """
    if not scratch_data_dir:
        return _problems(loaded)
    with tempfile.TemporaryDirectory(prefix="gatehouse-check-") as scratch:
        options = loaded.options.model_copy(update={"data_dir": scratch})
        return _problems(dataclasses.replace(loaded, options=options))


def _problems(loaded: LoadedConfig) -> list[str]:
    options = loaded.options
    unreadable = unreadable_files(options)
    sign_in = sign_in_checks(options)
    problems = [loaded.at(loc, message) for loc, message in unreadable + sign_in]
    # A file that cannot be read is reported once, by the check above, not again by
    # each step that would read it.
    skip = {format_loc(loc) for loc, _ in unreadable}

    def attempt(step: Callable[[], object]) -> bool:
        try:
            step()
        except ConfigError as exc:
            problems.extend(p for p in exc.problems if _key_of(p) not in skip)
            return False
        return True

    services = Services()
    # Without what sign-in needs, check the routes and keys without sign-in (it would only
    # fail again on the same missing key).
    if sign_in or not attempt(lambda: _dry_services(options, services)):
        services = Services()
    try:
        attempt(lambda: build_state(loaded, services))
    finally:
        if services.http_client is not None:
            asyncio.run(services.http_client.aclose())
    if not options.insecure_server:
        from .tls.certificates import certificate_pairs, load_all

        # Every configured certificate loads (none configured: one is generated at start).
        attempt(lambda: load_all(certificate_pairs(options)))
    # Checked even without metrics_address, as Pomerium validates the certificate.
    from .observability.metrics_tls import metrics_tls_context

    attempt(lambda: metrics_tls_context(options))
    return loaded.sorted_problems(problems)


def unreadable_files(options: Options) -> list[tuple[Location, str]]:
    """Every ``*_file`` key (global and per route) whose file cannot be read."""
    found: list[tuple[Location, str]] = []

    def check(loc: Location, value: object) -> None:
        if not isinstance(value, str) or not value:
            return
        path = Path(value).expanduser()
        if not path.is_file():
            found.append((loc, f"cannot read {value}: no such file"))
        elif not os.access(path, os.R_OK):
            found.append((loc, f"cannot read {value}: permission denied"))

    for name in type(options).model_fields:
        if name.endswith("_file"):
            check((name,), getattr(options, name))
    # The route keys naming files, found once (10,000 routes times every field name was
    # a third of checking such a config).
    route_files = [n for n in RouteOptions.model_fields if n.endswith("_file")]
    for key in ("routes", "policy"):
        for i, route in enumerate(getattr(options, key)):
            for name in route_files:
                value = getattr(route, name)
                if value:
                    check((key, i, name), value)
    return found


def _dry_services(options: Options, services: Services) -> None:
    """Fill ``services`` as ``start_services`` does for a worker, without connecting."""
    if options.idp_provider is None:
        return
    from .authenticate import new_http_client
    from .idp.store import MemoryStateStore
    from .sessions.manager import build_session_manager

    services.sessions = build_session_manager(options)
    services.http_client = new_http_client()
    if options.idp_provider == "builtin":
        services.idp_store = MemoryStateStore()


def store_warning(options: Options) -> str | None:
    """Why the shared session store (Redis, PostgreSQL) does not answer now, if it does not.

    Not a start-up problem: ``run`` starts without it and answers 503 to requests that
    need a session until it is back. ``check`` says so (connecting, creating nothing).
    Call only for a config without start-up problems.
    """
    from .sessions.backends import SHARED_TYPES, connection_string

    if options.idp_provider is None or options.databroker_storage_type not in SHARED_TYPES:
        return None
    from .errors import ServiceUnavailable
    from .sessions.manager import build_session_manager

    async def probe() -> str | None:
        store = build_session_manager(options).store
        try:
            await store.ping()
        except ServiceUnavailable as exc:
            return str(exc)
        finally:
            await store.close()
        return None

    reason = asyncio.run(probe())
    if reason is None:
        return None
    return (
        f"{connection_string(options)[1]}: {reason}; gatehouse run starts anyway and "
        "answers 503 to requests that need a session until the store is reachable"
    )


def _key_of(problem: str) -> str | None:
    match = _KEY.match(problem)
    return match["key"] if match else None
