"""Downstream mutual TLS options (Pomerium's ``downstream_mtls``), owned by ``tls/``.

Meanings follow Pomerium's ``config/mtls.go``: ``ca``/``ca_file`` are the trusted client
CAs, ``crl``/``crl_file`` revocation lists, ``enforcement`` what happens to a request
without a valid client certificate, ``match_subject_alt_names`` SAN regular expressions
(full match, any one of them), ``max_verify_depth`` the longest chain above the leaf
(default 1: issued directly by a trusted CA; 0: no limit).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import StrictModel, any_case

#: Pomerium's enforcement modes (``MtlsEnforcementMode``).
ENFORCEMENT_MODES = ("policy_with_default_deny", "policy", "reject_connection")
#: Pomerium's SAN types (``SANMatcher_SANType``).
SAN_TYPES = ("dns", "email", "ip_address", "uri", "user_principal_name")


class SANMatch(StrictModel):
    """One ``{type: regex}`` entry of ``match_subject_alt_names``."""

    type: Literal["dns", "email", "ip_address", "uri", "user_principal_name"]
    pattern: str


class DownstreamMTLS(StrictModel):
    """Client certificates on the TLS listener."""

    #: Trusted client CA bundle: base64 of PEM (Pomerium's form), a PEM or a file path.
    ca: str | None = None
    #: Trusted client CA bundle as a file path.
    ca_file: str | None = None
    #: Certificate revocation list(s): base64 of PEM, a PEM or a file path.
    crl: str | None = None
    #: Certificate revocation list(s) as a file path.
    crl_file: str | None = None
    #: `policy_with_default_deny` (default: requests without a valid certificate get 495),
    #: `policy` (only the route's policy decides) or `reject_connection` (the TLS
    #: handshake fails without a valid certificate).
    enforcement: (
        Annotated[
            Literal["policy_with_default_deny", "policy", "reject_connection"],
            any_case(*ENFORCEMENT_MODES),
        ]
        | None
    ) = None
    #: SAN matchers, e.g. `- email: .*@example\.com`; a certificate needs one SAN that
    #: fully matches one of them.
    match_subject_alt_names: list[SANMatch] = Field(default_factory=list)
    #: Longest chain above the leaf (1 = issued directly by a trusted CA; 0 = no limit).
    max_verify_depth: int | None = Field(default=None, ge=0)

    @field_validator("match_subject_alt_names", mode="before")
    @classmethod
    def _san_entries(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for item in value:
            if isinstance(item, dict) and set(item) - {"type", "pattern"}:
                if len(item) != 1:
                    raise ValueError(
                        "each entry is {type: pattern}, e.g. {email: '.*@example.com'}"
                    )
                ((kind, pattern),) = item.items()
                kind = str(kind).lower()
                if kind not in SAN_TYPES:
                    raise ValueError(f"unknown SAN type {kind!r} (one of {', '.join(SAN_TYPES)})")
                item = {"type": kind, "pattern": pattern}
            out.append(item)
        return out

    @field_validator("match_subject_alt_names")
    @classmethod
    def _patterns(cls, value: list[SANMatch]) -> list[SANMatch]:
        for m in value:
            try:
                re.compile(m.pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {m.pattern!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_of_each(self) -> DownstreamMTLS:
        if self.ca and self.ca_file:
            raise ValueError("cannot set both ca and ca_file")
        if self.crl and self.crl_file:
            raise ValueError("cannot set both crl and crl_file")
        return self

    @property
    def mode(self) -> str:
        return self.enforcement or "policy_with_default_deny"

    @property
    def depth(self) -> int:
        return 1 if self.max_verify_depth is None else self.max_verify_depth
