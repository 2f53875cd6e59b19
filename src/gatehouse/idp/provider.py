"""The built-in OpenID provider: configuration, routes, and the browser-facing endpoints.

Served on gatehouse's authenticate host under :data:`DEFAULT_BASE_PATH`; the issuer URL
includes that path, so discovery is at ``{issuer}/.well-known/openid-configuration``
(OpenID Connect Discovery §4). :meth:`BuiltinProvider.routes` maps each full path to an
``async def handler(request: Request) -> Response``.

Browser flow (OpenID Connect Core §3.1, RFC 7636 PKCE S256 required):

    GET  authorize   client_id + exact redirect_uri checked first (else an error page,
                     never a redirect); then the request; a live IdP session issues a
                     code at once, otherwise the request is parked under a random ``tx``
                     and the sign-in page is shown
    POST sign_in     CSRF, throttle, password (argon2, constant-time), then the IdP
                     session cookie and a 303 to redirect_uri?code&state&iss
    GET/POST end_session
                     id_token_hint and registered post_logout_redirect_uri; without a
                     valid hint the user confirms with a CSRF-protected form

The back channel (token, userinfo, revocation) is in :mod:`.backchannel`. All state
lives in a :class:`~.store.StateStore`, so workers sharing the store, the signing key
and the browser secret act as one provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from urllib.parse import urlencode, urlsplit

from ..config.auth import IdpUser
from ..errors import GatehouseError
from ..http.messages import Request, Response
from .backchannel import BackChannel
from .browser import CSRF_COOKIE, SESSION_COOKIE, BrowserSession, BrowserState
from .clients import ClientRegistration
from .pages import error_page, page
from .passwords import dummy_hash_like, verify_password
from .store import MemoryStateStore, StateStore
from .throttle import LoginThrottle, ThrottlePolicy
from .tokens import Grant, IdpKey, PrivateKey, new_token, token_hash

log = logging.getLogger("gatehouse.idp")

Handler = Callable[[Request], Awaitable[Response]]

#: Where the IdP lives on the authenticate host (clear of /.pomerium/*, /oauth2/*,
#: /.well-known/pomerium*).
DEFAULT_BASE_PATH = "/.gatehouse/idp"
DISCOVERY_PATH = "/.well-known/openid-configuration"
AUTHORIZE_PATH = "/authorize"
SIGN_IN_PATH = "/sign_in"
TOKEN_PATH = "/token"  # noqa: S105 - a path, not a password
USERINFO_PATH = "/userinfo"
JWKS_PATH = "/jwks.json"
END_SESSION_PATH = "/end_session"
REVOKE_PATH = "/revoke"

SUPPORTED_SCOPES = ("openid", "profile", "email", "groups", "offline_access")
#: Longest ``state``/``nonce`` kept (characters): they are stored and echoed.
MAX_STATE_CHARS = 2048
#: Longest username or password read from the form (characters).
MAX_FIELD_CHARS = 1024
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class IdpSettings:
    """Lifetimes, in seconds (operator-tunable; defaults suit the embedded default)."""

    code_ttl_s: float = 60.0
    access_token_ttl_s: float = 3600.0
    id_token_ttl_s: float = 3600.0
    refresh_token_ttl_s: float = 14 * 24 * 3600.0
    #: How long the IdP's own browser session lasts (the user is not asked again).
    session_ttl_s: float = 12 * 3600.0
    #: How long a sign-in page may stay open before the form is refused.
    sign_in_ttl_s: float = 15 * 60.0


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """A validated authorization request, parked while the user signs in."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str | None
    nonce: str
    code_challenge: str

    def dumps(self) -> str:
        data = asdict(self)
        data["scope"] = list(self.scope)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> AuthRequest | None:
        try:
            data = json.loads(text)
            data["scope"] = tuple(data["scope"])
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None


