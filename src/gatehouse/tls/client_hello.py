"""Whether a ClientHello offered exactly ALPN ``acme-tls/1``: the one fact about a hello
that Python's :mod:`ssl` cannot give the certificate choice (RFC 8737 TLS-ALPN-01).

Python picks the certificate in the server-name callback, which is not told the client's
ALPN list; by the time it runs, OpenSSL has parsed (and consumed) the raw ALPN extension.
OpenSSL's ClientHello callback (``SSL_CTX_set_client_hello_cb``, OpenSSL 1.1.1+) runs
before any extension is parsed. :func:`watch` installs one through :mod:`ctypes` on the
listener's front context (the context every handshake starts on, whose callback OpenSSL
calls); it compares the raw ALPN extension with the single byte string that offers
exactly ``acme-tls/1`` and, on a match, marks the connection in an ``ex_data`` slot of
its own. The server-name callback then asks :func:`offered_only_acme`, which for an
ordinary hello answers from a Python set without calling OpenSSL (the ClientHello
callback's one call, a few microseconds per handshake, is the whole cost; see
``bench/tls_bench.py --autocert``).

Comparing bytes instead of parsing keeps it fail-closed: a list with more protocols, a
malformed or truncated extension, no extension - all differ, and the connection takes
the ordinary path. Nothing here fails a handshake: the callback always answers "go on".

The ``SSL *`` of a connection is read from CPython's ``_ssl._SSLSocket`` (the field after
its socket weakref). :func:`watch` proves that layout once on a probe connection (the
pointer's ``SSL_get_app_data`` is the Python object, as CPython sets it, and its
``SSL_CTX`` is the context's) and refuses to install otherwise: never a guess.
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
from dataclasses import dataclass

from ..constants import ACME_TLS_ALPN
from ..errors import ConfigError
from .client_auth import mapped_library, ssl_ctx_pointer

#: The ALPN extension body (RFC 7301 §3.1) that offers ``acme-tls/1`` and nothing else:
#: the list's length (2 bytes), then one protocol name prefixed by its length (1 byte).
ONLY_ACME_ALPN = (
    (len(ACME_TLS_ALPN) + 1).to_bytes(2, "big")
    + len(ACME_TLS_ALPN).to_bytes(1, "big")
    + ACME_TLS_ALPN.encode()
)
#: TLS extension number of ALPN (RFC 7301 §6).
_EXT_ALPN = 16
#: ``SSL_CLIENT_HELLO_SUCCESS``: let the handshake continue.
_HELLO_SUCCESS = 1
#: ``SSL_VERIFY_NONE``.
_VERIFY_NONE = 0
#: ``CRYPTO_EX_INDEX_SSL``: ex_data slots of SSL objects.
_EX_INDEX_SSL = 0
#: The value stored in the slot of a marked connection (any non-null pointer value).
_MARK = 1
#: Offset of ``SSL *ssl`` in ``_ssl._SSLSocket``: after the object header and the
#: ``Socket`` weakref pointer.
_SSL_FIELD = object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)

#: The C object behind every ``ssl.SSLObject`` (not in the type stubs).
_SSL_SOCKET: type = _ssl._SSLSocket  # type: ignore[attr-defined]

#: Addresses of the Python objects of connections marked and not yet asked about. A hint
#: only: the mark on the connection's own ``SSL`` is what :func:`offered_only_acme` trusts
#: (an address left behind by an aborted handshake may be reused by another connection).
_marked: set[int] = set()
#: Entries kept at most (each is an aborted acme-tls/1 handshake).
_MARKED_MAX = 1024

_HELLO_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


@dataclass(frozen=True, slots=True)
class _Lib:
    ssl: ctypes.CDLL
    index: int


_LIB: _Lib | None = None


def _lib() -> _Lib:
    global _LIB
    if _LIB is None:
        libssl = ctypes.CDLL(mapped_library("libssl"))
        libcrypto = ctypes.CDLL(mapped_library("libcrypto"))
        libssl.SSL_CTX_set_client_hello_cb.restype = None
        libssl.SSL_CTX_set_client_hello_cb.argtypes = [ctypes.c_void_p, _HELLO_CB, ctypes.c_void_p]
        libssl.SSL_client_hello_get0_ext.restype = ctypes.c_int
        libssl.SSL_client_hello_get0_ext.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        libssl.SSL_get_ex_data.restype = ctypes.c_void_p
        libssl.SSL_get_ex_data.argtypes = [ctypes.c_void_p, ctypes.c_int]
        libssl.SSL_set_ex_data.restype = ctypes.c_int
        libssl.SSL_set_ex_data.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        libssl.SSL_get_SSL_CTX.restype = ctypes.c_void_p
        libssl.SSL_get_SSL_CTX.argtypes = [ctypes.c_void_p]
        libssl.SSL_set_verify.restype = None
        libssl.SSL_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        libcrypto.CRYPTO_get_ex_new_index.restype = ctypes.c_int
        libcrypto.CRYPTO_get_ex_new_index.argtypes = [
            ctypes.c_int,
            ctypes.c_long,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        index = libcrypto.CRYPTO_get_ex_new_index(_EX_INDEX_SSL, 0, None, None, None, None)
        if index < 0:
            raise ConfigError(["autocert: OpenSSL gave no ex_data slot for TLS-ALPN-01"])
        _LIB = _Lib(libssl, index)
    return _LIB


def _on_hello(ssl_ptr: int | None, _alert: int | None, _arg: int | None) -> int:
    # Runs inside OpenSSL for every handshake on a watched context: never raise (ctypes
    # would report it and fail the handshake); any doubt leaves the connection unmarked.
    try:
        lib = _LIB
        if lib is None or not ssl_ptr:
            return _HELLO_SUCCESS
        data = ctypes.c_void_p()
        size = ctypes.c_size_t()
        if (
            lib.ssl.SSL_client_hello_get0_ext(ssl_ptr, _EXT_ALPN, data, size) == 1
            and size.value == len(ONLY_ACME_ALPN)
            and data.value
            and ctypes.string_at(data.value, size.value) == ONLY_ACME_ALPN
        ):
            lib.ssl.SSL_set_ex_data(ssl_ptr, lib.index, _MARK)
            # The Python object of this connection (CPython's app data), so that the
            # server-name callback of an ordinary handshake needs no call into OpenSSL.
            owner = lib.ssl.SSL_get_ex_data(ssl_ptr, 0)
            if owner:
                if len(_marked) >= _MARKED_MAX:
                    _marked.clear()  # only aborted handshakes leave entries behind
                _marked.add(owner)
    except Exception:  # noqa: S110 - the ordinary path is the safe answer
        pass
    return _HELLO_SUCCESS


#: Kept alive for the process: OpenSSL holds a pointer to it.
_HELLO_CALLBACK = _HELLO_CB(_on_hello)


def _ssl_pointer(obj: object) -> int:
    """The ``SSL *`` of a ``_ssl._SSLSocket`` (layout proven by :func:`watch`), or 0."""
    if type(obj) is not _SSL_SOCKET:
        return 0
    return ctypes.c_void_p.from_address(id(obj) + _SSL_FIELD).value or 0


def _check_layout(ctx: ssl.SSLContext) -> None:
    lib = _lib()
    probe = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    raw = probe._sslobj  # type: ignore[attr-defined]
    pointer = _ssl_pointer(raw)
    if (
        not pointer
        or lib.ssl.SSL_get_ex_data(pointer, 0) != id(raw)
        or lib.ssl.SSL_get_SSL_CTX(pointer) != ssl_ctx_pointer(ctx)
    ):
        raise ConfigError(
            [
                "autocert: this Python's ssl module has an unknown layout; "
                "the TLS-ALPN-01 challenge is not available with it"
            ]
        )


def watch(ctx: ssl.SSLContext) -> None:
    """Mark the connections of ``ctx`` whose ClientHello offers exactly ``acme-tls/1``.

    Raises:
        ConfigError: OpenSSL or this Python's ``ssl`` is not one this can work with.
    """
    _check_layout(ctx)
    _lib().ssl.SSL_CTX_set_client_hello_cb(ssl_ctx_pointer(ctx), _HELLO_CALLBACK, None)


def offered_only_acme(sock: ssl.SSLObject | ssl.SSLSocket) -> bool:
    """Whether the hello of ``sock`` (in its handshake, on a watched context) was marked."""
    if not _marked:
        return False  # the ordinary handshake: no call into OpenSSL
    raw = getattr(sock, "_sslobj", None)
    if id(raw) not in _marked:
        return False
    _marked.discard(id(raw))
    lib = _LIB
    pointer = _ssl_pointer(raw)
    return bool(lib is not None and pointer and lib.ssl.SSL_get_ex_data(pointer, lib.index))


def ask_no_client_certificate(sock: ssl.SSLObject | ssl.SSLSocket) -> None:
    """Request no client certificate in this handshake (the CA's validation connection
    has none; the mode was copied from the front context when the connection began)."""
    lib = _LIB
    pointer = _ssl_pointer(getattr(sock, "_sslobj", None))
    if lib is not None and pointer:
        lib.ssl.SSL_set_verify(pointer, _VERIFY_NONE, None)
