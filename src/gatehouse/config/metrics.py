"""Global keys of the metrics and health listeners: Pomerium's ``metrics_basic_auth``,
``metrics_certificate*``, ``metrics_client_ca*`` and ``health_check_addr``."""

from __future__ import annotations

import base64
import binascii

from pydantic import field_validator, model_validator

from .base import StrictModel


class ListenerOptions(StrictModel):
    """The two keys, composed into :class:`~gatehouse.config.options.Options`."""

    #: Basic authentication for `/metrics`: base64 of `user:password`, as Pomerium reads it;
    #: a scrape without those credentials gets 401.
    metrics_basic_auth: str | None = None
    #: Serve `/metrics` over TLS with this certificate: base64 of PEM (or a PEM)...
    metrics_certificate: str | None = None
    #: ...and this key.
    metrics_certificate_key: str | None = None
    #: The certificate as a file path...
    metrics_certificate_file: str | None = None
    #: ...and its key.
    metrics_certificate_key_file: str | None = None
    #: Require scrapers to present a client certificate signed by this CA (base64 of PEM,
    #: or a PEM); needs a metrics certificate.
    metrics_client_ca: str | None = None
    #: The same as a file path.
    metrics_client_ca_file: str | None = None
    #: `host:port` of a listener for health probes: `/healthz` (liveness), `/readyz`,
    #: `/startupz` and `/status` as Pomerium's, answered from a probe of the main listener.
    #: Unset = none (Pomerium's default is 127.0.0.1:28080); port 0 picks one (logged).
    health_check_addr: str | None = None

    @field_validator("metrics_basic_auth")
    @classmethod
    def _metrics_basic_auth(cls, value: str | None) -> str | None:
        if value is not None:
            _split(value)
        return value

    @field_validator("health_check_addr")
    @classmethod
    def _health_address(cls, value: str | None) -> str | None:
        if value is not None:
            _host, sep, port = value.rpartition(":")
            if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError("expected host:port (the port may be 0)")
        return value

    @model_validator(mode="after")
    def _metrics_tls(self) -> ListenerOptions:
        pairs = (
            ("metrics_certificate", "metrics_certificate_file"),
            ("metrics_certificate_key", "metrics_certificate_key_file"),
            ("metrics_client_ca", "metrics_client_ca_file"),
        )
        for inline, path in pairs:
            if getattr(self, inline) and getattr(self, path):
                raise ValueError(f"use either {inline} or {path}, not both")
        cert = self.metrics_certificate or self.metrics_certificate_file
        key = self.metrics_certificate_key or self.metrics_certificate_key_file
        if bool(cert) != bool(key):
            raise ValueError("metrics_certificate and metrics_certificate_key go together")
        if (self.metrics_client_ca or self.metrics_client_ca_file) and not cert:
            raise ValueError("metrics_client_ca needs a metrics certificate (TLS)")
        return self

    @property
    def metrics_credentials(self) -> tuple[str, str] | None:
        """``(user, password)`` from ``metrics_basic_auth``, or ``None``."""
        return None if self.metrics_basic_auth is None else _split(self.metrics_basic_auth)


def _split(value: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("must be a base64 encoded string (of user:password)") from None
    user, sep, password = text.partition(":")
    if not sep:
        raise ValueError("should contain a user name and password separated by a colon")
    return user, password
