"""ACME (``autocert``), the HTTP redirect listener, upstream trust (owned by ``tls/``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .base import StrictModel
from .durations import Duration
from .mtls import DownstreamMTLS

#: Let's Encrypt's production and staging ACME directories (Pomerium's defaults).
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING_DIRECTORY = "https://acme-staging-v02.api.letsencrypt.org/directory"


class TLSOptions(StrictModel):
    """Certificates obtained from an ACME CA, plain-HTTP redirects, the global upstream CA."""

    #: Obtain and renew certificates for every route host and the authenticate host from an
    #: ACME CA; they are stored in `autocert_dir` and chosen by SNI. Challenges: TLS-ALPN-01
    #: on the TLS listener always, HTTP-01 too when `http_redirect_addr` is set.
    autocert: bool = False
    #: ACME directory URL; unset = Let's Encrypt (production, or staging with
    #: `autocert_use_staging`).
    autocert_ca: str | None = None
    #: Use Let's Encrypt's staging directory (untrusted certificates, higher rate limits).
    autocert_use_staging: bool = False
    #: Contact email registered with the ACME account.
    autocert_email: str | None = None
    #: External account binding key id (some CAs require one).
    autocert_eab_key_id: str | None = None
    #: External account binding MAC key, base64url.
    autocert_eab_mac_key: str | None = None
    #: CA that signs the ACME server's own HTTPS certificate: file, PEM or base64 of PEM.
    autocert_trusted_ca: str | None = None
    #: A file holding that CA (Pomerium's key for the file form).
    autocert_trusted_ca_file: str | None = None
    #: Ask for certificates with the OCSP must-staple extension.
    autocert_must_staple: bool = False
    #: Where the ACME account, certificates and the lock live (shared by the workers).
    #: Unset = `<data_dir>/autocert`.
    autocert_dir: str | None = None
    #: Renew a certificate when less than this is left of it. gatehouse addition;
    #: unset = a third of its lifetime (as Let's Encrypt suggests: 30 of 90 days).
    autocert_renew_before: Duration | None = None
    #: `[host]:port` of a plain-HTTP listener that redirects to HTTPS and answers ACME
    #: HTTP-01 challenges (Pomerium's key; usually `:80`).
    http_redirect_addr: str | None = None
    #: CA bundle trusted for every upstream (added to the system's): file path, PEM or
    #: base64 of PEM.
    certificate_authority: str | None = None
    #: The same as a file path.
    certificate_authority_file: str | None = None
    #: Client certificates on the TLS listener (Pomerium's `downstream_mtls`, see below).
    downstream_mtls: DownstreamMTLS | None = None
    #: Longest time for a client's TLS handshake. gatehouse addition.
    timeout_tls_handshake: Duration = Field(default=10.0, gt=0)

    @field_validator("http_redirect_addr")
    @classmethod
    def _redirect_addr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected [host]:port, e.g. :80")
        return value

    @model_validator(mode="after")
    def _trusted_ca_once(self) -> TLSOptions:
        if self.autocert_trusted_ca and self.autocert_trusted_ca_file:
            raise ValueError("use either autocert_trusted_ca or autocert_trusted_ca_file, not both")
        return self

    @property
    def autocert_directory_url(self) -> str:
        if self.autocert_ca:
            return self.autocert_ca
        if self.autocert_use_staging:
            return LETS_ENCRYPT_STAGING_DIRECTORY
        return LETS_ENCRYPT_DIRECTORY
