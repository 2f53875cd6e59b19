"""Fixtures for the operations tests: the OpenID provider and sign-in configs.

``idp`` is panva's oidc-provider shared by a module; tests that take the provider down
use :class:`ops_helpers.RestartableProvider` instead (their own instance, fixed port).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from authenticate.conftest import ProviderProcess, run_provider
from e2e.conftest import AUTH_URL

PROVIDER_URIS = {
    "REDIRECT_URIS": f"{AUTH_URL}/oauth2/callback",
    "POST_LOGOUT_REDIRECT_URIS": f"{AUTH_URL}/.pomerium/signed_out",
}


@pytest.fixture(scope="module")
def idp() -> Iterator[ProviderProcess]:
    with run_provider(**PROVIDER_URIS) as p:
        yield p
