"""The sign-in, callback and sign-out steps, as the internal endpoints call them.

This is the seam between HTTP and the relying party: each method takes what an endpoint
has read from the request (query parameters, a cookie value) and returns what it must
answer with (a URL to redirect to, a cookie to set, an :class:`Identity` to turn into a
session). Building the responses, cookies and session records stays with the endpoints.

    GET /.pomerium/sign_in?pomerium_redirect_uri=…&pomerium_signature=…   (authenticate host)
        start = await auth.sign_in(request.url, csrf_cookie)      → 302 start.authorization_url
                                                                   + Set-Cookie CSRF cookie
    GET /oauth2/callback?code=…&state=…                           (authenticate host)
        done = await auth.callback(request.query_params(), csrf_cookie, store.consume_once)
                                                                   → session from done.identity,
                                                                     302 done.redirect_url via
                                                                     /.pomerium/callback/ hand-off
    POST /.pomerium/sign_out  (or GET with a signed URL: auth.signer.verify(request.url))
        url = await auth.sign_out(session, post_logout_redirect_uri)  → 302 url or signed-out page
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import httpx

from gatehouse.config.options import Options
from gatehouse.sessions.model import Session

from .binding import QUERY_BINDING
from .clients import DEFAULT_IDP_ID, QUERY_IDP_ID, ClientIds, RouteClient
from .discovery import Discovery
from .errors import IdpUnavailable, InvalidRedirect, TokenRequestRejected
from .oidc import ClientConfig, parse_callback
from .providers import quirks_for
from .redirects import (
    QUERY_PROGRAMMATIC,
    QUERY_REDIRECT_URI,
    RedirectSigner,
    is_allowed_programmatic_redirect,
    is_allowed_redirect,
)
from .relying_party import Identity, RelyingParty
from .state import DEFAULT_STATE_TTL_S, ConsumeOnce, StateCodec, consume

log = logging.getLogger("gatehouse.authenticate")


@dataclass(frozen=True, slots=True)
class SignInStart:
    """Answer to ``/.pomerium/sign_in``: redirect to the IdP and set the CSRF cookie."""

    authorization_url: str
    csrf_cookie_value: str
    #: Max-Age for the CSRF cookie (seconds): the state's lifetime.
    csrf_cookie_max_age_s: int


@dataclass(frozen=True, slots=True)
class SignInResult:
    """Answer to ``/oauth2/callback``: who signed in, and where they were going."""

    identity: Identity
    redirect_url: str
    #: The route host's sign-in binding hash, for the hand-off ("" if none).
    binding: str = ""
    #: ``redirect_url`` is a programmatic login's loopback target, not a route host.
    programmatic: bool = False
    #: The client the user signed in through (see :mod:`.clients`).
    idp_id: str = DEFAULT_IDP_ID


class Authenticator:
    """Sign-in, callback, refresh and sign-out for one IdP."""

    def __init__(
        self,
        relying_party: RelyingParty,
        states: StateCodec,
        signer: RedirectSigner,
        allowed_hosts: Callable[[], Iterable[str]],
        programmatic_hosts: Iterable[str] = ("localhost",),
        client_ids: ClientIds | None = None,
        make_party: Callable[[ClientConfig], RelyingParty] | None = None,
    ) -> None:
        """``allowed_hosts`` returns the current route hosts plus the authenticate host
        (a callable, so a config reload is seen without rebuilding this object);
        ``programmatic_hosts`` is ``programmatic_redirect_domain_whitelist``;
        ``client_ids`` knows the per-route clients (none: only ``relying_party``'s) and
        ``make_party`` makes a relying party for one of them."""
        self.relying_party = relying_party
        self.client_ids = client_ids
        self._parties: dict[str, RelyingParty] = {DEFAULT_IDP_ID: relying_party}
        self._make_party = make_party
        self.states = states
        self.signer = signer
        self._allowed_hosts = allowed_hosts
        self._programmatic_hosts = tuple(programmatic_hosts)

    def route_idp_id(self, route: RouteClient) -> str:
        """The IdP id of a route's client (``RouteOptions``); ``""`` for the global one."""
        if self.client_ids is None:
            return DEFAULT_IDP_ID
        return self.client_ids.for_route(route)

    def knows(self, idp_id: str) -> bool:
        return idp_id in self._parties or (
            self.client_ids is not None and idp_id in self.client_ids.clients
        )

    def relying_party_for(self, idp_id: str) -> RelyingParty:
        """The relying party of client ``idp_id`` (made on first use; they share discovery
        and the HTTP client, as they are clients of one IdP).

        Raises:
            TokenRequestRejected: no such client (any more): sign in again.
        """
        party = self._parties.get(idp_id)
        if party is not None:
            return party
        client = self.client_ids.clients.get(idp_id) if self.client_ids is not None else None
        if client is None or self._make_party is None:
            raise TokenRequestRejected("no such identity-provider client (config changed)")
        config = replace(self.relying_party.config, client_id=client[0], client_secret=client[1])
        party = self._make_party(config)
        self._parties[idp_id] = party
        return party

    def check_redirect(self, url: str, programmatic: bool = False) -> str:
        """``url`` if it is an allowed redirect target (for a programmatic login: an
        allowed loopback target), else :class:`InvalidRedirect`."""
        if programmatic:
            if not is_allowed_programmatic_redirect(url, self._programmatic_hosts):
                raise InvalidRedirect("programmatic login target not allowed")
        elif not is_allowed_redirect(url, self._allowed_hosts()):
            raise InvalidRedirect("redirect target not allowed")
        return url

    async def sign_in(self, request_url: str, csrf_cookie: str | None) -> SignInStart:
        """Handle ``/.pomerium/sign_in``: the URL must be signed and name an allowed target.

        Raises:
            InvalidRedirect: unsigned, expired or tampered URL, or a target not allowed.
            IdpUnavailable: discovery failed.
        """
        params = self.signer.verify(request_url)
        return await self.begin(
            params.get(QUERY_REDIRECT_URI, ""),
            csrf_cookie,
            binding=params.get(QUERY_BINDING, ""),
            programmatic=params.get(QUERY_PROGRAMMATIC) == "1",
            idp_id=params.get(QUERY_IDP_ID, DEFAULT_IDP_ID),
        )

    async def begin(
        self,
        redirect_url: str,
        csrf_cookie: str | None,
        *,
        binding: str = "",
        programmatic: bool = False,
        idp_id: str = DEFAULT_IDP_ID,
    ) -> SignInStart:
        """Start a sign-in that will return to ``redirect_url`` (checked against the allow
        list); ``binding`` is carried to the hand-off (see :mod:`.binding`), ``idp_id``
        names the client to sign in through (see :mod:`.clients`).

        Raises:
            InvalidRedirect: a target not allowed, or a client not configured.
        """
        self.check_redirect(redirect_url, programmatic)
        if not self.knows(idp_id):
            raise InvalidRedirect("sign-in names an identity-provider client not configured")
        party = self.relying_party_for(idp_id)
        txn, state, csrf_value = self.states.begin(
            redirect_url, csrf_cookie, binding=binding, programmatic=programmatic, idp_id=idp_id
        )
        url = await party.authorization_url(
            state=state, nonce=txn.nonce, code_challenge=txn.code_challenge
        )
        return SignInStart(url, csrf_value, int(DEFAULT_STATE_TTL_S))

    async def callback(
        self, params: Mapping[str, str], csrf_cookie: str | None, consume_once: ConsumeOnce
    ) -> SignInResult:
        """Handle ``/oauth2/callback``.

        Order matters: the state is authenticated and bound to this browser, then spent,
        before the IdP's answer is looked at, so a replayed or forged callback never
        reaches the token endpoint.

        Raises:
            InvalidState: state tampered, expired, replayed, or from another browser.
            AuthorizationDenied: the IdP said no (``?error=``).
            TokenRequestRejected: the code was refused (reused, expired).
            InvalidIdToken: the ID token failed validation.
            IdpUnavailable: the IdP could not be reached.
        """
        txn = self.states.open(params.get("state", ""), csrf_cookie)
        await consume(self.states, txn, consume_once)
        # The client the sign-in began with: its secret redeems the code, its id is the
        # ID token's required audience.
        party = self.relying_party_for(txn.idp_id)
        meta = await party.metadata()
        code, _ = parse_callback(params, meta)
        identity = await party.redeem_code(code, code_verifier=txn.code_verifier, nonce=txn.nonce)
        # Checked again: the allow list may have changed since sign-in began.
        return SignInResult(
            identity,
            self.check_redirect(txn.redirect_url, txn.programmatic),
            txn.binding,
            txn.programmatic,
            txn.idp_id,
        )

    async def refresh(self, session: Session) -> Identity:
        """New tokens and claims for a session (see :meth:`RelyingParty.refresh`)."""
        return await self.relying_party_for(session.idp_id).refresh(session)

    async def sign_out(
        self, session: Session | None, post_logout_redirect_uri: str, state: str = ""
    ) -> str | None:
        """Revoke the session's refresh token and return the IdP's end-session URL.

        The caller deletes the session and clears cookies whatever happens here: a
        revocation that fails (IdP down) is logged, never a reason to keep anyone signed
        in. ``None`` means the IdP has no logout endpoint: go to ``post_logout_redirect_uri``.
        """
        party = self.relying_party
        if session is not None and self.knows(session.idp_id):
            party = self.relying_party_for(session.idp_id)
        if session is not None and session.refresh_token:
            try:
                await party.revoke(session.refresh_token, "refresh_token")
            except IdpUnavailable as exc:
                log.warning("sign-out: refresh token revocation failed: %s", exc)
        try:
            return await party.end_session_url(
                id_token_hint=session.id_token if session is not None else "",
                post_logout_redirect_uri=post_logout_redirect_uri,
                state=state,
            )
        except IdpUnavailable as exc:
            log.warning("sign-out: no IdP end-session URL: %s", exc)
            return None


def build_authenticator(
    options: Options,
    *,
    shared_secret: bytes,
    client: httpx.AsyncClient,
    allowed_hosts: Callable[[], Iterable[str]] | None = None,
) -> Authenticator:
    """An :class:`Authenticator` for ``options`` (``idp_*``, ``authenticate_*`` keys).

    ``shared_secret`` is the decoded ``shared_secret`` (at least 32 bytes). ``client``
    comes from :func:`new_http_client`; the caller closes it on shutdown.
    """
    quirks = quirks_for(options.idp_provider)
    provider_url = options.idp_provider_url or quirks.default_url
    if not provider_url or not options.authenticate_service_url:
        raise ValueError("idp_provider_url and authenticate_service_url are required")
    redirect_uri = options.authenticate_service_url.rstrip("/") + options.authenticate_callback_path
    config = ClientConfig.from_options(options, redirect_uri)
    discovery = Discovery(provider_url, quirks, client)
    client_ids = ClientIds(shared_secret, config.client_id, config.client_secret)
    client_ids.register(r for r in options.all_routes)
    if allowed_hosts is None:
        hosts = allowed_redirect_hosts(options)
        allowed_hosts = lambda: hosts  # noqa: E731 - a constant list for a fixed config
    return Authenticator(
        RelyingParty(config, discovery, client),
        StateCodec(shared_secret),
        RedirectSigner(shared_secret),
        allowed_hosts,
        options.programmatic_redirect_domain_whitelist,
        client_ids,
        lambda cfg: RelyingParty(cfg, discovery, client),
    )


def allowed_redirect_hosts(options: Options) -> list[str]:
    """Every route's ``from`` host (wildcards included) and the authenticate host."""
    hosts = [urlsplit(r.from_).hostname or "" for r in options.all_routes]
    if options.authenticate_service_url:
        hosts.append(urlsplit(options.authenticate_service_url).hostname or "")
    return [h for h in hosts if h]


__all__ = [
    "Authenticator",
    "SignInResult",
    "SignInStart",
    "allowed_redirect_hosts",
    "build_authenticator",
]
