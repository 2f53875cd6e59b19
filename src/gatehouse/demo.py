"""The embedded default: what ``gatehouse run`` serves with no ``--config``.

For now a plain-HTTP listener on ``:8080`` whose ``*.localhost`` hosts answer with a page
explaining how to configure routes; the built-in identity provider and verify app are
added to it as they land.
"""

from __future__ import annotations

from .config.loader import LoadedConfig, load_text

DEMO_ADDRESS = ":8080"

DEMO_CONFIG = f"""
address: "{DEMO_ADDRESS}"
insecure_server: true
routes:
  - from: http://*.localhost
    response:
      status: 200
      body: "gatehouse is running. Start it with --config FILE to proxy your own routes."
    allow_public_unauthenticated_access: true
"""


def demo_config() -> tuple[str | None, LoadedConfig]:
    """The demo's config (no file to watch) and its validated options."""
    return None, load_text(DEMO_CONFIG, "<built-in demo>")
