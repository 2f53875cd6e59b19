"""The ``health_check_addr`` listener: Pomerium's probe endpoints for orchestrators.

Paths and meanings follow Pomerium (``internal/controlplane/server.go``,
``pkg/health/http.go``), with one check, ``gatehouse.proxy``, whose state comes from a
``GET /healthz`` of gatehouse's own listener (over TLS unless ``insecure_server``; the
certificate is not verified, the peer is this machine):

- ``/startupz``: 200 once the listener has answered once, 503 before.
- ``/healthz`` (liveness): 200 while the listener answers at all, draining included
  (Pomerium keeps a terminating instance live); 503 when it does not answer.
- ``/readyz``: 200 only while the listener answers 200 (not draining).
- ``/status``: 200 with ``{"statuses": {...}, "checks": [...]}``.

Each probe waits at most :data:`PROBE_TIMEOUT_S`. It runs in a thread of the process that
binds the listener (the supervisor with several workers), like the metrics listener.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("gatehouse")

#: Longest wait for gatehouse's own /healthz, seconds.
PROBE_TIMEOUT_S = 2.0
CHECK = "gatehouse.proxy"


class Prober:
    """Asks gatehouse's listener at ``(host, port)`` for ``/healthz``."""

    def __init__(self, host: str, port: int, tls: bool) -> None:
        # A wildcard bind is reached on loopback.
        self.host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
        self.port = port
        self.tls = tls
        self.started = False

    def probe(self) -> tuple[int | None, str]:
        """The listener's ``/healthz`` status (``None``: no answer) and what went wrong."""
        conn: http.client.HTTPConnection
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # our own listener on this machine
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=PROBE_TIMEOUT_S, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=PROBE_TIMEOUT_S)
        try:
            conn.request("GET", "/healthz", headers={"Host": "localhost"})
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as exc:
            return None, f"gatehouse's listener does not answer ({type(exc).__name__})"
        finally:
            conn.close()
        self.started = True
        return status, "" if status == 200 else f"gatehouse's /healthz answered {status}"


def _entry(status: int | None, error: str) -> dict[str, str]:
    state = "RUNNING" if status == 200 else ("TERMINATING" if status else "UNAVAILABLE")
    return {"status": state, **({"error": error} if error else {})}


def app(prober: Prober) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """The WSGI app of the four endpoints."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        body: dict[str, Any]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            code, body = 405, {"error": "method not allowed"}
        elif path not in ("/healthz", "/readyz", "/startupz", "/status"):
            code, body = 404, {"error": "not found"}
        else:
            status, error = prober.probe()
            entry = _entry(status, error)
            if path == "/status":
                code, body = 200, {"statuses": {CHECK: entry}, "checks": [CHECK]}
            else:
                ok = {
                    "/healthz": status is not None,
                    "/readyz": status == 200,
                    "/startupz": prober.started,
                }[path]
                code, body = (200 if ok else 503), {CHECK: entry}
        data = json.dumps(body, indent=2).encode()
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
            code, "Service Unavailable"
        )
        start_response(
            f"{code} {reason}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [data]

    return serve


def serve_health(address: str, listener: tuple[str, int], tls: bool) -> Any:
    """Serve the probe endpoints on ``address`` (``host:port``) from a daemon thread."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds: not worth a log line each

    host, _, port = address.rpartition(":")
    bind = host.strip("[]") or "0.0.0.0"  # noqa: S104 - operator's choice

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A broken probe connection: one line, never socketserver's traceback.
            log.warning("health: connection failed: %s", type(sys.exc_info()[1]).__name__)

    server = make_server(
        bind, int(port), app(Prober(listener[0], listener[1], tls)), _Server, handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    log.info("health listening", extra={"address": f"{host or '0.0.0.0'}:{server.server_port}"})  # noqa: S104
    return server
