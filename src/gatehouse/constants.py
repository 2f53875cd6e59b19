"""Reserved paths and header names, in one place (compare Pomerium's ``pkg/endpoints``)."""

from __future__ import annotations

# -- paths served by gatehouse itself on every host ------------------------------------
PING_PATH = "/ping"
HEALTHZ_PATH = "/healthz"
WELL_KNOWN_PATH = "/.well-known/pomerium"
JWKS_PATH = "/.well-known/pomerium/jwks.json"
#: Everything under this prefix belongs to gatehouse on route hosts.
POMERIUM_PREFIX = "/.pomerium/"
USER_INFO_PATH = "/.pomerium/"
USER_JSON_PATH = "/.pomerium/user"
SIGN_IN_PATH = "/.pomerium/sign_in"
SIGN_OUT_PATH = "/.pomerium/sign_out"
SIGNED_OUT_PATH = "/.pomerium/signed_out"
ROUTE_CALLBACK_PATH = "/.pomerium/callback/"
PROGRAMMATIC_LOGIN_PATH = "/.pomerium/api/v1/login"
DEFAULT_AUTHENTICATE_CALLBACK_PATH = "/oauth2/callback"

# -- identity headers ----------------------------------------------------------------------
ASSERTION_HEADER = b"x-pomerium-jwt-assertion"
ASSERTION_FOR_HEADER = b"x-pomerium-jwt-assertion-for"
#: Any client-sent header starting with one of these is stripped on every route.
IDENTITY_HEADER_PREFIXES = (b"x-pomerium-jwt-assertion", b"x-pomerium-claim-")

# -- gatehouse credentials, never forwarded to an upstream ------------------------------
#: Headers that carry only a gatehouse (Pomerium) credential: Pomerium reads a session
#: token from ``X-Pomerium-Authorization``; gatehouse does not, but never forwards one.
CREDENTIAL_HEADERS = frozenset({b"x-pomerium-authorization"})
#: ``Authorization`` schemes of programmatic tokens: ``Pomerium <token>`` and
#: ``Bearer Pomerium-<token>`` (see ``authenticate.endpoints._programmatic_token``).
PROGRAMMATIC_AUTH_SCHEME = b"pomerium"
PROGRAMMATIC_BEARER_PREFIX = b"pomerium-"

# -- hop-by-hop headers (RFC 9110 §7.6.1), never forwarded ------------------------------
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"http2-settings",  # RFC 7540 §3.2.1 (h2c upgrades): connection-specific
        b"content-length",  # re-framed by gatehouse
    }
)

# -- TLS ---------------------------------------------------------------------------------
#: The ALPN protocol of ACME's TLS-ALPN-01 validation connections (RFC 8737 §6.2): only
#: the challenge certificate's context offers it, and a connection that negotiated it is
#: closed once its handshake is done (RFC 8737 §3: no data follows).
ACME_TLS_ALPN = "acme-tls/1"
