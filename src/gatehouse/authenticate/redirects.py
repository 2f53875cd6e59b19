"""Signed, expiring URLs between gatehouse's hosts, and the redirect-target allow list.

Signed URLs follow Pomerium's query parameters (``internal/urlutil/signed.go``):
``pomerium_issued`` and ``pomerium_expiry`` (Unix seconds) are added, then
``pomerium_signature``, a base64url HMAC-SHA256 over the canonical URL and both times,
keyed with a key derived from ``shared_secret``. They carry ``pomerium_redirect_uri``
from a route host to ``/.pomerium/sign_in`` and sign-out links (a GET that signs a user
out must carry one, so a third-party page cannot). The canonical form sorts the query
parameters, so a proxy that re-orders them does not break a signature, and includes
scheme, host and path, so a URL signed for one endpoint is no good for another.

:func:`is_allowed_redirect` decides where a user may be sent after signing in or out:
only ``http(s)`` URLs whose host is a route host or the authenticate host. It is strict
on syntax rather than clever: anything a browser and a URL parser might read two ways
(backslashes, userinfo, percent-encoded or non-ASCII host characters, control
characters, whitespace, a scheme not in lower case) is refused outright.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .errors import InvalidRedirect
from .keys import PURPOSE_REDIRECT, derive_key
from .query import query_pair

QUERY_REDIRECT_URI = "pomerium_redirect_uri"
QUERY_ISSUED = "pomerium_issued"
QUERY_EXPIRY = "pomerium_expiry"
QUERY_SIGNATURE = "pomerium_signature"
#: ``1`` in a signed sign-in URL: a programmatic login (the token goes to a loopback URL).
QUERY_PROGRAMMATIC = "pomerium_programmatic"

#: Lifetime of a signed URL (seconds): long enough for a redirect, short enough to be useless later.
SIGNED_URL_TTL_S = 300
#: Clock skew tolerated between replicas (seconds).
SIGNED_URL_LEEWAY_S = 30
#: Longest redirect target accepted (characters).
MAX_REDIRECT_CHARS = 2048

# Authority: a lower-case DNS name or IPv4 address, or a bracketed IPv6 address, then an
# optional port. Deliberately no userinfo, no percent-encoding, no upper case.
#: Control characters, space, DEL, anything non-ASCII, and backslash: none may appear.
_UNSAFE_CHAR_RE = re.compile(r"[\x00-\x20\x7f-\U0010ffff\\]")
_AUTHORITY_RE = re.compile(
    r"\A(?P<host>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?\Z"
)
_LOOPBACK_NAMES = frozenset({"localhost"})


class RedirectSigner:
    """Signs and verifies URLs with a key derived from ``shared_secret``."""

    def __init__(
        self,
        shared_secret: bytes,
        *,
        ttl_s: int = SIGNED_URL_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = derive_key(shared_secret, PURPOSE_REDIRECT)
        self._ttl_s = ttl_s
        self._clock = clock

    def sign(self, url: str) -> str:
        """``url`` with ``pomerium_issued``, ``pomerium_expiry`` and ``pomerium_signature``."""
        parts = urlsplit(url)
        params = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in (QUERY_ISSUED, QUERY_EXPIRY, QUERY_SIGNATURE)
        ]
        return self._signed(parts.scheme, parts.netloc, parts.path, params)

    def _signed(self, scheme: str, netloc: str, path: str, params: list[tuple[str, str]]) -> str:
        issued = int(self._clock())
        params = [*params, (QUERY_ISSUED, str(issued)), (QUERY_EXPIRY, str(issued + self._ttl_s))]
        # Each pair is encoded once, for the signature (sorted) and for the URL (in order).
        encoded = [query_pair(k, v) for k, v in params]
        signature = self._mac(scheme, netloc, path, params, encoded)
        encoded.append(query_pair(QUERY_SIGNATURE, signature))
        return urlunsplit((scheme, netloc, path, "&".join(encoded), ""))

    def sign_in_url(
        self,
        authenticate_url: str,
        redirect_url: str,
        path: str = "/.pomerium/sign_in",
        *,
        extra: Sequence[tuple[str, str]] = (),
    ) -> str:
        """The signed ``/.pomerium/sign_in`` URL that returns the user to ``redirect_url``
        (``extra``: more signed query parameters)."""
        base = urlsplit(authenticate_url.rstrip("/") + path)
        # Signed from the parameters themselves: what sign() would read back from the URL.
        params = [
            (k, v)
            for k, v in [(QUERY_REDIRECT_URI, redirect_url), *extra]
            if k not in (QUERY_ISSUED, QUERY_EXPIRY, QUERY_SIGNATURE)
        ]
        return self._signed(base.scheme, base.netloc, base.path, params)

    def verify(self, url: str) -> dict[str, str]:
        """Check a signed URL (as received: ``Request.url``); returns its other query parameters.

        Raises:
            InvalidRedirect: no signature, a bad one, expired, or issued in the future.
        """
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        signature = [v for k, v in pairs if k == QUERY_SIGNATURE]
        rest = [(k, v) for k, v in pairs if k != QUERY_SIGNATURE]
        if len(signature) != 1:
            raise InvalidRedirect("URL is not signed")
        fields = dict(rest)
        try:
            issued = int(fields[QUERY_ISSUED])
            expiry = int(fields[QUERY_EXPIRY])
        except (KeyError, ValueError) as exc:
            raise InvalidRedirect("signed URL without valid issue/expiry times") from exc
        encoded = [query_pair(k, v) for k, v in rest]
        expected = self._mac(parts.scheme, parts.netloc, parts.path, rest, encoded)
        if not hmac.compare_digest(expected.encode(), signature[0].rstrip("=").encode()):
            raise InvalidRedirect("URL signature invalid")
        now = self._clock()
        if now > expiry + SIGNED_URL_LEEWAY_S:
            raise InvalidRedirect("signed URL expired")
        if issued > now + SIGNED_URL_LEEWAY_S:
            raise InvalidRedirect("signed URL issued in the future")
        return {k: v for k, v in rest if k not in (QUERY_ISSUED, QUERY_EXPIRY)}

    def _mac(
        self,
        scheme: str,
        netloc: str,
        path: str,
        params: list[tuple[str, str]],
        encoded: list[str],
    ) -> str:
        """The signature over the canonical URL; ``encoded[i]`` is ``params[i]`` as a
        query pair, and the canonical query lists them sorted by name, then value."""
        order = sorted(range(len(params)), key=params.__getitem__)
        canonical = "\n".join(
            [
                scheme.lower(),
                _canonical_netloc(scheme.lower(), netloc),
                path or "/",
                "&".join([encoded[i] for i in order]),
            ]
        )
        digest = hmac.new(self._key, canonical.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _canonical_netloc(scheme: str, netloc: str) -> str:
    netloc = netloc.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and netloc.endswith(default):
        netloc = netloc[: -len(default)]
    return netloc


def redirect_host(url: str) -> str | None:
    """The lower-case host of a syntactically safe ``http(s)`` URL, else ``None``.

    Refused: other schemes (``javascript:``, ``data:``...), a scheme not in lower case,
    scheme-relative ``//host``, backslashes, userinfo (``@``), ``%`` or any non-ASCII,
    control or whitespace character before the path, and anything the standard parser
    reads differently.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_REDIRECT_CHARS:
        return None
    if _UNSAFE_CHAR_RE.search(url) is not None:
        return None
    if url.startswith("https://"):
        scheme, rest = "https", url[8:]
    elif url.startswith("http://"):
        scheme, rest = "http", url[7:]
    else:
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    match = _AUTHORITY_RE.match(authority.lower())
    if match is None:
        return None
    host = match.group("host")
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        return None
    # Cross-check with the standard parser: both readings must agree.
    try:
        parsed = urlsplit(url)
        parsed_port = parsed.port
    except ValueError:
        return None
    if parsed.scheme != scheme or parsed.hostname != host.strip("[]"):
        return None
    if parsed.username is not None or parsed.password is not None:
        return None
    if (port is None) != (parsed_port is None):
        return None
    return host


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """``host`` equals an allowed host, or is under a ``*.domain`` wildcard entry."""
    host = host.lower()
    for pattern in allowed_hosts:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            suffix = pattern[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == pattern:
            return True
    return False


def is_allowed_redirect(url: str, allowed_hosts: Iterable[str]) -> bool:
    """True when ``url`` is a safe ``http(s)`` URL on a route host or the authenticate host.

    ``allowed_hosts``: host names (no ports) of every route's ``from`` and of
    ``authenticate_service_url``; ``*.example.com`` entries match any subdomain.
    """
    host = redirect_host(url)
    return host is not None and host_allowed(host, allowed_hosts)


def is_loopback_host(host: str) -> bool:
    """A loopback literal (``127.0.0.0/8``, ``[::1]``) or ``localhost``; no DNS lookup."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_allowed_programmatic_redirect(url: str, whitelist: Iterable[str]) -> bool:
    """Targets for programmatic login (``/.pomerium/api/v1/login``): a host in
    ``programmatic_redirect_domain_whitelist``, where the entry ``localhost`` (the
    default) stands for any loopback address (``127.0.0.0/8``, ``[::1]``, ``localhost``),
    as in Pomerium. Loopback is where a command-line tool listens, and nothing but the
    user's own machine can receive it; loopback is matched literally, never via DNS.
    """
    host = redirect_host(url)
    if host is None:
        return False
    allowed = [h.lower() for h in whitelist]
    if "localhost" in allowed and is_loopback_host(host):
        return True
    return host_allowed(host, allowed)
