"""Pomerium's ``sub_policies`` route key: the old form of a route's policy.

Each entry lists ``allowed_users``, ``allowed_domains`` and ``allowed_idp_claims``, as the
route itself may; Pomerium's ``Policy.ToPPL`` (``config/policy_ppl.go``) merges them into
the route's single legacy ``allow``/``or`` rule (``AllAllowedDomains``, ``AllAllowedUsers``,
``AllAllowedIDPClaims``: the route's entries first, then each sub-policy's in order). The
authorize package reads them through :func:`gatehouse.authorize.policy` the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from .base import StrictModel, StringList


class SubPolicy(StrictModel):
    """One ``sub_policies`` entry."""

    #: Identifier (shown in Pomerium's console; informational here).
    id: str | None = None
    #: Name (informational).
    name: str | None = None
    #: Users (email or id) allowed.
    allowed_users: StringList = Field(default_factory=list)
    #: Email domains allowed.
    allowed_domains: StringList = Field(default_factory=list)
    #: `{claim: [values]}` allowed.
    allowed_idp_claims: dict[str, list[Any]] = Field(default_factory=dict)
    #: Why access was denied (Pomerium shows it on its error page; informational here).
    explanation: str | None = None
    #: What to do to get access (informational).
    remediation: str | None = None
    #: Rego policies: refused (gatehouse evaluates PPL only).
    rego: StringList = Field(default_factory=list)
    #: PPL that Pomerium's databroker compiles into `rego`: refused likewise.
    source_ppl: str | None = None

    @field_validator("rego")
    @classmethod
    def _no_rego(cls, value: list[str]) -> list[str]:
        if value:
            raise ValueError(
                "not supported by gatehouse (Rego is not evaluated; write the rule as PPL "
                "in the route's policy)"
            )
        return value

    @field_validator("source_ppl")
    @classmethod
    def _no_source_ppl(cls, value: str | None) -> str | None:
        if value:
            raise ValueError(
                "not supported by gatehouse (Pomerium compiles it to Rego for policies kept "
                "in its databroker; write the rule as PPL in the route's policy)"
            )
        return value
