"""Request and response types shared by the data plane and the internal endpoints.

:class:`RequestHead` is what the downstream protocol produces for every request (bytes,
as they came off the wire, already checked by :mod:`gatehouse.http.connection`).
:class:`Request` and :class:`Response` form the small interface internal endpoints
(sign-in, JWKS, user info...) are written against: a request whose body has been read
(bounded), and a complete response. Internal endpoints never see sockets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

#: Characters left as they are in a Location: URL syntax (RFC 3986 §2.2) and ``%``.
_LOCATION_SAFE = "!#$%&'()*+,/:;=?@[]~"


class RequestHead:
    """A parsed request line and header block (RFC 9112 §3, §5); read-only by convention.

    A plain class rather than a frozen dataclass: one is made per request, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) cost more than the rest of
    the request head's handling.
    """

    __slots__ = (
        "connection",
        "expect_continue",
        "has_body",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "target",
        "upgrade",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        http_version: str,
        keep_alive: bool,
        has_body: bool,
        upgrade: bytes | None,
        expect_continue: bool,
        connection: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        #: Header (name, value) pairs in arrival order; names lower-cased.
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        #: The request carries a body (Content-Length > 0 or chunked).
        self.has_body = has_body
        #: The client asked for ``Upgrade`` (with ``Connection: upgrade``).
        self.upgrade = upgrade
        self.expect_continue = expect_continue
        #: The ``Connection`` header's value (all of them, comma-joined), or ``None``.
        self.connection = connection

    def __repr__(self) -> str:
        # The path only: a query may carry a token (hand-offs, programmatic logins).
        path = self.target.split(b"?", 1)[0][:100]
        return f"RequestHead({self.method!r} {path!r} HTTP/{self.http_version})"

    def get(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` lower-case), or ``None``."""
        for k, v in self.headers:
            if k == name:
                return v
        return None


class Headers:
    """A case-insensitive, ordered, multi-valued view of header pairs (text)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = [(k.lower(), v) for k, v in items]

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        h = cls()
        h._items = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
        return h

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self._items:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


@dataclass(frozen=True, slots=True)
class Request:
    """A request as internal endpoints see it: head decoded, body read (bounded)."""

    method: str
    scheme: str
    #: Host name in lower case, without the port.
    host: str
    port: int | None
    #: The normalised path (see :mod:`gatehouse.proxy.paths`).
    path: str
    #: The raw query string, without ``?``.
    query: str
    headers: Headers
    client_ip: str
    body: bytes = b""

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` as the client addressed us."""
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port in (None, default) else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    @property
    def url(self) -> str:
        return self.origin + self.path + (f"?{self.query}" if self.query else "")

    def query_params(self) -> dict[str, str]:
        """Query parameters; the first value wins for a repeated name."""
        out: dict[str, str] = {}
        for k, v in parse_qsl(self.query, keep_blank_values=True):
            out.setdefault(k, v)
        return out

    def form(self) -> dict[str, str]:
        """``application/x-www-form-urlencoded`` body fields (first value wins)."""
        out: dict[str, str] = {}
        for k, v in parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True):
            out.setdefault(k, v)
        return out

    def cookies(self) -> dict[str, str]:
        """Request cookies; a malformed Cookie header yields what could be parsed."""
        out: dict[str, str] = {}
        for header in self.headers.get_all("cookie"):
            for part in header.split(";"):
                name, sep, value = part.strip().partition("=")
                if sep and name and name not in out:
                    out[name] = value.strip().strip('"')
        return out

    def accepts_html(self) -> bool:
        """True when the client prefers an HTML page (a browser navigation)."""
        if (self.headers.get("x-requested-with") or "").lower() == "xmlhttprequest":
            return False
        accept = self.headers.get("accept") or ""
        return "text/html" in accept


@dataclass(slots=True)
class Response:
    """A complete response produced by gatehouse itself (not proxied)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        body = json.dumps(data, separators=(",", ":"), sort_keys=False).encode()
        return cls(status, [("Content-Type", "application/json"), *headers], body)

    @classmethod
    def html(
        cls, text: str, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        return cls(status, [("Content-Type", "text/html; charset=utf-8"), *headers], text.encode())

    @classmethod
    def text(
        cls, text: str, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        return cls(status, [("Content-Type", "text/plain; charset=utf-8"), *headers], text.encode())

    @classmethod
    def redirect(
        cls, location: str, status: int = 302, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        """A redirect; the location is percent-encoded where it must be (non-ASCII, spaces,
        control characters), so no value can break the header or fail to encode."""
        location = quote(location, safe=_LOCATION_SAFE)
        return cls(status, [("Location", location), ("Cache-Control", "no-store"), *headers], b"")

    def set_cookie(
        self,
        name: str,
        value: str,
        *,
        max_age: int | None = None,
        path: str = "/",
        domain: str | None = None,
        secure: bool = True,
        http_only: bool = True,
        same_site: str = "Lax",
    ) -> None:
        """Add a ``Set-Cookie`` header (RFC 6265 §4.1); ``max_age=0`` deletes the cookie."""
        parts = [f"{name}={value}", f"Path={path}"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
            if max_age == 0:
                parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if domain:
            parts.append(f"Domain={domain}")
        if secure:
            parts.append("Secure")
        if http_only:
            parts.append("HttpOnly")
        if same_site:
            parts.append(f"SameSite={same_site.capitalize()}")
        self.headers.append(("Set-Cookie", "; ".join(parts)))


__all__ = ["Headers", "Request", "RequestHead", "Response"]
