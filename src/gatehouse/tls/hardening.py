"""Listener hardening: the TLS versions, cipher suites and options every server context gets.

Follows Mozilla's "intermediate" server profile: TLS 1.2 and 1.3 only; for TLS 1.2, ECDHE
key exchange with AEAD ciphers only (forward secrecy, no CBC padding oracles, no RSA key
transport). TLS 1.3's suites are all AEAD and are left to OpenSSL's defaults.
"""

from __future__ import annotations

import ssl

#: TLS 1.2 suites (OpenSSL names), Mozilla intermediate without the finite-field DHE ones.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
#: Longest a client may take over its TLS handshake by default, seconds (slow-handshake
#: guard; asyncio's own default is 60 s). Tunable as ``timeout_tls_handshake``.
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0

#: ALPN protocols every server context offers, most preferred first (RFC 7301). Set once
#: per process from ``codec_type`` (:func:`set_alpn_protocols`): a context chosen by SNI
#: answers ALPN with its own list, so all of them must agree.
_alpn_protocols = ["http/1.1"]


def set_alpn_protocols(protocols: list[str]) -> None:
    """Offer ``protocols`` in every server context made from now on (``h2`` for HTTP/2)."""
    global _alpn_protocols
    _alpn_protocols = list(protocols)


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Apply gatehouse's server TLS policy to ``ctx`` (in place; returned for chaining)."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    # No TLS compression (CRIME), no client-initiated renegotiation (a CPU-exhaustion lever),
    # a fresh ECDHE key per handshake.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE
    ctx.set_alpn_protocols(_alpn_protocols)
    return ctx


def new_server_context() -> ssl.SSLContext:
    """An empty, hardened server context."""
    return harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
