"""A small browser stand-in for HTTP-level end-to-end tests.

``*.localhost`` names do not resolve on every machine (Chromium resolves them itself),
so :class:`Browser` sends every request for a ``*.localhost`` URL to gatehouse's port,
keeps cookies per host as a browser would (host-only cookies, ``Max-Age=0`` deletes),
and follows redirects one hop at a time so tests can look at each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urljoin, urlsplit

import httpx


@dataclass
class Hop:
    url: str
    response: httpx.Response


@dataclass
class Browser:
    gatehouse_port: int
    cookies: dict[str, dict[str, str]] = field(default_factory=dict)
    history: list[Hop] = field(default_factory=list)
    accept: str = "text/html,application/xhtml+xml"

    def _target(self, url: str) -> tuple[str, dict[str, str]]:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        headers = {"Accept": self.accept}
        jar = self.cookies.get(host)
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        if host == "localhost" or host.endswith(".localhost"):
            headers["Host"] = parts.netloc
            path = parts.path or "/"
            return f"http://127.0.0.1:{self.gatehouse_port}{path}" + (
                f"?{parts.query}" if parts.query else ""
            ), headers
        return url, headers

    def _store(self, url: str, response: httpx.Response) -> None:
        host = (urlsplit(url).hostname or "").lower()
        for header in response.headers.get_list("set-cookie"):
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                cookies = self.cookies.setdefault(host, {})
                if morsel["max-age"] == "0" or morsel.value == "":
                    cookies.pop(name, None)
                else:
                    cookies[name] = morsel.value

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        target, headers = self._target(url)
        extra = kwargs.pop("headers", None) or {}
        headers.update(extra)  # type: ignore[arg-type]
        response = httpx.request(
            method, target, headers=headers, follow_redirects=False, timeout=15, **kwargs
        )  # type: ignore[arg-type]
        self._store(url, response)
        self.history.append(Hop(url, response))
        return response

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def follow(
        self, url: str, *, method: str = "GET", max_hops: int = 20, stop=None, **kwargs: object
    ) -> httpx.Response:  # type: ignore[no-untyped-def]
        """Request ``url`` and follow redirects; ``stop(url)`` may halt before a hop."""
        response = self.request(method, url, **kwargs)
        for _ in range(max_hops):
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            url = urljoin(url, response.headers["location"])
            if stop is not None and stop(url):
                return response
            response = self.get(url)
        raise AssertionError("too many redirects")

    @property
    def last_url(self) -> str:
        return self.history[-1].url if self.history else ""
