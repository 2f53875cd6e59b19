"""Prometheus metrics (``metrics_address``), safe with several worker processes.

With more than one worker, prometheus-client's multiprocess mode is used: the supervisor
creates a private directory and sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports the client, each worker writes its samples to memory-mapped files there, and
the supervisor serves the merged view. With one worker, the worker serves its own
registry. Nothing is recorded (and the client is never imported) unless
``metrics_address`` is set, so the hot path pays only a ``None`` check.

Label values are bounded: routes come from the config, methods from a fixed list
(others become ``OTHER``), statuses are classes (``2xx``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
from typing import Any

log = logging.getLogger("gatehouse.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Latency buckets (seconds) for requests and upstream calls.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def prepare_multiprocess() -> str:
    """Create the shared sample directory (supervisor, before forking workers)."""
    path = tempfile.mkdtemp(prefix="gatehouse-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def cleanup_multiprocess(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Metrics:
    """Every metric gatehouse records."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        multi = bool(os.environ.get(MULTIPROC_ENV))
        self.requests = Counter(
            "gatehouse_http_requests_total", "Requests served", ["route", "method", "status"]
        )
        self.request_duration = Histogram(
            "gatehouse_http_request_duration_seconds",
            "Time from request head to response end",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
        )
        self.upstream_duration = Histogram(
            "gatehouse_upstream_duration_seconds",
            "Time from sending upstream to the end of its response",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
        )
        self.upstream_errors = Counter(
            "gatehouse_upstream_errors_total", "Upstream failures", ["route", "kind"]
        )
        self.decisions = Counter(
            "gatehouse_authorization_decisions_total", "Policy decisions", ["route", "outcome"]
        )
        self.sessions = Counter("gatehouse_sessions_total", "Session lifecycle events", ["event"])
        self.dependency_errors = Counter(
            "gatehouse_dependency_errors_total", "Session store and IdP failures", ["dependency"]
        )
        self.dependency_duration = Histogram(
            "gatehouse_dependency_duration_seconds",
            "Duration of each call to the IdP or the session store",
            ["dependency", "operation"],
            buckets=LATENCY_BUCKETS_S,
        )
        self.dependency_call_errors = Counter(
            "gatehouse_dependency_call_errors_total",
            "Calls to the IdP or the session store that failed (error, timeout or IdP 5xx)",
            ["dependency", "operation"],
        )
        self.reloads = Counter("gatehouse_config_reloads_total", "Config reloads", ["result"])
        self.config_info = Gauge(
            "gatehouse_config_info",
            "The loaded config's hash (value 1)",
            ["digest"],
            multiprocess_mode="livemax" if multi else "all",
        )
        self.tunnels = Gauge(
            "gatehouse_open_tunnels",
            "Open WebSocket/upgrade tunnels",
            multiprocess_mode="livesum" if multi else "all",
        )
        self._digest: str | None = None

    def dependency_call(self, dependency: str, operation: str, seconds: float, ok: bool) -> None:
        """One call to the IdP or the session store (an ``Observer``, see dependencies.py)."""
        self.dependency_duration.labels(dependency, operation).observe(seconds)
        if not ok:
            self.dependency_call_errors.labels(dependency, operation).inc()

    def request(self, route: str, method: str, status: int, duration_s: float) -> None:
        label_method = method if method in _METHODS else "OTHER"
        self.requests.labels(route, label_method, f"{status // 100}xx").inc()
        self.request_duration.labels(route).observe(duration_s)

    def config_loaded(self, digest: str) -> None:
        if self._digest is not None:
            self.config_info.labels(self._digest).set(0)
        self._digest = digest[:12]
        self.config_info.labels(self._digest).set(1)


def serve_metrics(
    address: str,
    basic_auth: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """Serve the metrics on ``address`` (``host:port``) from a background thread, behind
    HTTP Basic authentication when ``basic_auth`` (``metrics_basic_auth``) is given, over
    TLS with ``tls`` (``metrics_certificate``)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    from .basic_auth import require_basic_auth

    class _Quiet(WSGIRequestHandler):
        timeout = METRICS_CLIENT_TIMEOUT_S

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes are not access-logged

    host, _, port = address.rpartition(":")
    registry: CollectorRegistry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    app = make_wsgi_app(registry)
    if basic_auth is not None:
        app = require_basic_auth(app, *basic_auth)
    bind = host.strip("[]") or "0.0.0.0"  # noqa: S104 - operator's choice

    class _Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A failed handshake or a broken scrape: one line, never socketserver's traceback.
            log.warning(
                "metrics: connection failed: %s",
                type(sys.exc_info()[1]).__name__,
                extra={"client": str(client_address[0]), "why": str(sys.exc_info()[1])[:200]},
            )

    server = make_server(bind, int(port), app, _Server, handler_class=_Quiet)
    if tls is not None:
        # The handshake runs in the request's thread (on its first read, bounded by the
        # handler's timeout), not in the accept loop a slow client could stall.
        server.socket = tls.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics listening", extra={"address": f"{host or '0.0.0.0'}:{server.server_port}"})  # noqa: S104
    return server


#: Longest a scrape connection may stay silent (TLS handshake included), seconds.
METRICS_CLIENT_TIMEOUT_S = 10.0

_lock = threading.Lock()
_instance: Metrics | None = None


def get_metrics() -> Metrics:
    """The process's :class:`Metrics` (created on first use)."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = Metrics()
        return _instance
