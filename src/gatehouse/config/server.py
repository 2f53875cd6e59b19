"""Listener, TLS, timeout, limit, worker and logging options (owned by ``http/`` and ``cli``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import HeaderMap, StrictModel, StringList, normalize_origin_setting
from .durations import Duration

#: Pomerium's default secure response headers; HSTS is added only when serving TLS.
DEFAULT_RESPONSE_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "X-XSS-Protection": "1; mode=block",
}
HSTS_HEADER = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains; preload")


class CertificatePair(StrictModel):
    """One entry of ``certificates:``: a file path, a PEM, or base64 of a PEM, for each part."""

    cert: str
    key: str


class ServerOptions(StrictModel):
    """How gatehouse listens and how long it waits."""

    #: Where to listen, `[host]:port`; port 0 picks a free port (logged at start).
    address: str = ":443"
    #: Serve plain HTTP (behind another TLS terminator, or for local use).
    insecure_server: bool = False
    #: HTTP versions clients may speak: `http1`; `auto` (HTTP/2 when the client offers
    #: ALPN `h2`, else HTTP/1.1; in plain text, h2c by prior knowledge too); `http2` (HTTP/2
    #: only). Pomerium's option; gatehouse defaults to `http1` (Pomerium: `auto`).
    codec_type: Literal["auto", "http1", "http2"] = "http1"
    #: PEM certificate (chain) file for TLS.
    certificate_file: str | None = None
    #: PEM private key file for `certificate_file`.
    certificate_key_file: str | None = None
    #: Inline certificate: PEM or base64 of PEM.
    certificate: str | None = None
    #: Inline key for `certificate`: PEM or base64 of PEM.
    certificate_key: str | None = None
    #: Several `{cert, key}` pairs (file path, PEM or base64 each), chosen by SNI.
    certificates: list[CertificatePair] = Field(default_factory=list)

    #: Route `timeout` when the route sets none.
    default_upstream_timeout: Duration = 30.0
    #: Longest time to receive a whole request (head and body) from the client (0 = none).
    timeout_read: Duration = 30.0
    #: Longest time to send a whole response to the client (0 = none).
    timeout_write: Duration = 0.0
    #: Longest wait for the next request on a keep-alive connection.
    timeout_idle: Duration = 300.0
    #: Longest time to receive the request head (slowloris guard). gatehouse addition.
    timeout_request_head: Duration = 10.0
    #: Longest wait for in-flight requests after SIGTERM before exiting. gatehouse addition.
    shutdown_timeout: Duration = 30.0

    #: Largest request header block (→ 431). gatehouse addition (Envoy's fixed limit is
    #: 60 KiB).
    max_request_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    #: Longest request target (→ 414). gatehouse addition.
    max_url_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    #: Largest request body accepted, → 413 (0 = unlimited, as Pomerium). gatehouse addition.
    max_request_body_bytes: int = Field(default=0, ge=0)

    #: Headers added to every response; secure defaults (X-Frame-Options, X-Content-Type-Options,
    #: X-XSS-Protection, and HSTS with TLS) apply unless overridden; `""` removes one.
    set_response_headers: HeaderMap = Field(default_factory=dict)
    #: Accept `;` path parameters (`/a;jsessionid=x`). Off: such paths get 400, because
    #: Tomcat/Spring-style upstreams strip them and a rule about `/a` would not see `/a;x`.
    #: gatehouse addition.
    allow_path_parameters: bool = False
    #: Request headers whose name holds `_` (CGI, WSGI, PHP and Rack read `X_User` as
    #: `X-User`): `ALLOW`, `DROP_HEADER` (removed before forwarding) or `REJECT_REQUEST`
    #: (400). Underscore spellings of gatehouse's identity headers are always dropped.
    #: Envoy's option of the same name.
    headers_with_underscores_action: Literal["ALLOW", "DROP_HEADER", "REJECT_REQUEST"] = "ALLOW"
    #: Refuse (403) upgrades (WebSockets) whose `Origin` is not the route's own
    #: (`same-origin`), against cross-site WebSocket hijacking; `off` to allow any. A request
    #: without `Origin` (not a browser) is allowed. gatehouse addition.
    websocket_origin_check: Literal["same-origin", "off"] = "same-origin"
    #: Origins (`https://host[:port]`) allowed to open upgrades on any route besides the
    #: route's own. gatehouse addition.
    websocket_allowed_origins: StringList = Field(default_factory=list)

    #: `debug`, `info`, `warn` or `error`.
    log_level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    #: Write one JSON access-log line per request to stdout. gatehouse addition.
    access_log: bool = True
    #: Processes serving the same port; `None` means one per CPU core. gatehouse addition.
    workers: int | None = Field(default=None, ge=1, le=256)
    #: Where generated keys and the SQLite session store live. gatehouse addition.
    data_dir: str = "~/.local/share/gatehouse"

    @field_validator("log_level", "codec_type", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("headers_with_underscores_action", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("websocket_allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [normalize_origin_setting(v) for v in value]

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected [host]:port, e.g. :443 or 127.0.0.1:8080")
        return value

    @property
    def listen_host(self) -> str | None:
        host = self.address.rpartition(":")[0].strip("[]")
        return host or None

    @property
    def listen_port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def tls_enabled(self) -> bool:
        return not self.insecure_server

    def response_headers(self) -> dict[str, str]:
        """The global response headers: secure defaults, overridden (or removed with "")."""
        merged = dict(DEFAULT_RESPONSE_HEADERS)
        if self.tls_enabled:
            merged[HSTS_HEADER[0]] = HSTS_HEADER[1]
        lower = {k.lower(): k for k in merged}
        for name, value in self.set_response_headers.items():
            existing = lower.get(name.lower())
            if existing is not None:
                del merged[existing]
            if value != "":
                merged[name] = value
        return merged
