"""Identity: signing keys, the assertion forwarded to upstreams, and the JWKS endpoints.

Entry points for the proxy::

    keyset = load_keyset(options)                 # keys.py (ConfigError on bad keys)
    minter = AssertionMinter(keyset)              # assertion.py
    spec = AssertionSpec.for_route(options, route)
    assertion = minter.mint(session, host, spec)  # .headers() -> [(name, value), ...]
    endpoints = WellKnownEndpoints(keyset, authenticate_url=...)  # wellknown.py
"""

from .assertion import (
    ASSERTION_FOR_HEADER,
    ASSERTION_HEADER,
    Assertion,
    AssertionMinter,
    AssertionSpec,
)
from .keys import KeySet, SigningKey, generate_pem, keygen_text, load_keyset
from .wellknown import PATH_JWKS, PATH_WELL_KNOWN, WellKnownEndpoints

__all__ = [
    "ASSERTION_FOR_HEADER",
    "ASSERTION_HEADER",
    "PATH_JWKS",
    "PATH_WELL_KNOWN",
    "Assertion",
    "AssertionMinter",
    "AssertionSpec",
    "KeySet",
    "SigningKey",
    "WellKnownEndpoints",
    "generate_pem",
    "keygen_text",
    "load_keyset",
]
