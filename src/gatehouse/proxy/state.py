"""The immutable per-config state the pipeline reads: built at load, swapped on reload.

Each reload builds a whole new :class:`ProxyState` from a validated config and the
worker's long-lived :class:`Services`, and swaps the reference the pipeline holds (as
Pomerium's ``proxy/state.go``); requests already running keep the state they started
with. Building it is where per-route work is done once: routes and policies compiled,
signing keys loaded, the relying party and built-in provider set up.

:func:`build_state_steps` is the build as a generator that pauses every ~0.1 ms of work,
so a reload runs it on the event loop in time slices (:mod:`gatehouse.timeslice`) and
answers requests in between; :func:`retired_parts` lists a replaced state's parts in an
order in which they can be freed a few at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..authorize.policy import compile_route_policy
from ..config.loader import LoadedConfig
from ..config.options import Options
from ..constants import JWKS_PATH, WELL_KNOWN_PATH
from ..errors import ConfigError
from ..gcpause import gc_paused
from ..http.connection import Limits
from ..http.messages import Request, Response
from ..http.server import ServerSettings
from ..identity import AssertionMinter, AssertionSpec, WellKnownEndpoints, load_keyset
from ..observability.decisions import DecisionTally
from ..sessions.keys import decode_secret, load_or_create_secret
from ..sessions.manager import SessionManager
from ..timeslice import Steps, drive
from ..tls.downstream import compile_downstream
from .compile_cache import RouteCompiler, shared_compiler
from .portal import RoutesPortal
from .router import Route, Router, attach_client_trust, compile_route, router_steps

if TYPE_CHECKING:  # sign-in is imported when a config signs in (start-up time)
    import httpx

    from ..authenticate.bearer import BearerSessions
    from ..authenticate.endpoints import AuthEndpoints
    from ..authenticate.flow import Authenticator
    from ..idp.store import StateStore

log = logging.getLogger("gatehouse")

EndpointHandler = Callable[[Request], Awaitable[Response]]
#: File in data_dir holding a generated shared_secret (embedded default only).
GENERATED_SHARED_SECRET_FILE = "shared_secret"  # noqa: S105 - a file name


@dataclass
class Services:
    """Long-lived, per-process parts that survive config reloads."""

    sessions: SessionManager | None = None
    http_client: httpx.AsyncClient | None = None
    #: The built-in identity provider's shared state (``idp_provider: builtin``).
    idp_store: StateStore | None = None
    #: Called with ``created``/``refreshed``/``revoked`` (metrics), when set.
    session_event: Callable[[str], None] | None = None
    #: Compiled routes kept between reloads (only changed routes are compiled again).
    route_compiler: RouteCompiler = field(default_factory=shared_compiler)
    #: The last config's router: the next one keeps the per-host tables of hosts whose
    #: routes are unchanged.
    router: Router | None = None
    #: The last config's assertion minter: the next one keeps its cached assertions, so a
    #: reload does not make every active session sign again.
    minter: AssertionMinter | None = None
    #: Ask the serving process to re-read its config file now (set by the worker).
    request_reload: Callable[[], None] | None = None
    #: The digest of the config the serving process runs now (set by the worker).
    current_digest: Callable[[], str] | None = None
    #: This process's policy decisions, for the console (kept across reloads).
    decisions: DecisionTally = field(default_factory=DecisionTally)


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
    #: The authenticate host (lower case) and its handlers.
    authenticate_host: str | None = None
    #: ``authenticate_host`` as bytes (compared with Host headers on every request).
    authenticate_host_bytes: bytes | None = None
    authenticate_endpoints: dict[str, EndpointHandler] = field(default_factory=dict)
    #: ``/.pomerium/*`` handlers on route hosts.
    route_host_endpoints: dict[str, EndpointHandler] = field(default_factory=dict)
    auth: AuthEndpoints | None = None
    #: gatehouse's session cookie name, removed from requests sent upstream.
    session_cookie: bytes | None = None
    minter: AssertionMinter | None = None
    #: Assertion spec per route index.
    specs: dict[int, AssertionSpec] = field(default_factory=dict)
    #: The console's host (lower case) and its handler (``console_url``), and the tally
    #: of decisions it shows (``None``: no console, nothing recorded).
    console_host: str | None = None
    console: EndpointHandler | None = None
    decisions: DecisionTally | None = None
    #: Verifies IdP bearer tokens on the routes whose ``bearer_token_format`` asks for it
    #: (``None``: no route does).
    bearer: BearerSessions | None = None


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
    """Compile every route and its policy; collect every problem before raising."""
    routes: list[Route] = []
    problems: list[str] = []
    client_cas = compile_downstream(options)
    for i, route_options in enumerate(options.all_routes):
        route = compile_route(options, route_options, i)
        attach_client_trust(route, client_cas, i)
        try:
            policy = compile_route_policy(route_options, i)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        object.__setattr__(route, "policy", policy)
        routes.append(route)
    if problems:
        raise ConfigError(problems)
    return routes


def shared_secret(options: Options) -> bytes:
    """The decoded ``shared_secret`` (or ``shared_secret_file``), or one generated in data_dir.

    Raises:
        ConfigError: malformed, or missing where replicas must agree (Redis store).
    """
    if options.shared_secret:
        return decode_secret(options.shared_secret, name="shared_secret")
    if options.shared_secret_file:
        try:
            text = Path(options.shared_secret_file).expanduser().read_text()
        except OSError as exc:
            raise ConfigError([f"shared_secret_file: cannot read ({exc.strerror})"]) from exc
        return decode_secret(text, name="shared_secret_file")
    if options.databroker_storage_type in ("redis", "postgres"):  # replicas must agree
        kind = options.databroker_storage_type
        raise ConfigError([f"shared_secret is required with databroker_storage_type: {kind}"])
    return load_or_create_secret(Path(options.data_dir).expanduser() / GENERATED_SHARED_SECRET_FILE)


def _scheme_lookup(router: Router, options: Options) -> Callable[[str, int | None], str]:
    """``(host, port) -> scheme`` users see: the authenticate URL's, else the first route
    serving that host *and port* (``from: http://app:8080`` is matched only with its port,
    exactly as the router does; looking it up without the port found nothing and guessed
    ``https``: Secure cookies on plain HTTP)."""
    auth_url = options.authenticate_service_url
    auth_host = (urlsplit(auth_url).hostname or "").lower() if auth_url else None
    auth_scheme = urlsplit(auth_url).scheme if auth_url else "https"
    console_host = options.console_host
    console_scheme = urlsplit(options.console_url or "").scheme or "https"

    def scheme_for(host: str, port: int | None) -> str:
        if host == auth_host:
            return auth_scheme
        if host == console_host:
            return console_scheme
        route = router.first_for_host(host, port)
        return route.options.from_scheme if route is not None else "https"

    return scheme_for


def build_state(loaded: LoadedConfig, services: Services | None = None) -> ProxyState:
    """Compile a validated config into the state the pipeline serves from.

    Raises:
        ConfigError: something only detectable while compiling (a policy, a key).
    """
    with gc_paused():
        return drive(build_state_steps(loaded, services))


def build_state_steps(loaded: LoadedConfig, services: Services | None = None) -> Steps[ProxyState]:
    """:func:`build_state` as a generator pausing every ~0.1 ms of work (per route
    compiled, every few hundred reused or indexed); the collector is the caller's."""
    options = loaded.options
    services = services or Services()
    routes = yield from services.route_compiler.compile_steps(options)
    router = yield from router_steps(routes, services.router)
    services.router = router
    yield
    keyset = load_keyset(options)
    budget = options.assertion_cache_max_bytes
    minter = (
        services.minter.for_config(keyset, budget)
        if services.minter is not None
        else AssertionMinter(keyset, cache_max_bytes=budget)
    )
    services.minter = minter
    yield
    specs = yield from _assertion_specs(options, router.routes)
    well_known = WellKnownEndpoints(
        keyset,
        authenticate_url=options.authenticate_service_url,
        callback_path=options.authenticate_callback_path,
    )
    endpoints: dict[str, EndpointHandler] = {
        JWKS_PATH: well_known.jwks,
        WELL_KNOWN_PATH: well_known.pomerium,
    }
    auth_endpoints: AuthEndpoints | None = None
    bearer: BearerSessions | None = None
    authenticate_host: str | None = None
    authenticate_table: dict[str, EndpointHandler] = {}
    route_table: dict[str, EndpointHandler] = {}
    if services.sessions is not None:
        from ..authenticate import build_authenticator
        from ..authenticate.endpoints import AuthEndpoints
        from ..authenticate.redirects import RedirectSigner

        secret = shared_secret(options)
        authenticator: Authenticator | None = None
        if options.idp_provider is not None:
            if not options.authenticate_service_url:
                raise ConfigError(["authenticate_service_url is required with idp_provider"])
            if services.http_client is None:
                raise ConfigError(["internal: no HTTP client for the identity provider"])
            rp_options, client = options, services.http_client
            if options.idp_provider == "builtin":
                if any(r.idp_client_id or r.idp_client_secret for r in options.all_routes):
                    raise ConfigError(
                        ["routes: idp_client_id/idp_client_secret need an external idp_provider"]
                    )
                rp_options, client = _mount_builtin(options, secret, services, authenticate_table)
            try:
                authenticator = build_authenticator(
                    rp_options,
                    shared_secret=secret,
                    client=client,
                    allowed_hosts=lambda: _allowed_hosts(
                        router, authenticate_host, options.console_host
                    ),
                )
            except ValueError as exc:  # the client registration's own checks
                raise ConfigError([str(exc)]) from None
        authenticate_host = (
            (urlsplit(options.authenticate_service_url).hostname or "").lower()
            if options.authenticate_service_url
            else None
        )
        auth_endpoints = AuthEndpoints(
            options,
            services.sessions,
            authenticator,
            RedirectSigner(secret),
            secret,
            _scheme_lookup(router, options),
            minter.forget_session,
            services.session_event,
        )
        authenticate_table.update(auth_endpoints.authenticate_routes())  # type: ignore[arg-type]
        route_table = auth_endpoints.route_host_routes()  # type: ignore[assignment]
        portal = RoutesPortal(
            router.routes, auth_endpoints.request_session, auth_endpoints.sign_in_or_401
        )
        route_table.update(portal.handlers())
        bearer = _bearer_sessions(options, router, authenticator)
        yield
    console: EndpointHandler | None = None
    if options.console_url:
        from ..console import build_console

        console = build_console(loaded, services, auth_endpoints, minter)
        yield
    return ProxyState(
        options=options,
        router=router,
        server_settings=server_settings(options),
        digest=loaded.digest,
        source=loaded.source,
        response_headers=tuple(
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in options.response_headers().items()
        ),
        endpoints=endpoints,
        authenticate_host=authenticate_host,
        authenticate_host_bytes=authenticate_host.encode() if authenticate_host else None,
        authenticate_endpoints=authenticate_table,
        route_host_endpoints=route_table,
        auth=auth_endpoints,
        session_cookie=options.cookie_name.encode("latin-1") if auth_endpoints else None,
        minter=minter,
        specs=specs,
        console_host=options.console_host if console is not None else None,
        console=console,
        decisions=services.decisions if console is not None else None,
        bearer=bearer,
    )


