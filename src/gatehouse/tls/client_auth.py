"""The listener's side of client certificates: ask for one, and judge it in the handshake.

Pomerium (Envoy) asks every client for a certificate when a client CA is configured and,
except with ``enforcement: reject_connection``, accepts *any* certificate in the
handshake (``ACCEPT_UNTRUSTED``); whether it is valid is decided per request, against the
route's CA, by the policy. Python's :mod:`ssl` cannot express that: ``CERT_OPTIONAL``
makes OpenSSL fail the handshake on a certificate it cannot verify, and there is no
verification callback in the API. So this module installs one through :mod:`ctypes`
with OpenSSL's ``SSL_CTX_set_cert_verify_callback`` on the contexts the listener uses
(the front one and each SNI certificate's: OpenSSL reads the callback from the context
a connection ends up on). The callback:

- in the policy modes, returns "verified" for whatever the client sent: the request
  path (:mod:`gatehouse.tls.client_trust`) judges the chain;
- with ``reject_connection``, judges the chain itself with the same
  :class:`~gatehouse.tls.client_trust.ClientTrust` rules (global CA plus every route's,
  as Envoy's listener bundle) and fails the handshake with a ``bad_certificate`` alert
  when it is not valid; no certificate at all fails with ``certificate_required``.

The context pointer is read from CPython's ``PySSLContext`` (its first field after the
object header); :func:`ssl_ctx_pointer` checks it against the context's options before
anything is called through it, and refuses to run otherwise (never a guess).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import logging
import os
import ssl
import tempfile
import time
from dataclasses import dataclass

from ..errors import ConfigError
from .client_trust import ClientTrust

log = logging.getLogger("gatehouse.tls")

#: OpenSSL's X509_V_ERR_CERT_REJECTED: mapped to the TLS ``bad_certificate`` alert.
_X509_V_ERR_CERT_REJECTED = 28

_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class ClientCertMode(enum.Enum):
    """What the handshake asks of the client."""

    #: No certificate is requested (no client CA configured).
    NONE = "none"
    #: A certificate is requested and anything is accepted (policy modes).
    REQUEST = "request"
    #: A valid certificate is required (``reject_connection``).
    REQUIRE = "require"


def mapped_library(stem: str) -> str:
    """The path of the ``stem`` library this process has loaded (the one ``_ssl`` uses)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if os.path.basename(path).startswith(stem + ".so"):
                    return path
    except OSError:
        pass
    found = ctypes.util.find_library(stem.removeprefix("lib"))
    if found is None:
        raise ConfigError([f"downstream_mtls: cannot find {stem} (needed for client certificates)"])
    return found


@dataclass(frozen=True, slots=True)
class _OpenSSL:
    ssl: ctypes.CDLL
    crypto: ctypes.CDLL


_LIBS: _OpenSSL | None = None


def _libs() -> _OpenSSL:
    global _LIBS
    if _LIBS is None:
        libssl = ctypes.CDLL(mapped_library("libssl"))
        libcrypto = ctypes.CDLL(mapped_library("libcrypto"))
        libssl.SSL_CTX_get_options.restype = ctypes.c_uint64
        libssl.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        libssl.SSL_CTX_set_cert_verify_callback.restype = None
        libssl.SSL_CTX_set_cert_verify_callback.argtypes = [
            ctypes.c_void_p,
            _VERIFY_CB,
            ctypes.c_void_p,
        ]
        libssl.SSL_load_client_CA_file.restype = ctypes.c_void_p
        libssl.SSL_load_client_CA_file.argtypes = [ctypes.c_char_p]
        libssl.SSL_CTX_set_client_CA_list.restype = None
        libssl.SSL_CTX_set_client_CA_list.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        libcrypto.X509_STORE_CTX_get0_untrusted.restype = ctypes.c_void_p
        libcrypto.X509_STORE_CTX_get0_untrusted.argtypes = [ctypes.c_void_p]
        libcrypto.X509_STORE_CTX_get0_cert.restype = ctypes.c_void_p
        libcrypto.X509_STORE_CTX_get0_cert.argtypes = [ctypes.c_void_p]
        libcrypto.X509_STORE_CTX_set_error.restype = None
        libcrypto.X509_STORE_CTX_set_error.argtypes = [ctypes.c_void_p, ctypes.c_int]
        libcrypto.OPENSSL_sk_num.restype = ctypes.c_int
        libcrypto.OPENSSL_sk_num.argtypes = [ctypes.c_void_p]
        libcrypto.OPENSSL_sk_value.restype = ctypes.c_void_p
        libcrypto.OPENSSL_sk_value.argtypes = [ctypes.c_void_p, ctypes.c_int]
        libcrypto.i2d_X509.restype = ctypes.c_int
        libcrypto.i2d_X509.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        _LIBS = _OpenSSL(libssl, libcrypto)
    return _LIBS


def ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` behind ``ctx``.

    Raises:
        ConfigError: the pointer found does not belong to ``ctx`` (an unknown Python
            build): client certificates cannot be judged safely, so they are refused.
    """
    libs = _libs()
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    # Python's ``options`` reads SSL_CTX_get_options: the same value proves the pointer.
    if not pointer or libs.ssl.SSL_CTX_get_options(pointer) != int(ctx.options):
        raise ConfigError(
            [
                "downstream_mtls: this Python's ssl module has an unknown layout; "
                "client certificates are not supported with it"
            ]
        )
    return pointer


def _der(libs: _OpenSSL, x509_ptr: int) -> bytes:
    size = libs.crypto.i2d_X509(x509_ptr, None)
    if size <= 0:
        raise ValueError("certificate does not encode")
    buf = ctypes.create_string_buffer(size)
    cursor = ctypes.c_void_p(ctypes.addressof(buf))
    libs.crypto.i2d_X509(x509_ptr, ctypes.byref(cursor))
    return buf.raw


def presented_chain(store_ctx: int) -> list[bytes]:
    """The chain the peer sent (leaf first, DER), from OpenSSL's verification context."""
    libs = _libs()
    stack = libs.crypto.X509_STORE_CTX_get0_untrusted(store_ctx)
    chain: list[bytes] = []
    if stack:
        for i in range(libs.crypto.OPENSSL_sk_num(stack)):
            chain.append(_der(libs, libs.crypto.OPENSSL_sk_value(stack, i)))
    if not chain:
        leaf = libs.crypto.X509_STORE_CTX_get0_cert(store_ctx)
        if leaf:
            chain.append(_der(libs, leaf))
    return chain


class HandshakeGate:
    """The client-certificate rule of one listener; contexts are bound to it once."""

    def __init__(self) -> None:
        self.mode = ClientCertMode.NONE
        #: With REQUIRE: the trust the handshake judges against.
        self.trust: ClientTrust | None = None
        self._ca_pem = b""
        self._bound: dict[int, ssl.SSLContext] = {}
        # Kept alive as long as the gate: OpenSSL holds a pointer to it.
        self._callback = _VERIFY_CB(self._verify)

    def configure(self, mode: ClientCertMode, trust: ClientTrust | None, ca_pem: bytes) -> None:
        """Set the rule (at start and on reload); already-bound contexts follow it."""
        self.mode = mode
        self.trust = trust
        self._ca_pem = ca_pem
        for ctx in list(self._bound.values()):
            self._apply(ctx)

    def bind(self, ctx: ssl.SSLContext) -> None:
        """Make ``ctx`` follow this gate (idempotent)."""
        if self.mode is ClientCertMode.NONE and id(ctx) not in self._bound:
            return  # nothing asked of clients: leave the context untouched
        pointer = ssl_ctx_pointer(ctx)
        if id(ctx) not in self._bound:
            _libs().ssl.SSL_CTX_set_cert_verify_callback(pointer, self._callback, None)
            self._bound[id(ctx)] = ctx
        self._apply(ctx)

    def forget_all_but(self, keep: list[ssl.SSLContext]) -> None:
        """Drop contexts no longer served (after a reload)."""
        ids = {id(c) for c in keep}
        for key in [k for k in self._bound if k not in ids]:
            del self._bound[key]

    def _apply(self, ctx: ssl.SSLContext) -> None:
        if self.mode is ClientCertMode.NONE:
            ctx.verify_mode = ssl.CERT_NONE
            return
        ctx.verify_mode = (
            ssl.CERT_REQUIRED if self.mode is ClientCertMode.REQUIRE else ssl.CERT_OPTIONAL
        )
        if self._ca_pem:
            # The CertificateRequest names the trusted CAs: browsers pick a certificate by it.
            libssl = _libs().ssl
            with tempfile.NamedTemporaryFile(suffix=".pem") as f:
                f.write(self._ca_pem)
                f.flush()
                names = libssl.SSL_load_client_CA_file(f.name.encode())
            if names:
                libssl.SSL_CTX_set_client_CA_list(ssl_ctx_pointer(ctx), names)

    def _verify(self, store_ctx: int | None, _arg: int | None) -> int:
        # Runs inside OpenSSL's handshake: never raise, decide 1 (accept) or 0 (reject).
        if self.mode is not ClientCertMode.REQUIRE:
            return 1
        try:
            trust = self.trust
            if trust is None or not store_ctx:
                problem: str | None = "no client CA configured"
            else:
                problem = trust.check(presented_chain(store_ctx), time.time())
        except Exception as exc:  # never let an error accept a certificate
            problem = f"internal error: {type(exc).__name__}"
        if problem is None:
            return 1
        if store_ctx:
            _libs().crypto.X509_STORE_CTX_set_error(store_ctx, _X509_V_ERR_CERT_REJECTED)
        log.warning(
            "TLS handshake rejected: client certificate not valid (reject_connection)",
            extra={"why": problem},
        )
        return 0
