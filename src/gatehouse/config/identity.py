"""Signing-key and assertion options (owned by ``identity/``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import StrictModel, any_case


def _claims_headers(value: Any) -> Any:
    """Pomerium accepts a map ``{header: claim}``, a list of claims, or a comma string."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return {f"X-Pomerium-Claim-{_title(str(c))}": str(c) for c in value}
    return value


def _title(claim: str) -> str:
    return "-".join(p[:1].upper() + p[1:] for p in claim.replace("_", "-").split("-"))


class SigningKeyEntry(StrictModel):
    """One entry of ``signing_keys`` (gatehouse addition): a key and when it starts signing.

    Every listed key is published in the JWKS at once; the signer is the newest key whose
    ``sign_from`` has passed (a key without ``sign_from`` may sign from the start). So a
    rotation is one config change: add the new key with ``sign_from`` set later than the
    longest JWKS cache of any verifier (Grafana: the smaller of its ``cache_ttl`` and our
    ``max-age=60``), and remove the old key once the last token it signed has expired
    (5 minutes after the switch).
    """

    #: A PEM private key, or the base64 of one (like `signing_key`).
    key: str | None = None
    #: A file holding a PEM private key (like `signing_key_file`).
    file: str | None = None
    #: RFC 3339 time from which this key signs; the key is published before that.
    sign_from: datetime | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SigningKeyEntry:
        if (self.key is None) == (self.file is None):
            raise ValueError("a signing_keys entry needs exactly one of key or file")
        if self.sign_from is not None and self.sign_from.tzinfo is None:
            raise ValueError("sign_from needs a time zone (RFC 3339, e.g. 2026-01-31T12:00:00Z)")
        return self


class IdentityOptions(StrictModel):
    """How the assertion forwarded to upstreams is signed and what it carries."""

    #: The assertion signing key: a PEM private key, or its base64 (`gatehouse keygen`).
    #: Unset (and no `signing_keys`): derived from `shared_secret`, else generated in `data_dir`.
    signing_key: str | None = None
    #: A file holding the PEM signing key (wins over `signing_key`).
    signing_key_file: str | None = None
    #: Keys with a time from which each signs, for rotation (gatehouse addition): entries of
    #: `file` or `key`, and an RFC 3339 `sign_from`. Published together with `signing_key`
    #: or `signing_key_file` when both are set.
    signing_keys: list[SigningKeyEntry] = Field(default_factory=list)
    #: Send the signed assertion (and claim headers) upstream on routes that do not set it.
    pass_identity_headers: bool = False
    #: Extra request headers carrying claims: `{header: claim}`, or a list of claims
    #: (sent as `X-Pomerium-Claim-<Name>`).
    jwt_claims_headers: dict[str, str] = Field(default_factory=dict)
    #: The assertion's `iss`: `hostOnly` (the route's host) or `uri` (`https://host/`).
    jwt_issuer_format: Annotated[Literal["hostOnly", "uri"], any_case("hostOnly", "uri")] = (
        "hostOnly"
    )
    #: When set, only these groups are put in the assertion.
    jwt_groups_filter: list[str] = Field(default_factory=list)
    #: Memory each worker may use for cached signed assertions (bytes), least recently used
    #: evicted first; about 2.2 KiB per session and route host. gatehouse addition.
    assertion_cache_max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)

    @field_validator("jwt_claims_headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        return _claims_headers(value)
