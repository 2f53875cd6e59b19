"""The sign-in, hand-off, user-info and sign-out endpoints (Pomerium's paths).

Authenticate host (``authenticate_service_url``)::

    GET  /.pomerium/sign_in      signed URL → IdP (or straight back when already signed in here)
    GET  /oauth2/callback        IdP → new session → hand-off to the route host
    GET  /.pomerium/signed_out   the page after sign-out; clears this host's cookie

Every route host::

    GET  /.pomerium/callback/    redeem the single-use hand-off, set this host's cookie
    GET  /.pomerium/             who am I (HTML), with a sign-out button
    GET  /.pomerium/user         who am I (JSON)
    POST /.pomerium/sign_out     (form with a CSRF token) or GET with a signed URL
    GET  /.pomerium/api/v1/login programmatic login for command-line tools

Theory of operation: the authenticate host is the only one that talks to the IdP. A route
host sending a browser to sign in sets a sign-in binding cookie (:mod:`.binding`) whose
hash goes into the signed sign-in URL. After the callback the authenticate host creates
the session and sends the browser to the route host with an encrypted, single-use,
60-second hand-off token bound to that host and to that hash; the route host sets its own
cookie only for the browser holding the binding cookie. No cookie is ever shared across
domains, and a user signed in once is sent straight back by ``sign_in`` for the next route
host. A programmatic login never sets a route-host cookie: the authenticate host mints
the token and redirects straight to the loopback target.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from urllib.parse import quote, urlencode, urlsplit

from ..config.options import Options
from ..constants import (
    PROGRAMMATIC_LOGIN_PATH,
    ROUTE_CALLBACK_PATH,
    SIGN_IN_PATH,
    SIGN_OUT_PATH,
    SIGNED_OUT_PATH,
    USER_INFO_PATH,
    USER_JSON_PATH,
)
from ..errors import BadRequest, Unauthenticated
from ..http.messages import Request, Response
from ..pages import render
from ..pages.values import shown_claims, shown_list, shown_time
from ..sessions.manager import SessionManager
from ..sessions.model import Session
from .binding import (
    BINDING_COOKIE_MAX_AGE_S,
    QUERY_BINDING,
    binding_cookie_name,
    binding_hash,
    binding_value,
    is_binding_hash,
)
from .clients import DEFAULT_IDP_ID, QUERY_IDP_ID, RouteClient
from .errors import InvalidRedirect
from .flow import Authenticator
from .keys import derive_key
from .query import query_string
from .redirects import (
    QUERY_PROGRAMMATIC,
    QUERY_REDIRECT_URI,
    RedirectSigner,
    is_allowed_programmatic_redirect,
)
from .state import csrf_cookie_name

log = logging.getLogger("gatehouse.authenticate")

QUERY_HANDOFF = "pomerium_handoff"
#: A route host's step of a ``depends_on`` sign-in: sign in here (if not yet), then on to
#: the next host, and at the end to ``pomerium_redirect_uri``.
DEPENDS_ON_PATH = "/.pomerium/depends_on"
QUERY_JWT = "pomerium_jwt"
#: The signed-out page's return ticket (OpenID RP-Initiated Logout ``state``).
QUERY_STATE = "state"
#: The binding of programmatic tokens (``Authorization: Pomerium …``): not a real host,
#: so such a token is never accepted as a cookie and no cookie as such a token.
PROGRAMMATIC_BINDING = "programmatic.gatehouse.invalid"

Endpoint = Callable[[Request], "Response"]


def _origin(scheme: str, request: Request) -> str:
    default = 443 if scheme == "https" else 80
    port = "" if request.port in (None, default) else f":{request.port}"
    return f"{scheme}://{request.host}{port}"


class AuthEndpoints:
    """Handlers for one config; ``scheme_for`` maps a host and port to the scheme its users see."""

    def __init__(
        self,
        options: Options,
        sessions: SessionManager,
        authenticator: Authenticator | None,
        signer: RedirectSigner,
        shared_secret: bytes,
        scheme_for: Callable[[str, int | None], str],
        forget_assertions: Callable[[str], None] = lambda session_id: None,
        on_session_event: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.sessions = sessions
        self.auth = authenticator
        self.signer = signer
        self._csrf_key = derive_key(shared_secret, "gatehouse sign-out form")
        self._return_key = derive_key(shared_secret, "gatehouse sign-in again")
        self._scheme_for = scheme_for
        self._forget_assertions = forget_assertions
        self._on_session_event = on_session_event
        url = options.authenticate_service_url
        self.authenticate_url = url.rstrip("/") if url else None
        self.authenticate_host = (urlsplit(url).hostname or "").lower() if url else None
        self.cookie_name = options.cookie_name
        self.csrf_cookie = csrf_cookie_name(options.cookie_name)
        self._host_idp: dict[str, str] | None = None
        self._host_depends: dict[str, list[str]] | None = None

    # -- tables -------------------------------------------------------------------------

    def authenticate_routes(self) -> dict[str, Callable[[Request], object]]:
        return {
            SIGN_IN_PATH: self.sign_in,
            self.options.authenticate_callback_path: self.oauth_callback,
            SIGN_OUT_PATH: self.sign_out,
            SIGNED_OUT_PATH: self.signed_out,
        }

    def route_host_routes(self) -> dict[str, Callable[[Request], object]]:
        return {
            ROUTE_CALLBACK_PATH: self.route_callback,
            USER_INFO_PATH: self.user_page,
            USER_JSON_PATH: self.user_json,
            SIGN_OUT_PATH: self.sign_out,
            PROGRAMMATIC_LOGIN_PATH: self.programmatic_login,
            DEPENDS_ON_PATH: self.depends_on_step,
        }

    # -- used by the pipeline and the routes portal ---------------------------------------

    async def request_session(self, request: Request) -> Session | None:
        """The session ``request`` carries (cookie or programmatic token), if any."""
        return await self._current(request)

    def sign_in_or_401(self, request: Request) -> Response:
        """A browser is sent to sign in and back; any other client gets 401."""
        return self._login_or_401(request)

    def route_idp_id(self, route: RouteClient) -> str:
        """The IdP id of a route's client (``RouteOptions``; see :mod:`.clients`)."""
        return DEFAULT_IDP_ID if self.auth is None else self.auth.route_idp_id(route)

    def session_fits(self, session: Session, route: RouteClient) -> bool:
        """A session is accepted on a route only if made through the route's client."""
        return session.idp_id == self.route_idp_id(route)

    def host_idp_id(self, host: str) -> str:
        """The client of the first route on exactly ``host`` (for the ``/.pomerium/``
        pages and programmatic login, which belong to a host, not a route)."""
        if self._host_idp is None:
            table: dict[str, str] = {}
            for route in self.options.all_routes:
                name = (urlsplit(route.from_).hostname or "").lower()
                if name and name not in table:
                    table[name] = self.route_idp_id(route)
            self._host_idp = table
        return self._host_idp.get(host.lower(), DEFAULT_IDP_ID)

    def binding_cookie(self, scheme: str) -> str:
        """The name of the sign-in binding cookie on a route host served over ``scheme``."""
        return binding_cookie_name(self.cookie_name, self._secure_scheme(scheme))

    def sign_in_redirect(
        self,
        original_url: str,
        scheme: str,
        binding_cookie: str | None,
        idp_id: str = DEFAULT_IDP_ID,
        depends_on: Sequence[str] = (),
    ) -> tuple[str, list[tuple[str, str]]] | None:
        """Where to send a browser that needs to sign in, and the ``Set-Cookie`` header
        binding the sign-in to it (``None``: no IdP configured).

        ``binding_cookie`` is the browser's current binding cookie (reused when well
        formed, so sign-ins started in two tabs both complete); ``idp_id`` names the
        route's client (signed into the URL, as Pomerium's ``pomerium_idp_id``); with
        ``depends_on`` the sign-in returns through :meth:`depends_on_step`."""
        if self.auth is None or self.authenticate_url is None:
            return None
        if depends_on:
            original_url = self._chain_url(original_url, original_url)
        secure = self._secure_scheme(scheme)
        value = binding_value(binding_cookie)
        extra = [(QUERY_BINDING, binding_hash(value) or "")]
        if idp_id:
            extra.append((QUERY_IDP_ID, idp_id))
        url = self.signer.sign_in_url(self.authenticate_url, original_url, extra=extra)
        carrier = Response.redirect(url)
        carrier.set_cookie(
            binding_cookie_name(self.cookie_name, secure),
            value,
            max_age=BINDING_COOKIE_MAX_AGE_S,
            secure=secure,
            http_only=True,
            same_site="Lax",
        )
        return url, [h for h in carrier.headers if h[0] == "Set-Cookie"]

    def session_cached(
        self, request_cookie: str | None, authorization: str | None, host: str
    ) -> tuple[bool, Session | None]:
        """:meth:`session_for` when the answer needs no store read: ``(True, session or
        None)``; ``(False, None)`` when it does (then await :meth:`session_for`)."""
        if authorization and _programmatic_token(authorization) is not None:
            return False, None
        if request_cookie:
            return self.sessions.load_cached(request_cookie, host)
        return True, None

    async def session_for(
        self, request_cookie: str | None, authorization: str | None, host: str
    ) -> Session | None:
        """The session a request carries: its cookie, or ``Authorization: Pomerium <token>``."""
        if authorization:
            token = _programmatic_token(authorization)
            if token is not None:
                return await self.sessions.load(token, PROGRAMMATIC_BINDING)
        if request_cookie:
            return await self.sessions.load(request_cookie, host)
        return None

    async def refresh(self, session: Session) -> Session:
        """The refresher the session manager calls (new tokens, same session)."""
        if self.auth is None:
            return session
        identity = await self.auth.refresh(session)
        self._event("refreshed")
        return replace(
            session,
            email=identity.email or session.email,
            name=identity.name or session.name,
            groups=identity.groups,
            claims=identity.claims,
            id_token=identity.id_token or session.id_token,
            access_token=identity.access_token,
            refresh_token=identity.refresh_token or session.refresh_token,
            tokens_expire_at=identity.tokens_expire_at,
            last_refresh_at=time.time(),
        )

    # -- authenticate host ----------------------------------------------------------------

    async def sign_in(self, request: Request) -> Response:
        auth = self._require_auth()
        url = self._authenticate_request_url(request)
        params = self.signer.verify(url)
        programmatic = params.get(QUERY_PROGRAMMATIC) == "1"
        target = auth.check_redirect(params.get(QUERY_REDIRECT_URI, ""), programmatic)
        binding = params.get(QUERY_BINDING, "")
        if not programmatic:
            self._check_binding(target, binding)
        idp_id = params.get(QUERY_IDP_ID, DEFAULT_IDP_ID)
        # Already signed in on the authenticate host through the same client: hand the
        # session over directly. Another client's session would only be refused by the
        # route (Pomerium: a new sign-in when the handle's IdP id differs).
        existing = await self.session_for(
            request.cookies().get(self.cookie_name), None, request.host
        )
        if existing is not None and existing.idp_id == idp_id:
            if programmatic:
                return self._programmatic_redirect(existing, target)
            return self._handoff(existing, target, binding)
        # The URL's signature was checked above: begin from its parameters, not again.
        start = await auth.begin(
            target,
            request.cookies().get(self.csrf_cookie),
            binding=binding,
            programmatic=programmatic,
            idp_id=idp_id,
        )
        response = Response.redirect(start.authorization_url)
        response.set_cookie(
            self.csrf_cookie,
            start.csrf_cookie_value,
            max_age=start.csrf_cookie_max_age_s,
            secure=self._secure(request),
            same_site="Lax",
        )
        return response

    async def oauth_callback(self, request: Request) -> Response:
        auth = self._require_auth()
        done = await auth.callback(
            request.query_params(),
            request.cookies().get(self.csrf_cookie),
            self.sessions.consume_once,
        )
        ident = done.identity
        session = await self.sessions.create(
            user_id=ident.user_id,
            email=ident.email,
            name=ident.name,
            groups=ident.groups,
            claims=ident.claims,
            id_token=ident.id_token,
            access_token=ident.access_token,
            refresh_token=ident.refresh_token,
            tokens_expire_at=ident.tokens_expire_at,
            idp_id=done.idp_id,
        )
        log.info("signed in", extra={"user": ident.user_id, "email": ident.email})
        self._event("created")
        if done.programmatic:
            response = self._programmatic_redirect(session, done.redirect_url)
        else:
            response = self._handoff(session, done.redirect_url, done.binding)
        self._set_session_cookie(response, request, session)
        response.set_cookie(self.csrf_cookie, "", max_age=0, secure=self._secure(request))
        return response

    async def signed_out(self, request: Request) -> Response:
        back = self._returned(request.query_params().get(QUERY_STATE, ""))
        target = self.options.signout_redirect_url
        if back is not None and back[1]:
            response = Response.redirect(back[0])  # "sign in as someone else": sign in now
        elif target:
            response = Response.redirect(target)
        else:
            page = render("signed_out.html", sign_in_url=back[0] if back else None)
            response = Response.html(page, headers=[("Cache-Control", "no-store")])
        self._clear_session_cookie(response, request)
        return response

    # -- route hosts ------------------------------------------------------------------------

    async def route_callback(self, request: Request) -> Response:
        params = request.query_params()
        scheme = self._scheme_for(request.host, request.port)
        binding = binding_hash(request.cookies().get(self.binding_cookie(scheme)))
        if binding is None:
            return self._refuse_handoff(request, "no sign-in binding cookie in this browser")
        session = await self.sessions.redeem_handoff(
            params.get(QUERY_HANDOFF, ""), request.host, binding
        )
        if session is None:
            return self._refuse_handoff(
                request, "invalid, expired, already used, or started in another browser"
            )
        target = params.get(QUERY_REDIRECT_URI, "/")
        parts = urlsplit(target)
        if (
            parts.hostname is None
            or parts.hostname.lower() != request.host
            or parts.scheme not in ("http", "https")
        ):
            target = "/"
        response = Response.redirect(target)
        self._set_session_cookie(response, request, session)
        return response

    async def user_page(self, request: Request) -> Response:
        session = await self._current(request)
        if session is None:
            return self._login_or_401(request)
        now = time.time()
        return Response.html(
            render(
                "user.html",
                session=session,
                groups=shown_list(session.groups),
                claims=shown_claims(session.claims, now),
                created=shown_time(session.issued_at, now) if session.issued_at else None,
                expires=shown_time(session.expires_at, now),
                csrf=self._csrf_token(session),
                sign_out_path=SIGN_OUT_PATH,
            ),
            headers=[("Cache-Control", "no-store")],
        )

    async def user_json(self, request: Request) -> Response:
        session = await self._current(request)
        if session is None:
            raise Unauthenticated("no session")
        # Pomerium's shape: the assertion's payload without the claims about the JWT itself
        # (iss, aud, exp, iat, jti), so the user's claims plus those jwt_claims_headers names.
        body: dict[str, object] = {
            "sub": session.user_id,
            "user": session.user_id,
            "email": session.email,
            "name": session.name,
            "groups": list(session.groups),
            "sid": session.id,
        }
        for claim in self.options.jwt_claims_headers.values():
            if claim not in body and session.claims.get(claim) is not None:
                body[claim] = session.claims[claim]
        return Response.json(body, headers=[("Cache-Control", "no-store")])

    async def sign_out(self, request: Request) -> Response:
        session = await self._current(request)
        switch = False
        if request.method == "POST":
            form = request.form()
            expected = self._csrf_token(session) if session is not None else None
            if expected is None or not hmac.compare_digest(form.get("csrf", ""), expected):
                raise BadRequest("sign-out without a valid CSRF token")
            switch = form.get("then") == "sign_in"
        elif request.method in ("GET", "HEAD") and not request.query:
            # A plain link (Grafana's GF_AUTH_SIGNOUT_REDIRECT_URL, Pomerium's guides): ask
            # first. A GET never signs out on its own, so no other site can do it with a link.
            return self._confirm_sign_out(request, session)
        elif request.method in ("GET", "HEAD"):
            try:
                self.signer.verify(self._request_url(request))
            except InvalidRedirect:
                raise BadRequest("sign-out link invalid or expired") from None
        else:
            raise BadRequest("sign-out needs POST or a signed GET")
        end_url: str | None = None
        # Where "sign in again" leads: this host's start page (a route host's, signed so
        # that the signed-out page links nowhere else).
        state = self._return_state(request, switch)
        if session is not None:
            # The store first: if it is down the user gets a 503 and stays signed in
            # everywhere, rather than signed out at the IdP but not here.
            await self.sessions.revoke(session.id)
            self._forget_assertions(session.id)
            self._event("revoked")
            log.info("signed out", extra={"user": session.user_id})
            if self.auth is not None and self.authenticate_url is not None:
                # OpenID RP-Initiated Logout §2: the IdP passes `state` back unchanged.
                end_url = await self.auth.sign_out(
                    session, self.authenticate_url + SIGNED_OUT_PATH, state=state
                )
        if end_url is None:
            if self.authenticate_url is not None:
                end_url = self.authenticate_url + SIGNED_OUT_PATH
                end_url += "?" + urlencode({QUERY_STATE: state}) if state else ""
            else:
                end_url = self.options.signout_redirect_url or SIGNED_OUT_PATH
        response = Response.redirect(end_url, 303)
        self._clear_session_cookie(response, request)
        return response

    async def programmatic_login(self, request: Request) -> Response:
        target = request.query_params().get(QUERY_REDIRECT_URI, "")
        if not is_allowed_programmatic_redirect(
            target, self.options.programmatic_redirect_domain_whitelist
        ):
            raise BadRequest("programmatic login needs a loopback pomerium_redirect_uri")
        if self.auth is None or self.authenticate_url is None:
            raise Unauthenticated("sign-in is not configured")
        # The authenticate host mints the token and redirects to the loopback target
        # itself: no route-host cookie is involved, so nothing here can be forced into
        # another browser.
        extra = [(QUERY_PROGRAMMATIC, "1")]
        idp_id = self.host_idp_id(request.host)
        if idp_id:
            extra.append((QUERY_IDP_ID, idp_id))
        url = self.signer.sign_in_url(self.authenticate_url, target, extra=extra)
        return Response.text(url, headers=[("Cache-Control", "no-store")])

    async def depends_on_step(self, request: Request) -> Response:
        """One host of a ``depends_on`` sign-in (Pomerium chains its route callbacks).

        Each host signs in the usual way: its own binding cookie, the authenticate host's
        session handed over without the IdP, a hand-off only this browser redeems. Nothing
        here is signed because nothing needs to be: the hosts come from the config of the
        route on ``pomerium_redirect_uri``'s host, and that URL passes the same allow list
        as any sign-in target; walking a browser through it signs it in only as itself.
        """
        final = request.query_params().get(QUERY_REDIRECT_URI, "")
        parts = urlsplit(final)
        origin = (parts.hostname or "").lower()
        if self.auth is None or parts.scheme not in ("http", "https") or not origin:
            raise BadRequest("depends_on step without a valid pomerium_redirect_uri")
        self.auth.check_redirect(final)
        hosts = self.host_depends_on(origin)
        names = [(urlsplit("//" + h).hostname or "") for h in hosts]
        here = request.host.lower()
        if here != origin and here not in names:
            raise BadRequest("depends_on step on a host the route does not name")
        session = await self._current(request)
        if session is None or session.idp_id != self.host_idp_id(here):
            return self._login_or_401(request)
        position = -1 if here == origin else names.index(here)
        for host, name in zip(hosts[position + 1 :], names[position + 1 :], strict=True):
            if name != origin:
                scheme = self._scheme_for(name, urlsplit("//" + host).port)
                return Response.redirect(self._chain_url(f"{scheme}://{host}/", final))
        return Response.redirect(final)

    def host_depends_on(self, host: str) -> list[str]:
        """``depends_on`` of the first route on exactly ``host`` that has one."""
        if self._host_depends is None:
            table: dict[str, list[str]] = {}
            for route in self.options.all_routes:
                name = (urlsplit(route.from_).hostname or "").lower()
                if name and route.depends_on and name not in table:
                    table[name] = list(dict.fromkeys(route.depends_on))
            self._host_depends = table
        return self._host_depends.get(host.lower(), [])

    def _chain_url(self, on: str, final: str) -> str:
        """The :meth:`depends_on_step` URL on ``on``'s origin, finishing at ``final``."""
        parts = urlsplit(on)
        query = urlencode({QUERY_REDIRECT_URI: final}, quote_via=quote)
        return f"{parts.scheme}://{parts.netloc}{DEPENDS_ON_PATH}?{query}"

    def _event(self, event: str) -> None:
        if self._on_session_event is not None:
            self._on_session_event(event)

    # -- helpers ------------------------------------------------------------------------------

    def _require_auth(self) -> Authenticator:
        if self.auth is None:
            raise Unauthenticated("sign-in is not configured (no idp_provider)")
        return self.auth

    async def _current(self, request: Request) -> Session | None:
        return await self.session_for(
            request.cookies().get(self.cookie_name),
            request.headers.get("authorization"),
            request.host,
        )

    def _check_binding(self, target: str, binding: str) -> None:
        """A hand-off to a route host needs the binding of the browser that asked."""
        host = (urlsplit(target).hostname or "").lower()
        if host != self.authenticate_host and not is_binding_hash(binding):
            raise BadRequest("sign-in link without a browser binding")

    def _handoff(self, session: Session, target: str, binding: str) -> Response:
        host = (urlsplit(target).hostname or "").lower()
        scheme = urlsplit(target).scheme or "https"
        netloc = urlsplit(target).netloc
        if host == self.authenticate_host:
            return Response.redirect(target)
        self._check_binding(target, binding)
        token = self.sessions.issue_handoff(session.id, host, binding)
        query = query_string([(QUERY_HANDOFF, token), (QUERY_REDIRECT_URI, target)])
        return Response.redirect(f"{scheme}://{netloc}{ROUTE_CALLBACK_PATH}?{query}")

    def _programmatic_redirect(self, session: Session, target: str) -> Response:
        """Send a programmatic login's token to its loopback target (checked again here)."""
        if not is_allowed_programmatic_redirect(
            target, self.options.programmatic_redirect_domain_whitelist
        ):
            raise BadRequest("programmatic login target not allowed")
        token = self.sessions.cookie_value(session, PROGRAMMATIC_BINDING)
        sep = "&" if "?" in target else "?"
        return Response.redirect(f"{target}{sep}{urlencode({QUERY_JWT: token})}")

    def _confirm_sign_out(self, request: Request, session: Session | None) -> Response:
        """The page a plain ``GET /.pomerium/sign_out`` gets: a button that signs out."""
        if session is None:
            page = render("signed_out.html", sign_in_url=None)
            return Response.html(page, headers=[("Cache-Control", "no-store")])
        page = render(
            "sign_out.html",
            user=session.email or session.user_id,
            csrf=self._csrf_token(session),
            sign_out_path=SIGN_OUT_PATH,
            user_info_path=USER_INFO_PATH,
        )
        return Response.html(page, headers=[("Cache-Control", "no-store")])

    def _return_state(self, request: Request, switch: bool) -> str:
        """``state`` naming this route host's start page, MACed; empty on the
        authenticate host (nothing to return to there)."""
        if self.authenticate_host is not None and request.host == self.authenticate_host:
            return ""
        back = _origin(self._scheme_for(request.host, request.port), request) + "/"
        body = ("s" if switch else "n") + back
        mac = hmac.new(self._return_key, body.encode(), hashlib.sha256).hexdigest()[:32]
        return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=") + "." + mac

    def _returned(self, state: str) -> tuple[str, bool] | None:
        """The start page and the switch flag from a ``state`` of :meth:`_return_state`."""
        encoded, _, mac = state.partition(".")
        if not encoded or len(state) > 1024:
            return None
        try:
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except ValueError:
            return None
        expected = hmac.new(self._return_key, body.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, expected) or body[:1] not in ("s", "n"):
            return None
        return body[1:], body[0] == "s"

    def _refuse_handoff(self, request: Request, reason: str) -> Response:
        """A 400 page for a hand-off this browser may not redeem; its cookies stay as
        they are."""
        log.warning("sign-in hand-off refused: %s", reason, extra={"host": request.host})
        page = render(
            "error.html",
            status=400,
            title="Sign-in link not valid here",
            message=(
                "This sign-in link was not started in this browser, has expired, or was "
                "already used. Open the application again to sign in."
            ),
            details=[],
        )
        return Response.html(page, 400, [("Cache-Control", "no-store")])

    def _login_or_401(self, request: Request) -> Response:
        scheme = self._scheme_for(request.host, request.port)
        redirect = (
            self.sign_in_redirect(
                self._request_url(request),
                scheme,
                request.cookies().get(self.binding_cookie(scheme)),
                self.host_idp_id(request.host),
            )
            if request.accepts_html()
            else None
        )
        if redirect is None:
            raise Unauthenticated("no session")
        url, cookies = redirect
        return Response.redirect(url, headers=cookies)

    def _secure(self, request: Request) -> bool:
        return self._secure_scheme(self._scheme_for(request.host, request.port))

    def _secure_scheme(self, scheme: str) -> bool:
        return self.options.cookie_secure and scheme == "https"

    def _set_session_cookie(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            self.cookie_name,
            self.sessions.cookie_value(session, request.host),
            max_age=self.sessions.cookie_max_age(session),
            domain=self.options.cookie_domain,
            secure=self._secure(request),
            http_only=self.options.cookie_http_only,
            same_site=self.options.cookie_same_site.capitalize(),
        )

    def _clear_session_cookie(self, response: Response, request: Request) -> None:
        response.set_cookie(
            self.cookie_name,
            "",
            max_age=0,
            domain=self.options.cookie_domain,
            secure=self._secure(request),
            http_only=self.options.cookie_http_only,
            same_site=self.options.cookie_same_site.capitalize(),
        )

    def _csrf_token(self, session: Session) -> str:
        return self.csrf_for(session.id)

    def csrf_for(self, session_id: str) -> str:
        """The sign-out form's CSRF token for session ``session_id`` (for error pages)."""
        return hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).hexdigest()

    def _request_url(self, request: Request) -> str:
        """The URL as the user's browser addressed it (scheme from the route's ``from``)."""
        origin = _origin(self._scheme_for(request.host, request.port), request)
        return origin + request.path + (f"?{request.query}" if request.query else "")

    def _authenticate_request_url(self, request: Request) -> str:
        # Signed sign-in URLs are made from authenticate_service_url: rebuild from it so a
        # TLS terminator in front (insecure_server) does not change the scheme.
        base = self.authenticate_url or _origin(request.scheme, request)
        return base + request.path + (f"?{request.query}" if request.query else "")


def _programmatic_token(authorization: str) -> str | None:
    """``Pomerium <token>`` or ``Bearer Pomerium-<token>`` (Pomerium's two forms)."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "pomerium" and value:
        return value.strip()
    if scheme.lower() == "bearer" and value.startswith("Pomerium-"):
        return value[len("Pomerium-") :].strip()
    return None
