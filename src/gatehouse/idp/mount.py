"""Mounting the built-in provider in gatehouse (``idp_provider: builtin``).

The provider is served on the authenticate host under :data:`DEFAULT_BASE_PATH`, so its
issuer is ``authenticate_service_url`` + ``/.gatehouse/idp``. gatehouse's own relying party
talks to it *in process*, through :class:`InProcessTransport`: the issuer's host (often
``authenticate.localhost``) need not resolve from the server, and no socket is used.
Everything else is wired as for any OpenID provider: the relying party registers as a
client with a secret derived from ``shared_secret``, and the provider's signing key and
browser-cookie key are kept in (or derived for) the data directory so every worker agrees.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..config.options import Options
from ..constants import SIGNED_OUT_PATH
from ..datadir import create_once
from ..errors import ConfigError
from ..http.messages import Headers, Request
from .clients import ClientRegistration
from .provider import DEFAULT_BASE_PATH, BuiltinProvider
from .store import StateStore

#: Client id gatehouse registers with its own built-in provider when none is configured.
DEFAULT_CLIENT_ID = "gatehouse"
KEY_FILE = "idp_signing_key.pem"


def _derive(secret: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def builtin_issuer(options: Options) -> str:
    base = (options.authenticate_service_url or "").rstrip("/")
    return base + DEFAULT_BASE_PATH


def _signing_key(options: Options) -> bytes:
    """The provider's own key (never the assertion key): generated once in data_dir."""
    path = Path(options.data_dir).expanduser() / KEY_FILE

    def generate() -> bytes:
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    try:
        return create_once(path, generate)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot create the built-in IdP key ({exc.strerror})"]) from exc


def relying_party_options(options: Options, secret: bytes) -> Options:
    """``options`` as gatehouse's relying party needs them to talk to the built-in provider."""
    client_secret = (
        options.idp_client_secret or _derive(secret, b"gatehouse builtin idp client").hex()
    )
    return options.model_copy(
        update={
            "idp_provider": "oidc",
            "idp_provider_url": builtin_issuer(options),
            "idp_client_id": options.idp_client_id or DEFAULT_CLIENT_ID,
            "idp_client_secret": client_secret,
        }
    )


def build_provider(options: Options, secret: bytes, store: StateStore) -> BuiltinProvider:
    """The provider for ``options`` with gatehouse registered as its client."""
    rp = relying_party_options(options, secret)
    auth_url = (options.authenticate_service_url or "").rstrip("/")
    client = ClientRegistration(
        client_id=rp.idp_client_id or DEFAULT_CLIENT_ID,
        client_secret=rp.idp_client_secret,
        redirect_uris=(auth_url + options.authenticate_callback_path,),
        post_logout_redirect_uris=(auth_url + SIGNED_OUT_PATH,),
        name="gatehouse",
    )
    return BuiltinProvider(
        builtin_issuer(options),
        options.idp_users,
        [client],
        _signing_key(options),
        secret=_derive(secret, b"gatehouse builtin idp browser"),
        store=store,
    )


class InProcessTransport(httpx.AsyncBaseTransport):
    """Serves requests for the provider's issuer from its handlers, without a socket."""

    def __init__(self, provider: BuiltinProvider) -> None:
        self.provider = provider
        self.routes = provider.routes()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        handler = self.routes.get(url.path)
        if url.host.lower() != self.provider.host or handler is None:
            return httpx.Response(404, content=b"not found")
        body = await request.aread()
        response = await handler(
            Request(
                method=request.method,
                scheme=url.scheme,
                host=url.host.lower(),
                port=url.port,
                path=url.path,
                query=url.query.decode("ascii", "replace"),
                headers=Headers(
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                ),
                client_ip="127.0.0.1",
                body=body,
            )
        )
        return httpx.Response(response.status, headers=response.headers, content=response.body)


def in_process_client(provider: BuiltinProvider) -> httpx.AsyncClient:
    """An HTTP client whose requests to the provider never leave the process."""
    return httpx.AsyncClient(
        transport=InProcessTransport(provider),
        follow_redirects=False,
        timeout=10.0,
        trust_env=False,
    )
