"""One worker's TLS termination: which certificates it serves and what keeps them current.

Built from the options at start, updated on every config reload. Certificates come from
the config first, then autocert; with neither (yet), the self-signed certificate that
``run`` generated before forking (:func:`prepare_fallback`) is served for every name.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..config.options import Options
from ..timeslice import Steps, drive
from .certificates import CertificatePem, SniStore, certificate_pairs, load_all, load_certificate
from .downstream import downstream_steps
from .selfsigned import fallback

if TYPE_CHECKING:  # imported when autocert is on: the ACME client library is ~50 ms
    from .acme import AutocertManager

log = logging.getLogger("gatehouse")


def fallback_names(options: Options) -> list[str]:
    """The names the generated certificate lists: every route host, authenticate, localhost."""
    names = ["localhost"]
    for route in options.all_routes:
        host = route.from_host
        if host and host not in names:
            names.append(host)
    if options.authenticate_service_url:
        auth = (urlsplit(options.authenticate_service_url).hostname or "").lower()
        if auth and auth not in names:
            names.append(auth)
    return names


def prepare_fallback(options: Options) -> CertificatePem | None:
    """Generate the self-signed certificate if this config needs one (warned once, here).

    Called by ``run`` before forking, so every worker serves the same certificate.
    """
    if options.insecure_server or certificate_pairs(options):
        return None
    if not options.autocert:
        log.warning(
            "no certificate configured: serving a self-signed certificate generated at "
            "start-up, which clients will not trust; configure certificates or autocert"
        )
    return fallback(fallback_names(options))


class TLSService:
    """The SNI store, its sources (config, autocert, fallback) and the listener context."""

    def __init__(self, options: Options) -> None:
        self.store = SniStore()
        self.autocert: AutocertManager | None = None
        self.apply(options)

    def apply(self, options: Options) -> None:
        """Serve the certificates of ``options`` (at start and on reload).

        Raises:
            ConfigError: a configured certificate does not load (the old ones stay).
        """
        drive(self.apply_steps(options))

    def apply_steps(self, options: Options) -> Steps[None]:
        """:meth:`apply` as a generator that pauses while it reads the routes' client CAs
        (a reload sliced on the event loop, :mod:`gatehouse.timeslice`)."""
        configured = load_all(certificate_pairs(options))
        yield
        trust = yield from downstream_steps(options)
        self.store.replace("config", {str(i): c for i, c in enumerate(configured)})
        if not configured and self.store.get("fallback", "generated") is None:
            # The one ``run`` generated (and warned about) before forking, or a new one if
            # a reload removed the last configured certificate.
            pem = fallback(fallback_names(options))
            self.store.put("fallback", "generated", load_certificate(pem))
        self.store.set_client_rule(trust.mode, trust.handshake, trust.bundle_pem)
        if options.autocert:
            if self.autocert is None:
                from .acme import AutocertManager

                self.autocert = AutocertManager(options, self.store)
            else:
                self.autocert.update(options)

    def listener_context(self) -> ssl.SSLContext:
        return self.store.listener_context()

    def start(self) -> None:
        if self.autocert is not None:
            self.autocert.start()

    async def close(self) -> None:
        if self.autocert is not None:
            await self.autocert.close()
