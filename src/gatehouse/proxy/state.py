"""The immutable per-config state the pipeline reads: built at load, swapped on reload.

Each reload builds a whole new :class:`ProxyState` from a validated config and swaps the
reference the pipeline holds (as Pomerium's ``proxy/state.go``); requests already running
keep the state they started with. Building it is where per-route work is done once:
routes compiled, policies compiled, keys loaded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..config.loader import LoadedConfig
from ..config.options import Options
from ..http.connection import Limits
from ..http.messages import Request, Response
from ..http.server import ServerSettings
from .router import Route, Router, compile_route

EndpointHandler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class ProxyState:
    """Everything derived from one config."""

    options: Options
    router: Router
    server_settings: ServerSettings
    digest: str
    source: str
    #: Global response headers (secure defaults merged with the config), lower-case names.
    response_headers: tuple[tuple[bytes, bytes], ...] = ()
    #: Handlers answered on every host, by exact normalised path.
    endpoints: dict[str, EndpointHandler] = field(default_factory=dict)


def server_settings(options: Options) -> ServerSettings:
    return ServerSettings(
        limits=Limits(
            max_header_bytes=options.max_request_header_bytes,
            max_url_bytes=options.max_url_bytes,
            max_body_bytes=options.max_request_body_bytes,
        ),
        timeout_request_head_s=options.timeout_request_head,
        timeout_read_s=options.timeout_read,
        timeout_write_s=options.timeout_write,
        timeout_idle_s=options.timeout_idle,
    )


def compile_routes(options: Options) -> list[Route]:
    return [compile_route(options, route, i) for i, route in enumerate(options.all_routes)]


def build_state(loaded: LoadedConfig) -> ProxyState:
    """Compile a validated config into the state the pipeline serves from.

    Raises:
        ConfigError: something only detectable while compiling (a policy, a key).
    """
    options = loaded.options
    return ProxyState(
        options=options,
        router=Router(compile_routes(options)),
        server_settings=server_settings(options),
        digest=loaded.digest,
        source=loaded.source,
        response_headers=tuple(
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in options.response_headers().items()
        ),
    )