class BuiltinProvider:
    """A small OpenID provider for the users in ``idp_users``."""

    def __init__(
        self,
        issuer: str,
        users: Sequence[IdpUser],
        clients: Sequence[ClientRegistration],
        signing_key: str | bytes | PrivateKey | None = None,
        *,
        secret: bytes | None = None,
        store: StateStore | None = None,
        throttle: ThrottlePolicy | None = None,
        settings: IdpSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        Args:
            issuer: ``scheme://host[:port]/base/path`` exactly as clients reach it, e.g.
                ``http://authenticate.localhost:8080/.gatehouse/idp``.
            users: who may sign in (``sub`` is the username).
            clients: registered relying parties.
            signing_key: PEM (or base64 PEM) or private key for ID tokens; ``None``
                generates one for this process only.
            secret: >= 32 bytes for the IdP cookie and CSRF keys; ``None`` is random
                per process. Workers must share ``signing_key``, ``secret`` and ``store``.
            store: shared state; default in-memory (one process).

        Raises:
            ValueError: malformed issuer, duplicate client ids or usernames.
            gatehouse.errors.ConfigError: unusable signing key.
        """
        parts = urlsplit(issuer)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"issuer {issuer!r} must be an http(s) URL without query/fragment")
        self.issuer = issuer.rstrip("/")
        self.base_path = parts.path.rstrip("/")
        self.host = parts.hostname.lower()
        self.secure_cookies = parts.scheme == "https"
        self.clock = clock
        self.settings = settings or IdpSettings()
        self.store = store or MemoryStateStore(clock=clock)
        self.key = IdpKey(signing_key)
        self.browser = BrowserState(secret or secrets.token_bytes(32))
        self.throttle = LoginThrottle(self.store, throttle, clock=clock)
        self.clients: dict[str, ClientRegistration] = {}
        for c in clients:
            if c.client_id in self.clients:
                raise ValueError(f"duplicate client_id {c.client_id!r}")
            self.clients[c.client_id] = c
        self.users: dict[str, IdpUser] = {}
        self._by_email: dict[str, IdpUser] = {}
        for u in users:
            if u.username in self.users:
                raise ValueError(f"duplicate idp_users username {u.username!r}")
            self.users[u.username] = u
            self._by_email.setdefault(u.email.lower(), u)
        self._dummy_hash = dummy_hash_like([u.password_hash for u in users])

    # -- URLs and routes -----------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.issuer + path

    def path(self, path: str) -> str:
        return self.base_path + path

    def routes(self) -> dict[str, Handler]:
        """Full request path → handler, for gatehouse's internal endpoint table."""
        # The back channel refers to the provider, not the other way round: a replaced
        # config's provider is then freed by reference counting (gcpause: frozen cycles
        # would never be collected).
        backchannel = BackChannel(self)
        table: dict[str, Handler] = {
            DISCOVERY_PATH: self.discovery,
            JWKS_PATH: self.jwks,
            AUTHORIZE_PATH: self.authorize,
            SIGN_IN_PATH: self.sign_in,
            END_SESSION_PATH: self.end_session,
            TOKEN_PATH: backchannel.token,
            USERINFO_PATH: backchannel.userinfo,
            REVOKE_PATH: backchannel.revoke,
        }
        return {self.path(p): self._guard(h) for p, h in table.items()}

    def _guard(self, handler: Handler) -> Handler:
        """Serve only on the issuer's host; unexpected errors become a bare 500."""

        async def guarded(request: Request) -> Response:
            if request.host != self.host:
                return Response.text("Not Found", 404)
            try:
                return await handler(request)
            except GatehouseError:
                raise
            except Exception:
                log.exception("IdP endpoint %s failed", request.path)
                return error_page(
                    500,
                    "Something went wrong",
                    "The sign-in service failed. The error has been logged.",
                )

        return guarded

    # -- users and sessions --------------------------------------------------------------
    def find_user(self, login: str) -> IdpUser | None:
        """A user by username, or by e-mail address (case-insensitive)."""
        return self.users.get(login) or self._by_email.get(login.lower())

    async def current_session(self, request: Request) -> BrowserSession | None:
        """The browser's live IdP session (cookie valid, sid not ended, user still there)."""
        session = self.browser.unseal(request.cookies().get(SESSION_COOKIE), self.clock())
        if session is None or session.sub not in self.users:
            return None
        if await self.store.get("sid:" + token_hash(session.sid)) != session.sub:
            return None
        return session

    def _set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.base_path or "/",
            secure=self.secure_cookies,
            http_only=True,
            same_site="Lax",
        )

    # -- discovery and keys --------------------------------------------------------------
    async def discovery(self, request: Request) -> Response:
        """OpenID Connect Discovery 1.0 §3 provider metadata."""
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed("GET")
        doc = {
            "issuer": self.issuer,
            "authorization_endpoint": self.url(AUTHORIZE_PATH),
            "token_endpoint": self.url(TOKEN_PATH),
            "userinfo_endpoint": self.url(USERINFO_PATH),
            "jwks_uri": self.url(JWKS_PATH),
            "end_session_endpoint": self.url(END_SESSION_PATH),
            "revocation_endpoint": self.url(REVOKE_PATH),
            "scopes_supported": list(SUPPORTED_SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.key.alg],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "azp",
                "at_hash",
                "sid",
                "email",
                "email_verified",
                "name",
                "preferred_username",
                "groups",
            ],
            "prompt_values_supported": ["none", "login"],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "authorization_response_iss_parameter_supported": True,
        }
        return Response.json(doc, headers=[("Cache-Control", "public, max-age=300")])

    async def jwks(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed("GET")
        return Response.json(self.key.jwks(), headers=[("Cache-Control", "public, max-age=300")])

    # -- authorization endpoint ----------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        """The authorization endpoint (OpenID Connect Core §3.1.2.1), GET only."""
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed("GET")
        params = request.query_params()
        client = self.clients.get(params.get("client_id", ""))
        if client is None:
            return error_page(
                400,
                "Unknown application",
                "The application that sent you here is not registered with this sign-in service.",
            )
        redirect_uri = params.get("redirect_uri", "")
        # RFC 6749 §3.1.2.4: never redirect to an unregistered URI; exact string match.
        if redirect_uri not in client.redirect_uris:
            return error_page(
                400,
                "Invalid redirect address",
                "The application asked to return to an address it has not "
                "registered. Sign-in was stopped.",
            )
        state = params.get("state")
        if state is not None and len(state) > MAX_STATE_CHARS:
            return self._error_redirect(redirect_uri, None, "invalid_request", "state too long")

        def fail(error: str, description: str) -> Response:
            return self._error_redirect(redirect_uri, state, error, description)

        if "request" in params or "request_uri" in params:
            return fail("request_not_supported", "request objects are not supported")
        if params.get("response_type") != "code":
            return fail("unsupported_response_type", "only response_type=code is supported")
        if params.get("response_mode", "query") != "query":
            return fail("invalid_request", "only response_mode=query is supported")
        requested = params.get("scope", "").split()
        if "openid" not in requested:
            return fail("invalid_scope", "the openid scope is required")
        # OpenID Connect Core §3.1.2.1: unknown scope values are ignored.
        scope = tuple(s for s in SUPPORTED_SCOPES if s in requested)
        challenge = params.get("code_challenge", "")
        if not challenge:
            return fail("invalid_request", "PKCE is required: code_challenge missing")
        if params.get("code_challenge_method") != "S256":
            return fail("invalid_request", "code_challenge_method must be S256")
        if not _CHALLENGE.fullmatch(challenge):
            return fail("invalid_request", "malformed code_challenge")
        nonce = params.get("nonce", "")
        if len(nonce) > MAX_STATE_CHARS:
            return fail("invalid_request", "nonce too long")
        prompt = set(params.get("prompt", "").split())
        if "none" in prompt and len(prompt) > 1:
            return fail("invalid_request", "prompt=none cannot be combined")
        max_age: int | None = None
        if "max_age" in params:
            try:
                max_age = int(params["max_age"])
            except ValueError:
                return fail("invalid_request", "max_age must be an integer")
            if max_age < 0:
                return fail("invalid_request", "max_age must not be negative")
        auth = AuthRequest(client.client_id, redirect_uri, scope, state, nonce, challenge)
        session = await self.current_session(request)
        now = self.clock()
        if (
            session is not None
            and "login" not in prompt
            and (max_age is None or now - session.auth_time <= max_age)
        ):
            return await self._issue_code(auth, session, 302)
        if "none" in prompt:
            return fail("login_required", "the user is not signed in")
        tx = new_token()
        await self.store.put("tx:" + token_hash(tx), auth.dumps(), self.settings.sign_in_ttl_s)
        return self._sign_in_page(request, tx, client)

    def _sign_in_page(
        self,
        request: Request,
        tx: str,
        client: ClientRegistration,
        *,
        error: str = "",
        username: str = "",
        status: int = 200,
        retry_after_s: int = 0,
    ) -> Response:
        csrf_cookie = request.cookies().get(CSRF_COOKIE) or ""
        fresh = len(csrf_cookie) < 32
        if fresh:
            csrf_cookie = self.browser.new_csrf_cookie()
        response = page(
            "signin.html",
            status,
            action=self.path(SIGN_IN_PATH),
            tx=tx,
            csrf_token=self.browser.csrf_token(csrf_cookie, "sign_in:" + tx),
            client_name=client.name or client.client_id,
            error=error,
            username=username,
        )
        if retry_after_s:
            response.headers.append(("Retry-After", str(retry_after_s)))
        if fresh:
            self._set_cookie(response, CSRF_COOKIE, csrf_cookie, int(self.settings.session_ttl_s))
        return response

    def _error_redirect(
        self, redirect_uri: str, state: str | None, error: str, description: str
    ) -> Response:
        """RFC 6749 §4.1.2.1 error response, with ``iss`` (RFC 9207)."""
        params = {"error": error, "error_description": description}
        if state is not None:
            params["state"] = state
        params["iss"] = self.issuer
        return Response.redirect(_add_query(redirect_uri, params), 302)

    async def _issue_code(
        self, auth: AuthRequest, session: BrowserSession, status: int
    ) -> Response:
        code = new_token()
        grant = Grant(
            client_id=auth.client_id,
            sub=session.sub,
            scope=auth.scope,
            auth_time=session.auth_time,
            sid=session.sid,
            nonce=auth.nonce,
            redirect_uri=auth.redirect_uri,
            code_challenge=auth.code_challenge,
        )
        await self.store.put("code:" + token_hash(code), grant.dumps(), self.settings.code_ttl_s)
        params = {"code": code}
        if auth.state is not None:
            params["state"] = auth.state
        params["iss"] = self.issuer
        return Response.redirect(_add_query(auth.redirect_uri, params), status)

    # -- sign-in form --------------------------------------------------------------------
    async def sign_in(self, request: Request) -> Response:
        """The sign-in form's POST: CSRF, throttle, password, then a code for the client."""
        if request.method != "POST":
            return _method_not_allowed("POST")
        form = request.form()
        tx = form.get("tx", "")[:MAX_FIELD_CHARS]
        raw = await self.store.get("tx:" + token_hash(tx)) if tx else None
        auth = AuthRequest.loads(raw) if raw else None
        client = self.clients.get(auth.client_id) if auth else None
        if auth is None or client is None:
            return error_page(
                400,
                "Sign-in expired",
                "This sign-in page has expired or was already used. Go back to "
                "the application and try again.",
            )
        if not self.browser.check_csrf(
            request.cookies().get(CSRF_COOKIE), "sign_in:" + tx, form.get("csrf_token")
        ):
            return error_page(
                403,
                "Form expired",
                "The sign-in form could not be verified. Go back to the application and try again.",
            )
        username = form.get("username", "").strip()[:MAX_FIELD_CHARS]
        password = form.get("password", "")[:MAX_FIELD_CHARS]
        address = request.client_ip
        verdict = await self.throttle.check(username, address)
        if not verdict.allowed:
            log.warning("sign-in throttled", extra={"client_ip": address})
            return self._sign_in_page(
                request,
                tx,
                client,
                username=username,
                status=429,
                retry_after_s=verdict.retry_after_s,
                error=f"Too many attempts, try again in {verdict.retry_after_s} s.",
            )
        user = self.find_user(username) if username else None
        # Off the event loop: argon2 takes tens of milliseconds of CPU by design.
        ok = await asyncio.to_thread(
            partial(verify_password, dummy_hash=self._dummy_hash),
            user.password_hash if user else None,
            password,
        )
        if not ok or user is None:
            after = await self.throttle.failed(username, address)
            log.info("sign-in failed", extra={"client_ip": address})
            message = "Invalid username or password."
            if not after.allowed:
                message += f" Too many attempts, try again in {after.retry_after_s} s."
            return self._sign_in_page(request, tx, client, username=username, error=message)
        # The parked request is single-use: of two racing correct posts, one wins.
        if await self.store.take("tx:" + token_hash(tx)) is None:
            return error_page(
                400,
                "Sign-in expired",
                "This sign-in page was already used. Go back to the application and try again.",
            )
        await self.throttle.succeeded(username)
        now = int(self.clock())
        ttl = int(self.settings.session_ttl_s)
        session = BrowserSession(sid=new_token(), sub=user.username, auth_time=now, exp=now + ttl)
        await self.store.put("sid:" + token_hash(session.sid), user.username, ttl)
        log.info("signed in to the IdP", extra={"user": user.username, "client_ip": address})
        response = await self._issue_code(auth, session, 303)
        self._set_cookie(response, SESSION_COOKIE, self.browser.seal(session), ttl)
        return response

    # -- end session ---------------------------------------------------------------------
    async def end_session(self, request: Request) -> Response:
        """RP-Initiated Logout 1.0 §2: end the IdP session, then go back if registered."""
        if request.method not in ("GET", "POST"):
            return _method_not_allowed("GET, POST")
        params = request.form() if request.method == "POST" else request.query_params()
        hint = params.get("id_token_hint", "")
        claims = self.key.verify(hint) if hint else None
        if hint and (claims is None or claims.get("iss") != self.issuer):
            return error_page(
                400, "Invalid sign-out request", "The sign-out request could not be verified."
            )
        client_id = params.get("client_id", "")
        if claims is not None:
            aud = claims.get("aud")
            hint_client = aud if isinstance(aud, str) else (aud[0] if aud else "")
            if client_id and client_id != hint_client:
                return error_page(
                    400,
                    "Invalid sign-out request",
                    "The sign-out request names two different applications.",
                )
            client_id = str(hint_client)
        target = params.get("post_logout_redirect_uri", "")
        if target:
            client = self.clients.get(client_id)
            if client is None or target not in client.post_logout_redirect_uris:
                return error_page(
                    400,
                    "Invalid sign-out redirect",
                    "The application asked to return to an address it has not registered.",
                )
        csrf_cookie = request.cookies().get(CSRF_COOKIE)
        confirmed = claims is not None or (
            request.method == "POST"
            and self.browser.check_csrf(csrf_cookie, "end_session", params.get("csrf_token"))
        )
        if not confirmed:
            return self._confirm_sign_out(csrf_cookie, params)
        session = await self.current_session(request)
        sids = {session.sid} if session else set()
        if claims is not None and isinstance(claims.get("sid"), str):
            sids.add(claims["sid"])
        for sid in sids:
            await self.store.take("sid:" + token_hash(sid))
        if target:
            back: dict[str, str] = {}
            if "state" in params:
                back["state"] = params["state"][:MAX_STATE_CHARS]
            response = Response.redirect(_add_query(target, back), 302)
        else:
            response = page("signed_out.html")
        self._set_cookie(response, SESSION_COOKIE, "", 0)
        return response

    def _confirm_sign_out(self, csrf_cookie: str | None, params: dict[str, str]) -> Response:
        fresh = not csrf_cookie or len(csrf_cookie) < 32
        cookie = self.browser.new_csrf_cookie() if fresh else str(csrf_cookie)
        keep = [
            (k, params[k][:MAX_STATE_CHARS])
            for k in ("client_id", "post_logout_redirect_uri", "state")
            if k in params
        ]
        response = page(
            "confirm_sign_out.html",
            action=self.path(END_SESSION_PATH),
            csrf_token=self.browser.csrf_token(cookie, "end_session"),
            params=keep,
        )
        if fresh:
            self._set_cookie(response, CSRF_COOKIE, cookie, int(self.settings.session_ttl_s))
        return response


def _add_query(uri: str, params: dict[str, str]) -> str:
    if not params:
        return uri
    return uri + ("&" if urlsplit(uri).query else "?") + urlencode(params)


def _method_not_allowed(allow: str) -> Response:
    return Response.json(
        {"error": "invalid_request", "error_description": "method not allowed"},
        405,
        [("Allow", allow)],
    )


__all__ = [
    "AUTHORIZE_PATH",
    "DEFAULT_BASE_PATH",
    "DISCOVERY_PATH",
    "END_SESSION_PATH",
    "JWKS_PATH",
    "REVOKE_PATH",
    "SIGN_IN_PATH",
    "TOKEN_PATH",
    "USERINFO_PATH",
    "AuthRequest",
    "BuiltinProvider",
    "IdpSettings",
]
