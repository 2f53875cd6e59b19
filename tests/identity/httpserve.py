"""A real HTTP server (stdlib, port 0, own thread) that runs the well-known handlers.

It adapts each request to :class:`gatehouse.http.messages.Request`, awaits the handler and
writes the :class:`Response`, so JWT libraries fetch keys over HTTP exactly as they would
from gatehouse. (The end-to-end tests use the real data plane.)
"""

from __future__ import annotations

import asyncio
import http.server
import threading

from gatehouse.http.messages import Headers, Request
from gatehouse.identity.wellknown import PATH_JWKS, PATH_WELL_KNOWN, WellKnownEndpoints


class EndpointServer:
    def __init__(self, endpoints: WellKnownEndpoints) -> None:
        self.endpoints = endpoints
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                path, _, query = self.path.partition("?")
                host = (self.headers.get("Host") or "127.0.0.1").rsplit(":", 1)[0]
                req = Request(
                    method=self.command,
                    scheme="http",
                    host=host,
                    port=outer.port,
                    path=path,
                    query=query,
                    headers=Headers((k, v) for k, v in self.headers.items()),
                    client_ip=self.client_address[0],
                )
                outer.requests.append(path)
                if path == PATH_JWKS:
                    resp = asyncio.run(outer.endpoints.jwks(req))
                elif path == PATH_WELL_KNOWN:
                    resp = asyncio.run(outer.endpoints.pomerium(req))
                else:
                    self.send_error(404)
                    return
                self.send_response(resp.status)
                for k, v in resp.headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.body)

            do_GET = do_HEAD = do_OPTIONS = do_POST = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return self.origin + PATH_JWKS

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
