"""Known quirks of the identity providers gatehouse names (``idp_provider``).

Every provider here is plain OpenID Connect; the table records where each one departs
from the common path, so the protocol code stays free of provider names.

========== ===========================================================================
provider   quirks
========== ===========================================================================
oidc       none: discovery from ``idp_provider_url``, ``groups`` from a ``groups`` claim
google     ``idp_provider_url`` defaults to ``https://accounts.google.com`` (the issuer
           Google's discovery document names). Google rejects the ``offline_access``
           scope: it is dropped, and ``access_type=offline`` + ``prompt=consent`` are sent
           instead, which is how Google issues a refresh token. No groups claim.
okta       none beyond the common path. Use the org URL (``https://ORG.okta.com``) or a
           custom authorization server (``https://ORG.okta.com/oauth2/default``); groups
           need a ``groups`` claim configured on the server and the ``groups`` scope in
           ``idp_scopes``.
auth0      the issuer ends with ``/`` (``https://TENANT.auth0.com/``); a configured URL
           without it is accepted (see :func:`issuer_matches`). Groups come from a
           ``groups`` claim or a namespaced claim ending in ``/groups`` (Auth0 Actions
           must namespace custom claims). When the tenant has no
           ``end_session_endpoint`` (RP-initiated logout off), ``/v2/logout`` is used.
keycloak   the realm URL (``https://HOST/realms/REALM``). Groups need a "Group
           Membership" mapper; with "full group path" on, values look like ``/team``
           and are kept verbatim so policies can match either form they configure.
azure      the stable user id is the ``oid`` claim (``sub`` is pairwise per
           application). E-mail falls back to ``preferred_username`` / ``upn`` when the
           ``email`` claim is absent. Multi-tenant (``/common/v2.0``, ``/organizations``)
           discovery names the issuer ``https://login.microsoftonline.com/{tenantid}/v2.0``:
           the ID token's ``iss`` must equal it with ``{tenantid}`` replaced by the
           token's own ``tid``. ``groups`` holds group object ids.
========== ===========================================================================

Config examples (YAML)::

    idp_provider: oidc
    idp_provider_url: https://idp.example.com
    idp_client_id: gatehouse
    idp_client_secret_file: /run/secrets/idp_client_secret

    idp_provider: google        # idp_provider_url may be omitted
    idp_client_id: 1234.apps.googleusercontent.com
    idp_client_secret: ...

    idp_provider: okta
    idp_provider_url: https://example.okta.com/oauth2/default
    idp_scopes: [openid, profile, email, groups, offline_access]

    idp_provider: auth0
    idp_provider_url: https://example.eu.auth0.com/

    idp_provider: keycloak
    idp_provider_url: https://sso.example.com/realms/staff

    idp_provider: azure
    idp_provider_url: https://login.microsoftonline.com/TENANT_ID/v2.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

TENANT_PLACEHOLDER = "{tenantid}"


@dataclass(frozen=True, slots=True)
class ProviderQuirks:
    """How one named provider departs from plain OpenID Connect."""

    name: str
    #: Used when ``idp_provider_url`` is not configured (``None``: it is required).
    default_url: str | None = None
    #: Scopes the provider refuses; removed from ``idp_scopes``.
    drop_scopes: frozenset[str] = frozenset()
    #: Authorization parameters always sent (``idp_request_params`` override them).
    auth_params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Claims tried in order for the stable user id.
    subject_claims: tuple[str, ...] = ("sub",)
    #: Claims tried in order for the e-mail address.
    email_claims: tuple[str, ...] = ("email",)
    #: Also take groups from claims whose name ends with ``/groups`` (namespaced).
    namespaced_groups: bool = False
    #: The discovery issuer may contain ``{tenantid}``, filled from the token's ``tid``.
    tenant_issuer: bool = False
    #: A logout URL (relative to the issuer) to use when discovery has no end_session.
    fallback_logout_path: str | None = None

    def subject(self, claims: Mapping[str, Any]) -> str:
        for name in self.subject_claims:
            value = claims.get(name)
            if isinstance(value, str) and value:
                return value
        return ""

    def email(self, claims: Mapping[str, Any]) -> str:
        for name in self.email_claims:
            value = claims.get(name)
            if isinstance(value, str) and value:
                return value
        return ""

    def groups(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        """Group names from ``groups`` (a list, or one string), de-duplicated in order."""
        sources = [claims.get("groups")]
        if self.namespaced_groups:
            sources += [v for k, v in claims.items() if k.endswith("/groups")]
        out: dict[str, None] = {}
        for value in sources:
            if isinstance(value, str):
                value = [value]
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, str) and item:
                        out.setdefault(item, None)
        return tuple(out)


PROVIDERS: Mapping[str, ProviderQuirks] = MappingProxyType(
    {
        "oidc": ProviderQuirks("oidc"),
        "google": ProviderQuirks(
            "google",
            default_url="https://accounts.google.com",
            drop_scopes=frozenset({"offline_access"}),
            auth_params=MappingProxyType({"access_type": "offline", "prompt": "consent"}),
        ),
        "okta": ProviderQuirks("okta"),
        "auth0": ProviderQuirks("auth0", namespaced_groups=True, fallback_logout_path="v2/logout"),
        "keycloak": ProviderQuirks("keycloak"),
        "azure": ProviderQuirks(
            "azure",
            subject_claims=("oid", "sub"),
            email_claims=("email", "preferred_username", "upn"),
            tenant_issuer=True,
        ),
    }
)


def quirks_for(provider: str | None) -> ProviderQuirks:
    """The quirks of ``idp_provider`` (``None`` means plain ``oidc``)."""
    try:
        return PROVIDERS[provider or "oidc"]
    except KeyError:
        raise ValueError(f"idp_provider {provider!r} is not an OpenID Connect provider") from None


def issuer_matches(configured_url: str, issuer: str) -> bool:
    """OpenID Connect Discovery §4.3: the issuer must be the URL discovery was made from.

    A difference of one trailing ``/`` is tolerated (Auth0 issuers end with one, and
    operators write URLs either way); anything else must be identical.
    """
    return configured_url.rstrip("/") == issuer.rstrip("/") and bool(issuer)
