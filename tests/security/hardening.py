"""A gatehouse of their own for the hardening tests (credentials, upgrades, header
spellings, WebSocket Origin, internal-endpoint spellings).

Each module starts one gatehouse (``gatehouse run``, port 0) signing in through
:class:`security.idp.HostileIdp` (honest here), with the routes and options its cases need;
the shared red-team stack keeps its own configuration.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.browser import Browser
from support.gatehouse import GatehouseProcess

from .idp import CLIENT_ID, CLIENT_SECRET, HostileIdp

AUTH = "http://authenticate.localhost"
ALICE = [{"allow": {"or": [{"email": {"is": "alice@example.com"}}]}}]
#: Anyone, but only under ``/public/``.
ONLY_PUBLIC = [{"allow": {"or": [{"http_path": {"starts_with": "/public/"}}]}}]


def _secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@contextmanager
def gatehouse(
    workdir: Path,
    routes: list[dict[str, Any]],
    discovery_extra: dict[str, str] | None = None,
    **extra: Any,
) -> Iterator[tuple[GatehouseProcess, HostileIdp]]:
    """A running gatehouse and its IdP; stopped (exit status 0 asserted) on exit.

    ``discovery_extra`` adds endpoints (paths) to the IdP's discovery document.
    """
    idp = HostileIdp().start()
    if discovery_extra:
        honest = idp.discovery
        added = {k: idp.issuer + v for k, v in discovery_extra.items()}
        idp.discovery = lambda: {**honest(), **added}  # type: ignore[method-assign]
    config = {
        "authenticate_service_url": AUTH,
        "idp_provider": "oidc",
        "idp_provider_url": idp.issuer,
        "idp_client_id": CLIENT_ID,
        "idp_client_secret": CLIENT_SECRET,
        "idp_scopes": ["openid", "profile", "email"],
        "shared_secret": _secret(),
        "cookie_secret": _secret(),
        "databroker_storage_type": "memory",
        "routes": routes,
        **extra,
    }
    gh = GatehouseProcess(config, workdir).start()
    try:
        yield gh, idp
    finally:
        code = gh.stop()
        idp.stop()
        assert code == 0, gh.stderr_text()


def signed_in(port: int, url: str) -> Browser:
    """A browser signed in as alice that has landed on ``url``."""
    browser = Browser(port)
    final = browser.follow(url)
    assert final.status_code == 200, (final.status_code, final.text[:300])
    return browser


def unhandled_errors(gh: GatehouseProcess) -> list[dict[str, Any]]:
    """Process-log records of errors gatehouse did not expect (tracebacks, 500s)."""
    return [r for r in gh.logs() if r.get("level") in ("error", "critical") or "exception" in r]