#: Routes given their assertion spec between two points where a sliced build may pause.
SPECS_PER_STEP = 512


def _assertion_specs(options: Options, routes: Sequence[Route]) -> Steps[dict[int, AssertionSpec]]:
    """Each route's assertion spec, one object per distinct issuer format (a spec depends
    only on it and global keys): 10,000 routes share a couple instead of making 10,000."""
    by_format: dict[str | None, AssertionSpec] = {}
    specs: dict[int, AssertionSpec] = {}
    for n, route in enumerate(routes):
        if n % SPECS_PER_STEP == SPECS_PER_STEP - 1:
            yield
        fmt = route.options.jwt_issuer_format
        spec = by_format.get(fmt)
        if spec is None:
            spec = by_format[fmt] = AssertionSpec.for_route(options, route.options)
        specs[route.index] = spec
    return specs


def _bearer_sessions(
    options: Options, router: Router, authenticator: Authenticator | None
) -> BearerSessions | None:
    """The bearer-token verifier for the routes with an ``idp_*`` ``bearer_token_format``.

    Raises:
        ConfigError: such a route but no identity provider to verify tokens with.
    """
    from ..authenticate.bearer import IDP_ACCESS_TOKEN, BearerRule, BearerSessions

    rules: dict[int, BearerRule] = {}
    for route in router.routes:
        kind = options.route_bearer_token_format(route.options)
        if kind == "default":
            continue
        if authenticator is None:
            raise ConfigError(
                [f"route {route.name}: bearer_token_format {kind} needs an idp_provider"]
            )
        rules[route.index] = BearerRule(
            route=route.name,
            format=kind,
            idp_id=authenticator.route_idp_id(route.options),
            audiences=(
                options.route_access_token_audiences(route.options)
                if kind == IDP_ACCESS_TOKEN
                else None
            ),
        )
    if not rules or authenticator is None:
        return None
    return BearerSessions(authenticator.relying_party_for, rules)


