"""The embedded default: what ``gatehouse run`` (no ``--config``) and ``gatehouse demo`` serve.

Single sign-on with JWTs on one machine, with nothing else installed: plain HTTP on
``127.0.0.1:8080`` (``ADDRESS`` overrides it), ``*.localhost`` hosts (browsers resolve them to
this machine), the authenticate service at ``authenticate.localhost`` with the built-in
identity provider and a demo user whose password is generated once and printed at
start, SQLite sessions and generated keys in the data directory, and the verify app
behind ``verify.localhost`` with ``pass_identity_headers``.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
from pathlib import Path

import yaml

from .config.loader import LoadedConfig, load_text
from .config.server import ServerOptions
from .datadir import create_once

DEMO_PORT = 8080
DEMO_USER = "demo"
DEMO_EMAIL = "demo@example.com"
PASSWORD_FILE = "demo_password"  # noqa: S105 - a file name


def _data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR") or ServerOptions().data_dir).expanduser()


def demo_password(data_dir: Path) -> str:
    """The demo user's password: generated once (mode 0600), the same on every start."""
    path = data_dir / PASSWORD_FILE
    return create_once(path, lambda: (secrets.token_urlsafe(12) + "\n").encode()).decode().strip()


def _start_verify_app(port: int) -> int:
    """Run the verify app on a free loopback port in a thread; returns the port."""
    from .verify.app import serve

    server = serve("127.0.0.1", 0, f"http://127.0.0.1:{port}/.well-known/pomerium/jwks.json")
    threading.Thread(target=server.serve_forever, name="verify-app", daemon=True).start()
    return int(server.server_port)


def demo_config_text(address: str, port: int, verify_port: int, password_hash: str) -> str:
    config = {
        "address": address,
        "insecure_server": True,
        "workers": 1,
        "authenticate_service_url": f"http://authenticate.localhost:{port}",
        "idp_provider": "builtin",
        "idp_users": [
            {
                "username": DEMO_USER,
                "password_hash": password_hash,
                "email": DEMO_EMAIL,
                "name": "Demo User",
                "groups": ["demo", "admins"],
            }
        ],
        "databroker_storage_type": "sqlite",
        "routes": [
            {
                "from": "http://verify.localhost",
                "to": f"http://127.0.0.1:{verify_port}",
                "pass_identity_headers": True,
                "allow_any_authenticated_user": True,
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def demo_config() -> tuple[LoadedConfig, socket.socket]:
    """Bind the demo's port, start the verify app, and return the config and socket.

    The socket is bound first so that ``ADDRESS=127.0.0.1:0`` (a free port) works: every
    URL in the config names the port actually bound.
    """
    from .idp.passwords import hash_password
    from .serve import bind_socket

    data_dir = _data_dir()
    password = demo_password(data_dir)
    # Loopback only by default: the demo serves plain HTTP with a printed password.
    address = os.environ.get("ADDRESS") or f"127.0.0.1:{DEMO_PORT}"
    probe = load_text(f'address: "{address}"\ninsecure_server: true\n', "<built-in demo>")
    sock = bind_socket(probe.options)
    port = int(sock.getsockname()[1])
    verify_port = _start_verify_app(port)
    text = demo_config_text(address, port, verify_port, hash_password(password))
    loaded = load_text(text, "<built-in demo>")
    print(
        "\n  gatehouse demo: single sign-on with JWTs\n"
        f"  open      http://verify.localhost:{port}\n"
        f"  sign in   user {DEMO_USER!r}  password {password!r}\n"
        f"  you       http://verify.localhost:{port}/.pomerium/\n"
        f"  keys      http://verify.localhost:{port}/.well-known/pomerium/jwks.json\n"
        f"  data      {data_dir}\n",
        file=sys.stderr,
        flush=True,
    )
    return loaded, sock
