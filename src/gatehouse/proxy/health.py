"""Active HTTP health checks of a route's endpoints (Pomerium's ``health_checks``,
Envoy's ``HealthCheck`` with ``http_health_check``).

Theory of operation: one task per balancer and worker, started by the balancer's first
pick (there is no event loop when routes are compiled). Every endpoint is checked at
start, then every ``interval`` (``unhealthy_interval`` while unhealthy) plus up to
``interval_jitter``: a ``GET path`` over a new connection, answered within ``timeout``
(over HTTP/2 for ``h2c://`` endpoints, :mod:`.health_h2`), or with ``grpc_health_check``
a call of the gRPC health-checking protocol, healthy when SERVING.
A status in ``expected_statuses`` (default 200) is a pass; any other status makes the
endpoint unhealthy at once (Envoy ignores ``unhealthy_threshold`` for a bad status);
a timeout or failed connection counts, and ``unhealthy_threshold`` of them in a row make
it unhealthy. ``healthy_threshold`` passes in a row make an unhealthy endpoint healthy.
With several entries in ``health_checks`` an endpoint is healthy only while every one
says so. The task holds its balancer weakly (through a :class:`Subject`, since balancers
are compiled by mypyc and its native classes take no weak references): when a reload
retires the route, the balancer and its subject are collected and the task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..config.upstream_health import HealthCheck
from .health_h2 import probe_grpc, probe_h2

if TYPE_CHECKING:
    from .balancer import Balancer, Target

log = logging.getLogger("gatehouse.proxy")

#: Longest status line read from a health-check response, bytes.
MAX_STATUS_LINE_BYTES = 1024
#: Tasks running (the loop keeps only weak references to tasks).
_RUNNING: set[asyncio.Task[None]] = set()


class CheckState:
    """One (endpoint, check) pair's counters."""

    __slots__ = ("check", "due", "failures", "healthy", "passes")

    def __init__(self, check: HealthCheck) -> None:
        self.check = check
        self.healthy = True
        self.failures = 0
        self.passes = 0
        self.due = time.monotonic() + random.uniform(0, check.initial_jitter)


class Subject:
    """What a check task holds weakly; the balancer keeps it (and it the balancer) alive."""

    __slots__ = ("__weakref__", "balancer")

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer


def _deref(ref: weakref.ref[Subject]) -> Balancer | None:
    subject = ref()
    return subject.balancer if subject is not None else None


def start(balancer: Balancer) -> Subject:
    """Start checking ``balancer``'s endpoints in the running loop; the balancer must keep
    the returned subject (when both are collected, the checks stop)."""
    subject = Subject(balancer)
    _spawn(asyncio.get_running_loop(), _run(weakref.ref(subject)))
    return subject


async def _run(ref: weakref.ref[Subject]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        balancer = _deref(ref)
        if balancer is None:
            return
        now = time.monotonic()
        for target in balancer.targets:
            for state in target.checks:
                if state.due <= now:
                    state.due = float("inf")  # not due again until this check is done
                    _spawn(loop, _check_once(ref, target, state))
        upcoming = min((s.due for t in balancer.targets for s in t.checks), default=now + 1.0)
        del balancer  # held only weakly while waiting
        # At most a second: a retired balancer's task ends soon after it is collected.
        await asyncio.sleep(min(max(upcoming - time.monotonic(), 0.01), 1.0))


def _spawn(loop: asyncio.AbstractEventLoop, step: Coroutine[Any, Any, None]) -> None:
    task = loop.create_task(step)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)


async def _check_once(ref: weakref.ref[Subject], target: Target, state: CheckState) -> None:
    check = state.check
    status = await probe(target, check)
    http = check.http_health_check
    ranges = http.expected_statuses if http is not None else []
    passed = status is not None and (
        any(r.start <= status < r.end for r in ranges) if ranges else status == 200
    )
    was = state.healthy
    if passed:
        state.failures = 0
        state.passes += 1
        if not state.healthy and state.passes >= check.healthy_threshold:
            state.healthy = True
    else:
        state.passes = 0
        state.failures += 1
        # A bad status is unhealthy at once; timeouts and refusals need the threshold.
        if status is not None or state.failures >= check.unhealthy_threshold:
            state.healthy = False
    interval = check.interval if state.healthy else (check.unhealthy_interval or check.interval)
    state.due = time.monotonic() + interval + random.uniform(0, check.interval_jitter)
    if was != state.healthy:
        log.warning(
            "upstream %s is now %s",
            target.url_text,
            "healthy" if state.healthy else "unhealthy",
            extra={"upstream": target.url_text, "status": status},
        )
        balancer = _deref(ref)
        if balancer is not None:
            balancer.health_changed()


_h2_context: ssl.SSLContext | None = None


def _default_h2_context() -> ssl.SSLContext:
    """System roots, name checked, ALPN ``h2`` (an https endpoint without route TLS)."""
    global _h2_context
    if _h2_context is None:
        _h2_context = ssl.create_default_context()
        _h2_context.set_alpn_protocols(["h2"])
    return _h2_context


def _h2_tls(target: Target) -> ssl.SSLContext | None:
    """The ``h2`` client context for an https endpoint (``None``: h2c)."""
    endpoint = target.endpoint
    if endpoint.scheme != "https":
        return None
    return endpoint.h2_tls_context or _default_h2_context()


async def probe(target: Target, check: HealthCheck) -> int | None:
    """The status of one ``GET`` of the check's path (0: not HTTP), or ``None`` (no
    answer in time, no connection). A gRPC check counts as 200 when SERVING, else 503."""
    endpoint = target.endpoint
    grpc = check.grpc_health_check
    if grpc is not None:
        authority = grpc.authority.encode("latin-1") if grpc.authority else target.host_header
        try:
            async with asyncio.timeout(check.timeout):
                serving = await probe_grpc(
                    endpoint.host,
                    endpoint.port,
                    authority,
                    grpc.service_name,
                    _h2_tls(target),
                    endpoint.server_name or endpoint.host,
                )
        except TimeoutError:
            return None
        return None if serving is None else 200 if serving else 503
    http = check.http_health_check
    if http is None:  # pragma: no cover - the config requires one of the two
        return None
    host = http.host.encode("latin-1") if http.host else target.host_header
    if endpoint.scheme == "h2c" or http.codec_client_type == "HTTP2":
        try:
            async with asyncio.timeout(check.timeout):
                return await probe_h2(
                    endpoint.host,
                    endpoint.port,
                    host,
                    http.path.encode("latin-1"),
                    _h2_tls(target),
                    endpoint.server_name or endpoint.host,
                )
        except TimeoutError:
            return None
    ctx: ssl.SSLContext | None = None
    if endpoint.scheme == "https":
        ctx = target.tls_context or ssl.create_default_context()
    request = (
        b"GET " + http.path.encode("latin-1") + b" HTTP/1.1\r\nhost: " + host + b"\r\n"
        b"user-agent: gatehouse/health-check\r\nconnection: close\r\n\r\n"
    )
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(
                endpoint.host,
                endpoint.port,
                ssl=ctx,
                server_hostname=(endpoint.server_name or endpoint.host) if ctx else None,
            )
            writer.write(request)
            line = await reader.readuntil(b"\r\n")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    parts = line[:MAX_STATUS_LINE_BYTES].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return 0  # not HTTP: a failed check, like a bad status
    return int(parts[1])
