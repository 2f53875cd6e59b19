"""OpenID Connect relying party and the sign-in / callback / sign-out flows.

Modules, from the outside in:

- :mod:`.flow` — :class:`Authenticator`, what the internal endpoints call;
  :func:`build_authenticator` makes one from the options.
- :mod:`.state` — the sealed ``state`` (PKCE verifier, nonce, return URL), bound to a
  CSRF cookie, expiring, single use through the store's ``consume_once``.
- :mod:`.redirects` — signed expiring URLs (``pomerium_signature``...) and the
  redirect-target allow list.
- :mod:`.relying_party` — the I/O driver: token, userinfo, revocation calls.
- :mod:`.oidc` — protocol messages without I/O; :mod:`.tokens` — ID token validation;
  :mod:`.discovery` — metadata and JWKS with caching; :mod:`.providers` — per-IdP quirks.
- :mod:`.errors` — the exceptions, each with its HTTP status.
"""

from .errors import (
    AuthenticationError,
    AuthorizationDenied,
    IdpUnavailable,
    InvalidIdToken,
    InvalidRedirect,
    InvalidState,
    TokenRequestRejected,
)
from .flow import (
    Authenticator,
    SignInResult,
    SignInStart,
    allowed_redirect_hosts,
    build_authenticator,
)
from .redirects import (
    RedirectSigner,
    is_allowed_programmatic_redirect,
    is_allowed_redirect,
)
from .relying_party import Identity, RelyingParty, new_http_client
from .state import ConsumeOnce, StateCodec, csrf_cookie_name

__all__ = [
    "AuthenticationError",
    "Authenticator",
    "AuthorizationDenied",
    "ConsumeOnce",
    "Identity",
    "IdpUnavailable",
    "InvalidIdToken",
    "InvalidRedirect",
    "InvalidState",
    "RedirectSigner",
    "RelyingParty",
    "SignInResult",
    "SignInStart",
    "StateCodec",
    "TokenRequestRejected",
    "allowed_redirect_hosts",
    "build_authenticator",
    "csrf_cookie_name",
    "is_allowed_programmatic_redirect",
    "is_allowed_redirect",
    "new_http_client",
]
