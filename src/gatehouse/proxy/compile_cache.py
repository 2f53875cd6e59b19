"""Compiled routes kept from one config to the next, so a reload recompiles only what
changed.

A route's compiled form (matcher, headers, balancer, policy) depends on the route's own
options and on the global options. The loader hands a route whose data did not change
over as the very same (frozen) options object (``config.loader._RouteCache``), so
:class:`RouteCompiler` keys each compiled route by its options object and keeps the set
of the config last built: a new config with the same global options reuses every route
whose options are unchanged, at whatever position it now is (the index is the only field
that differs). Keying by identity costs nothing per route (a JSON key per route, ~20 us,
was a fifth of compiling 10,000); options made elsewhere (not by the loader) are simply
compiled. Any change to the global options compiles every route again, since any route
may read them. A config that fails to compile leaves the kept set as it was.

One compiler serves the whole process (:func:`shared_compiler`): ``gatehouse run`` checks
the config (building it once) before its worker builds it again, and workers forked after
the check inherit what it compiled.
"""

from __future__ import annotations

import dataclasses

from ..authorize.policy import Policy, compile_route_policy
from ..config.options import Options
from ..config.routes import RouteOptions
from ..errors import ConfigError
from ..timeslice import Steps, drive
from ..tls.downstream import DownstreamTrust, downstream_steps
from .router import Route, RouteParts, attach_client_trust, compile_route

#: Reused routes between two points where a sliced reload may pause (a compiled one
#: pauses after itself).
REUSED_PER_STEP = 256


class RouteCompiler:
    """Compiles a config's routes, reusing those of the previous config (per process)."""

    def __init__(self) -> None:
        self._globals: str | None = None
        #: The last config's compiled routes by their options object's id; the value
        #: keeps the object alive, so the id is not reused while it is kept.
        self._kept: dict[int, tuple[RouteOptions, Route]] = {}
        #: Routes compiled (not reused) by the last :meth:`compile`, for logs and tests.
        self.compiled_last = 0

    def compile(self, options: Options) -> list[Route]:
        """Every route of ``options`` compiled, in order.

        Raises:
            ConfigError: listing every route's problems.
        """
        return drive(self.compile_steps(options))

    def compile_steps(self, options: Options) -> Steps[list[Route]]:
        """:meth:`compile` as a generator that pauses after each route compiled and every
        :data:`REUSED_PER_STEP` reused (a reload sliced on the event loop)."""
        globals_key = options.model_dump_json(exclude={"routes", "policy"})
        previous = self._kept if globals_key == self._globals else {}
        kept: dict[int, tuple[RouteOptions, Route]] = {}
        routes: list[Route] = []
        problems: list[str] = []
        compiled = 0
        client_cas: DownstreamTrust | None = None
        #: Routes with the same rules share one compiled policy (see compile_route_policy).
        policies: dict[str, Policy] = {}
        parts: RouteParts | None = None
        for i, route_options in enumerate(options.all_routes):
            hit = kept.get(id(route_options)) or previous.get(id(route_options))
            if hit is not None and hit[0] is route_options:
                route = hit[1]
                if route.index != i:
                    route = dataclasses.replace(route, index=i)
                if i % REUSED_PER_STEP == REUSED_PER_STEP - 1:
                    yield
            else:
                compiled += 1
                if parts is None:  # the per-config parts once, when a route needs them
                    parts = RouteParts(options)
                route = compile_route(options, route_options, i, parts)
                if client_cas is None:  # read the client CAs once, when a route needs them
                    client_cas = yield from downstream_steps(options)
                attach_client_trust(route, client_cas, i)
                try:
                    policy = compile_route_policy(route_options, i, policies)
                except ConfigError as exc:
                    problems.extend(exc.problems)
                    continue
                object.__setattr__(route, "policy", policy)
                yield
            kept.setdefault(id(route_options), (route_options, route))
            routes.append(route)
        if problems:
            raise ConfigError(problems)
        retired, self._globals, self._kept = self._kept, globals_key, kept
        self.compiled_last = compiled
        # The last config's entries freed a part at a time (10,000 took ~1 ms at once).
        del previous
        while retired:
            for _ in range(min(len(retired), REUSED_PER_STEP)):
                retired.popitem()
            yield
        return routes


_SHARED = RouteCompiler()


def shared_compiler() -> RouteCompiler:
    """The process's compiler (reuse is keyed by content, so sharing it is always safe)."""
    return _SHARED
