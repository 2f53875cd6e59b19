"""Server certificates: read from config in every Pomerium form, chosen by SNI.

Theory of operation: each certificate is loaded into a hardened context of its own. A
:class:`SniStore` keeps them in layers, in priority order — ``config`` (the
``certificate*`` keys), ``acme`` (obtained by autocert) and ``fallback`` (the generated
self-signed one) — and compiles them into one immutable lookup table: exact DNS names,
``*.`` wildcards (one label, RFC 6125 §6.4.3) and a default for clients that send no or an
unknown server name. The listener's context calls :meth:`SniStore.select` from OpenSSL's
server-name callback and switches the connection to the chosen context; replacing a layer
(config reload, a renewed certificate) builds a new table and swaps it in, so new
handshakes see it and established connections keep theirs. With autocert, a
:class:`ValidationResponder` is asked first (TLS-ALPN-01's validation handshakes, see
:mod:`gatehouse.tls.acme_tlsalpn`); it answers ``None`` for every ordinary hello.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..config.options import Options
from ..errors import ConfigError
from . import client_hello, sni_guard
from .client_auth import ClientCertMode, HandshakeGate
from .client_trust import ClientTrust
from .hardening import new_server_context

log = logging.getLogger("gatehouse.tls")

#: Layers of certificates, highest priority first.
LAYERS = ("config", "acme", "fallback")
#: A config value at least this long is never taken for a file path, characters.
_MAX_PATH_CHARS = 4096


@dataclass(frozen=True, slots=True)
class CertificatePem:
    """A certificate chain and its key, PEM-encoded."""

    cert: bytes
    key: bytes
    source: str


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    """A certificate ready to serve: its names, validity and its own server context."""

    pem: CertificatePem
    names: tuple[str, ...]
    not_before: float
    not_after: float
    context: ssl.SSLContext


def pem_source(value: str, what: str) -> bytes:
    """A file path, a PEM, or base64 of a PEM (Pomerium accepts all three).

    Raises:
        ConfigError: none of the three.
    """
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.encode()
    if _is_file(text):
        try:
            return Path(os.path.expanduser(text)).read_bytes()
        except OSError as exc:
            raise ConfigError([f"{what}: cannot read {text}: {exc.strerror}"]) from None
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError([f"{what}: not a readable file, a PEM, or base64 of a PEM"]) from None
    if b"-----BEGIN" not in decoded:
        raise ConfigError([f"{what}: base64 value does not hold a PEM"])
    return decoded


def _is_file(text: str) -> bool:
    # Base64 of a PEM is longer than a path may be: stat would fail with ENAMETOOLONG.
    if len(text) >= _MAX_PATH_CHARS:
        return False
    try:
        return Path(os.path.expanduser(text)).is_file()
    except OSError:
        return False


def certificate_pairs(options: Options) -> list[CertificatePem]:
    """Every certificate and key configured (``certificate_file``, ``certificate``,
    ``certificates``), read into memory, in that order (the first is the default)."""
    pairs: list[CertificatePem] = []
    if options.certificate_file and options.certificate_key_file:
        pairs.append(
            CertificatePem(
                pem_source(options.certificate_file, "certificate_file"),
                pem_source(options.certificate_key_file, "certificate_key_file"),
                "certificate_file",
            )
        )
    if options.certificate and options.certificate_key:
        pairs.append(
            CertificatePem(
                pem_source(options.certificate, "certificate"),
                pem_source(options.certificate_key, "certificate_key"),
                "certificate",
            )
        )
    for i, pair in enumerate(options.certificates):
        pairs.append(
            CertificatePem(
                pem_source(pair.cert, f"certificates[{i}].cert"),
                pem_source(pair.key, f"certificates[{i}].key"),
                f"certificates[{i}]",
            )
        )
    return pairs


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate serves: its SANs, else its subject CN (lower case)."""
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names.extend(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    if not names:
        names.extend(
            str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
    return names


def load_certificate(pem: CertificatePem) -> LoadedCertificate:
    """Parse ``pem`` and load it into a hardened server context of its own.

    Raises:
        ConfigError: not a certificate, or the key does not load or match.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem.cert)
    except ValueError as exc:
        raise ConfigError([f"{pem.source}: not a PEM certificate: {exc}"]) from None
    ctx = new_server_context()
    try:
        _load_chain(ctx, pem)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError([f"{pem.source}: certificate and key do not load: {exc}"]) from None
    return LoadedCertificate(
        pem=pem,
        names=tuple(certificate_names(cert)),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        context=ctx,
    )


def load_all(pems: list[CertificatePem]) -> list[LoadedCertificate]:
    """Load every pair; every problem is reported at once.

    Raises:
        ConfigError: one problem per pair that does not load.
    """
    loaded: list[LoadedCertificate] = []
    problems: list[str] = []
    for pem in pems:
        try:
            loaded.append(load_certificate(pem))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return loaded


class ValidationResponder(Protocol):
    """Picks a validation certificate for a handshake (autocert's TLS-ALPN-01)."""

    def validation_context(
        self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str
    ) -> ssl.SSLContext | None: ...


@dataclass(frozen=True, slots=True)
class _Table:
    exact: dict[str, ssl.SSLContext]
    #: ``.example.com`` for ``*.example.com``.
    wildcard: dict[str, ssl.SSLContext]
    default: ssl.SSLContext | None


class SniStore:
    """Certificates by layer, compiled into one lookup table for the server-name callback."""

    def __init__(self) -> None:
        self._layers: dict[str, dict[str, LoadedCertificate]] = {layer: {} for layer in LAYERS}
        self._table = _Table({}, {}, None)
        #: What handshakes ask of clients; every served context is bound to it.
        self.client_gate = HandshakeGate()
        self._front: ssl.SSLContext | None = None
        self._validation: ValidationResponder | None = None

    def set_validation(self, responder: ValidationResponder | None) -> None:
        """Let ``responder`` answer validation handshakes before the ordinary choice."""
        self._validation = responder
        if self._front is not None:
            self._watch(self._front)

    @property
    def validating(self) -> bool:
        """Whether validation handshakes can be answered (a responder is installed)."""
        return self._validation is not None

    def _watch(self, front: ssl.SSLContext) -> None:
        if self._validation is None:
            return
        try:
            client_hello.watch(front)
        except ConfigError as exc:
            # Ordinary handshakes are unaffected; autocert then offers no TLS-ALPN-01.
            log.error("; ".join(exc.problems))
            self._validation = None

    def set_client_rule(
        self, mode: ClientCertMode, trust: ClientTrust | None, ca_pem: bytes
    ) -> None:
        """Ask clients for certificates as ``mode`` says (at start and on reload)."""
        self.client_gate.configure(mode, trust, ca_pem)
        self._bind_all()

    def _bind_all(self) -> None:
        served = [c.context for layer in LAYERS for c in self._layers[layer].values()]
        if self._front is not None:
            served.append(self._front)
        self.client_gate.forget_all_but(served)
        for ctx in served:
            self.client_gate.bind(ctx)

    def replace(self, layer: str, certs: dict[str, LoadedCertificate]) -> None:
        """Replace every certificate of ``layer`` (keyed by anything stable, e.g. a host)."""
        self._layers[layer] = dict(certs)
        self._compile()

    def put(self, layer: str, key: str, cert: LoadedCertificate) -> None:
        """Add or replace one certificate of ``layer``."""
        self._layers[layer][key] = cert
        self._compile()

    def get(self, layer: str, key: str) -> LoadedCertificate | None:
        return self._layers[layer].get(key)

    def _compile(self) -> None:
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        default: ssl.SSLContext | None = None
        for layer in LAYERS:
            for cert in self._layers[layer].values():
                if default is None:
                    default = cert.context
                for name in cert.names:
                    if name.startswith("*."):
                        wildcard.setdefault(name[1:], cert.context)
                    else:
                        exact.setdefault(name, cert.context)
        self._table = _Table(exact, wildcard, default)
        self._bind_all()

    @property
    def empty(self) -> bool:
        return self._table.default is None

    def select(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for ``server_name`` (exact, then wildcard, then the default)."""
        table = self._table
        if not server_name:
            return table.default
        name = server_name.lower().rstrip(".")
        ctx = table.exact.get(name)
        if ctx is None:
            dot = name.find(".")
            if dot > 0:
                ctx = table.wildcard.get(name[dot:])
        return ctx if ctx is not None else table.default

    def listener_context(self) -> ssl.SSLContext:
        """The context to listen with: hardened, switching each handshake by SNI.

        Raises:
            ConfigError: the store holds no certificate.
        """
        default = self._table.default
        if default is None:
            raise ConfigError(["TLS is enabled but no certificate is available"])
        front = new_server_context()
        # The front context is a real one too (same default certificate), so a handshake
        # is served even if the callback never switches it.
        for cert in (c for layer in LAYERS for c in self._layers[layer].values()):
            if cert.context is default:
                _load_chain(front, cert.pem)
                break

        def choose(
            sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
        ) -> None:
            ctx = None
            responder = self._validation
            if responder is not None and server_name:
                ctx = _validation_context(responder, sock, server_name)
            if ctx is None:
                ctx = self.select(server_name)
            if ctx is not None and ctx is not sock.context:
                sock.context = ctx

        sni_guard.install()
        front.sni_callback = choose
        self._watch(front)
        self._front = front
        self.client_gate.bind(front)
        return front


def _validation_context(
    responder: ValidationResponder, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str
) -> ssl.SSLContext | None:
    # In OpenSSL's server-name callback: an exception would fail the handshake with a
    # traceback on stderr. Log it once and serve the ordinary certificate instead.
    try:
        return responder.validation_context(sock, server_name)
    except Exception as exc:
        log.error(
            "tls: validation certificate check failed; ordinary certificate served",
            extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
        )
        return None


def _load_chain(ctx: ssl.SSLContext, pem: CertificatePem) -> None:
    # ssl loads chains only from files: write them to private temporary files.
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem.key)
        with open(cert_path, "wb") as f:
            f.write(pem.cert)
        ctx.load_cert_chain(cert_path, key_path)


def server_context(pairs: list[CertificatePem]) -> ssl.SSLContext:
    """A listener context serving ``pairs`` by SNI (the first is the default).

    Raises:
        ConfigError: no certificate, or one that does not load.
    """
    if not pairs:
        raise ConfigError(["TLS is enabled but no certificate is configured"])
    store = SniStore()
    store.replace("config", {str(i): c for i, c in enumerate(load_all(pairs))})
    return store.listener_context()
