"""The admin console: routes, headers and policies in a browser, served on ``console_url``.

Access is decided by ``console_policy`` (PPL; unset: nobody) for every page and action;
changes are validated as a whole config, written to the config file (comments and key
order kept), hot-reloaded, and audited. See docs/console.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.loader import LoadedConfig
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..authenticate.endpoints import AuthEndpoints
    from ..http.messages import Request, Response
    from ..identity import AssertionMinter
    from ..proxy.state import Services

#: The audit log's file name in ``data_dir`` when ``console_audit_log`` is unset.
AUDIT_FILE = "console-audit.log"


def build_console(
    loaded: LoadedConfig,
    services: Services,
    auth: AuthEndpoints | None,
    minter: AssertionMinter | None,
) -> Callable[[Request], Awaitable[Response]]:
    """The console's request handler for this config.

    Raises:
        ConfigError: no sign-in configured, a host clash, or ``console_policy`` does not compile.
    """
    from ..proxy.state import shared_secret
    from .app import Console
    from .audit import AuditLog
    from .csrf import CsrfGuard
    from .policy import console_policy

    options = loaded.options
    host = options.console_host or ""
    problems = []
    if auth is None or auth.auth is None:
        problems.append("console_url: the console signs its users in: set idp_provider")
    if host and host == auth_host(options):
        problems.append(f"console_url: {host} is also the authenticate host; use a host of its own")
    for i, route in enumerate(options.all_routes):
        if route.from_host == host:
            problems.append(
                f"console_url: {host} is also the host of routes[{i}]; use a host of its own"
            )
            break
    try:
        policy = console_policy(options)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems or auth is None:
        raise ConfigError(problems)
    scheme = (options.console_url or "").partition(":")[0]
    audit_path = Path(options.console_audit_log or Path(options.data_dir) / AUDIT_FILE).expanduser()
    return Console(
        loaded,
        auth,
        minter,
        services,
        policy,
        CsrfGuard(shared_secret(options), scheme),
        AuditLog(audit_path),
    )


def auth_host(options: object) -> str:
    from urllib.parse import urlsplit

    url = getattr(options, "authenticate_service_url", None)
    return (urlsplit(url).hostname or "").lower() if url else ""


__all__ = ["build_console"]