def _mount_builtin(
    options: Options, secret: bytes, services: Services, table: dict[str, EndpointHandler]
) -> tuple[Options, httpx.AsyncClient]:
    """Serve the built-in provider on the authenticate host; talk to it in process."""
    from ..idp.mount import build_provider, in_process_client, relying_party_options

    if not options.idp_users:
        raise ConfigError(["idp_provider: builtin needs at least one entry in idp_users"])
    store = services.idp_store
    if store is None:
        raise ConfigError(["internal: no state store for the built-in identity provider"])
    try:
        provider = build_provider(options, secret, store)
    except ValueError as exc:
        raise ConfigError([f"idp_users: {exc}"]) from None
    table.update(provider.routes())
    return relying_party_options(options, secret), in_process_client(provider)


def _allowed_hosts(
    router: Router, authenticate_host: str | None, console_host: str | None = None
) -> list[str]:
    hosts = [r.options.from_host for r in router.routes]
    if authenticate_host:
        hosts.append(authenticate_host)
    if console_host:
        hosts.append(console_host)
    return hosts


def retired_parts(state: ProxyState, loaded: LoadedConfig) -> list[object]:
    """A replaced state's parts for :func:`gatehouse.timeslice.release`: the routes'
    options, the compiled routes and host groups, then the state and its config, so that
    releasing from the end drops each container while its parts are still held."""
    return [*loaded.options.all_routes, *state.router.parts(), state, loaded]


__all__ = [
    "ProxyState",
    "Services",
    "build_state",
    "build_state_steps",
    "retired_parts",
    "shared_secret",
]
