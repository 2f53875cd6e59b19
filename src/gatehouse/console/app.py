"""The console's request handler: sign-in, ``console_policy``, CSRF, then one page or action.

Every request on the console host goes through :meth:`Console.__call__` in this order:
static file → session (sign in when there is none) → ``console_policy`` (403 unless it
allows) → for a POST, the CSRF checks of :mod:`.csrf` (403) → the page or action. Every
response carries a strict Content-Security-Policy (no scripts, no framing) and
``Cache-Control: no-store``.

Pages (GET): ``/`` overview, ``/routes`` list and search, ``/routes/new`` and
``/routes/<n>`` the editor, ``/audit`` the audit trail. Actions (POST): ``/routes/<n>``
apply, ``/routes/<n>/dry-run``, ``/routes/<n>/duplicate``, ``/routes/<n>/delete``,
``/sessions/revoke``. Route ``<n>`` is its index in the config's route order; every
action carries the digest of the file the page was made from, and is refused as a
conflict when the file changed since.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ruamel.yaml.comments import CommentedMap

from ..authenticate.endpoints import AuthEndpoints
from ..authorize.decision import Outcome
from ..authorize.input import PolicyInput
from ..authorize.policy import Policy, compile_route_policy
from ..config.loader import LoadedConfig
from ..errors import ConfigError, GatehouseError
from ..http.messages import Request, Response
from ..identity import AssertionMinter
from ..sessions.model import Session
from . import overview
from .apply import by_field, parse_only, validate, wait_for_digest
from .audit import AuditLog
from .configfile import ConfigConflict, ConfigDocument, ConfigFileError, read_only_reason
from .csrf import CsrfGuard
from .forms import FIELDS, TABS, apply_form, form_values, submitted_values
from .health import probe_all
from .policy import DRY_FIELDS, dry_run_result, policy_summary
from .render import render, static

log = logging.getLogger("gatehouse.console")

#: Sent with every console response: no script at all, styles only from the console,
#: forms only to the console, never framed (clickjacking), nothing sent to other sites.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    # Not no-referrer: with it, browsers send ``Origin: null`` on the console's own forms.
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)
STYLESHEET_PATH = "/static/console.css"
SCRIPT_PATH = "/static/console.js"
#: The console's own static files: path -> (file, content type).
STATIC_FILES = {
    STYLESHEET_PATH: ("console.css", "text/css; charset=utf-8"),
    SCRIPT_PATH: ("console.js", "text/javascript; charset=utf-8"),
}
_ROUTE_PATH = re.compile(r"^/routes/(?P<n>new|\d{1,6})(?:/(?P<action>dry-run|duplicate|delete))?$")


class ConsoleError(GatehouseError):
    """A request the console refuses; ``status`` and a client-safe ``message``."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@dataclass
class EditorPage:
    """Everything the route editor template shows."""

    index: int | None
    digest: str
    values: dict[str, str]
    tab: str = "general"
    errors: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notice: str = ""
    conflict: str = ""
    clauses: list[Any] = field(default_factory=list)
    dry_run: dict[str, Any] | None = None
    dry_inputs: dict[str, str] = field(default_factory=dict)
    legacy: list[str] = field(default_factory=list)


class Console:
    """The console for one config (a reload builds a new one)."""

    def __init__(
        self,
        loaded: LoadedConfig,
        auth: AuthEndpoints,
        minter: AssertionMinter | None,
        services: Any,
        policy: Policy,
        csrf: CsrfGuard,
        audit: AuditLog,
    ) -> None:
        self.loaded = loaded
        self.options = loaded.options
        self.auth = auth
        self.minter = minter
        self.services = services
        self.policy = policy
        self.csrf = csrf
        self.audit = audit
        self.scheme = urlsplit(self.options.console_url or "").scheme or "https"
        source = Path(loaded.source)
        self.path: Path | None = source if source.is_file() else None

    # -- the request ---------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        try:
            response = await self._handle(request)
        except ConsoleError as exc:
            response = self._error_page(exc.status, exc.title, exc.message)
        except GatehouseError as exc:
            log.warning("console request failed: %s", exc, extra={"path": request.path})
            response = self._error_page(exc.status, exc.title, exc.message or exc.title)
        except Exception:
            # Never a traceback to the client; the reason is in the log.
            log.exception("console request failed", extra={"path": request.path})
            response = self._error_page(
                500, "Internal Server Error", "The console could not do this; see the log."
            )
        response.headers.extend(SECURITY_HEADERS)
        return response

    async def _handle(self, request: Request) -> Response:
        if request.path in STATIC_FILES and request.method in ("GET", "HEAD"):
            name, content_type = STATIC_FILES[request.path]
            return Response(200, [("Content-Type", content_type)], static(name))
        session = await self._session(request)
        if session is None:
            return self._sign_in(request)
        self._authorize(request, session)
        form: dict[str, str] = {}
        if request.method == "POST":
            form = request.form()
            refusal = self.csrf.refusal(request, session.id, form)
            if refusal is not None:
                log.warning(
                    "console request refused: %s",
                    refusal,
                    extra={"user": session.email or session.user_id, "path": request.path},
                )
                raise ConsoleError(
                    403, "Forbidden", "This form is not valid here: reload the page and try again."
                )
        elif request.method not in ("GET", "HEAD"):
            raise ConsoleError(405, "Method Not Allowed", "Use the console's pages and forms.")
        return await self._dispatch(request, session, form)

    async def _dispatch(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        path, post = request.path, request.method == "POST"
        if path == "/" and not post:
            return await self._overview(request, session)
        if path == "/routes" and not post:
            return await self._routes(request, session)
        if path == "/audit" and not post:
            return self._page("audit.html", session, entries=self.audit.recent(100))
        if path == "/sessions/revoke" and post:
            return await self._revoke(session, form)
        match = _ROUTE_PATH.match(path)
        if match is None:
            raise ConsoleError(404, "Not Found", "There is no such console page.")
        index = None if match["n"] == "new" else int(match["n"])
        action = match["action"]
        if not post:
            if action is not None:
                raise ConsoleError(405, "Method Not Allowed", "This action needs its form.")
            return self._editor(request, session, index)
        if action == "dry-run":
            return self._dry_run(session, index, form)
        if action == "duplicate":
            return await self._duplicate(session, index, form)
        if action == "delete":
            return await self._delete(session, index, form)
        return await self._apply_edit(session, index, form)

    # -- who --------------------------------------------------------------------------------

    async def _session(self, request: Request) -> Session | None:
        cookie = request.cookies().get(self.auth.cookie_name)
        if not cookie:
            return None
        session = await self.auth.session_for(cookie, None, request.host)
        if session is not None and self.auth.sessions.needs_refresh(session):
            session = await self.auth.sessions.refresh_if_needed(session, self.auth.refresh)
        return session

    def _sign_in(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise ConsoleError(401, "Unauthorized", "Sign in to use the console.")
        original = self.csrf.own_origin(request) + request.path
        if request.query:
            original += "?" + request.query
        binding = request.cookies().get(self.auth.binding_cookie(self.scheme))
        redirect = self.auth.sign_in_redirect(original, self.scheme, binding)
        if redirect is None:
            raise ConsoleError(401, "Unauthorized", "Sign in to use the console.")
        url, cookies = redirect
        return Response.redirect(url, headers=cookies)

    def _authorize(self, request: Request, session: Session) -> None:
        decision = self.policy.evaluate(
            PolicyInput(
                method=request.method,
                path=request.path,
                source_ip=request.client_ip,
                session=session,
                now=time.time(),
            )
        )
        if decision.outcome is not Outcome.ALLOW:
            fields = decision.log_fields()
            fields["user"] = session.email or session.user_id
            log.warning(
                "console access denied",
                extra={"policy": fields, "path": request.path, "method": request.method},
            )
            raise ConsoleError(
                403, "Forbidden", "console_policy does not allow you to use the console."
            )

    # -- pages ------------------------------------------------------------------------------

    def _page(self, template: str, session: Session, status: int = 200, **context: Any) -> Response:
        body = render(
            template,
            user=session.email or session.user_id,
            csrf=self.csrf.token(session.id),
            read_only=self._read_only(),
            config_path=str(self.path) if self.path else self.loaded.source,
            running_digest=self._running_digest(),
            stylesheet=STYLESHEET_PATH,
            script=SCRIPT_PATH,
            **context,
        )
        return Response.html(body, status)

    def _error_page(self, status: int, title: str, message: str) -> Response:
        body = render(
            "error.html", status=status, title=title, message=message, stylesheet=STYLESHEET_PATH
        )
        return Response.html(body, status)

    def _read_only(self) -> str | None:
        if self.path is None:
            return f"the config did not come from a file ({self.loaded.source}): nothing to edit"
        return read_only_reason(self.path)

    def _running_digest(self) -> str:
        current = self.services.current_digest
        return str(current() if current is not None else self.loaded.digest)

    def _document(self) -> ConfigDocument:
        if self.path is None:
            raise ConsoleError(409, "Read-only", self._read_only() or "read-only")
        try:
            return ConfigDocument.read(self.path)
        except ConfigFileError as exc:
            raise ConsoleError(500, "Config file unreadable", str(exc)) from None

    async def _overview(self, request: Request, session: Session) -> Response:
        manager = self.auth.sessions
        tally = self.services.decisions
        rows, why = await overview.list_sessions(
            manager, tally.routes_by_user() if tally is not None else None
        )
        health = [
            await overview.idp_health(self.options, self.services.http_client),
            await overview.store_health(manager),
        ]
        return self._page(
            "overview.html",
            session,
            sessions=rows,
            sessions_why=why,
            own_session=session.id,
            by_route=tally.by_route() if tally is not None else [],
            top=tally.top(30) if tally is not None else [],
            recent=[
                (overview.ago(d.at, time.time()), d.route, d.user, d.decision)
                for d in reversed(tally.recent)
            ][:30]
            if tally is not None
            else [],
            keys=overview.key_rows(self.minter),
            health=health,
        )

    async def _routes(self, request: Request, session: Session) -> Response:
        query = request.query_params().get("q", "").strip()
        doc = self._document()
        check = parse_only(doc.text, str(self.path))
        options = check.loaded.options if check.loaded is not None else self.options
        reach = await probe_all(
            [(u.host, u.port) for route in options.all_routes for u in route.to or []]
        )
        rows = []
        for i, route in enumerate(options.all_routes):
            try:
                summary = policy_summary(compile_route_policy(route, i))
            except ConfigError:
                summary = "invalid policy"
            to = ", ".join(u.url for u in route.to or []) or (
                "redirect" if route.redirect is not None else "fixed response"
            )
            match = route.prefix or route.path or route.regex or ""
            row = {
                "index": i,
                "name": route.name or route.id or "",
                "from": route.from_ + match,
                "to": to,
                "policy": summary,
                "identity": bool(self.options.route_pass_identity_headers(route)),
            }
            health = [reach.get((u.host, u.port)) for u in route.to or []]
            if query and not any(query.lower() in str(v).lower() for v in row.values()):
                continue
            rows.append({**row, "health": health})
        return self._page(
            "routes.html",
            session,
            rows=rows,
            q=query,
            digest=doc.digest,
            problems=check.problems,
            applied=request.query_params().get("applied", "")[:12],
            pending=bool(request.query_params().get("pending")),
        )

    # -- the editor --------------------------------------------------------------------------

    def _editor(self, request: Request, session: Session, index: int | None) -> Response:
        doc = self._document()
        page = self._fresh_page(doc, index)
        page.tab = _tab(request.query_params().get("tab", ""))
        params = request.query_params()
        applied = params.get("applied", "")
        if applied and params.get("pending"):
            page.problems = [
                f"Written (config digest {applied[:12]}), but the running gatehouse has not "
                "loaded it yet: see its log for why."
            ]
        elif applied:
            page.notice = f"Applied. The running config's digest is now {applied[:12]}."
        return self._render_editor(session, page)

    def _fresh_page(self, doc: ConfigDocument, index: int | None) -> EditorPage:
        node = self._route_node(doc, index) if index is not None else CommentedMap()
        page = EditorPage(index, doc.digest, form_values(node, doc.data))
        page.clauses, page.legacy = self._rules(doc.text, index)
        return page

    def _route_node(self, doc: ConfigDocument, index: int) -> CommentedMap:
        try:
            return doc.route(index)
        except IndexError:
            raise ConsoleError(404, "Not Found", f"There is no route #{index}.") from None

    def _rules(self, text: str, index: int | None) -> tuple[list[Any], list[str]]:
        """The clauses of route ``index`` in ``text`` (for the tree), and its legacy keys."""
        if index is None or self.path is None:
            return [], []
        check = parse_only(text, str(self.path))
        if check.loaded is None or index >= len(check.loaded.options.all_routes):
            return [], []
        route = check.loaded.options.all_routes[index]
        legacy = [
            k
            for k in (
                "allowed_users",
                "allowed_domains",
                "allowed_idp_claims",
                "allow_public_unauthenticated_access",
                "allow_any_authenticated_user",
                "cors_allow_preflight",
            )
            if getattr(route, k)
        ]
        try:
            return list(compile_route_policy(route, index).clauses), legacy
        except ConfigError:
            return [], legacy

    def _render_editor(self, session: Session, page: EditorPage, status: int = 200) -> Response:
        return self._page(
            "editor.html",
            session,
            status,
            page=page,
            fields=FIELDS,
            tabs=TABS,
            title="New route" if page.index is None else f"Route #{page.index}",
            action="/routes/new" if page.index is None else f"/routes/{page.index}",
        )

    def _edited(
        self, index: int | None, form: dict[str, str]
    ) -> tuple[ConfigDocument, EditorPage, tuple[str, int]]:
        """The file with the form's changes applied in memory, and the editor page for it.

        Raises:
            ConsoleError: the route does not exist.
        """
        doc = self._document()
        submitted = submitted_values(form)
        page = EditorPage(index, form.get("digest", ""), submitted, tab=_tab(form.get("tab", "")))
        if page.digest != doc.digest:
            page.conflict = (
                f"{doc.path} changed on disk since this editor was opened (the file's digest "
                f"is now {doc.digest[:12]}, the editor's was {page.digest[:12] or 'none'}). "
                "Nothing was written. Reload the route to see the file as it is now, then "
                "make your change again."
            )
        if index is None:
            node = CommentedMap()
            current = form_values(node, doc.data)
            slot = doc.append_route(node)
        else:
            node = self._route_node(doc, index)
            current = form_values(node, doc.data)
            slot = doc.route_slots()[index]
        page.errors = apply_form(node, doc.data, submitted, current)
        return doc, page, slot

    def _dry_run(self, session: Session, index: int | None, form: dict[str, str]) -> Response:
        doc, page, slot = self._edited(index, form)
        page.tab = "policy"
        page.dry_inputs = {k: form.get(k, "") for k in DRY_FIELDS}
        text = doc.dump()
        check = parse_only(text, str(doc.path))
        fields, general = by_field(check.problems, str(doc.path), slot)
        for name, problems in fields.items():
            page.errors.setdefault(name, []).extend(problems)
        page.problems = general
        if check.loaded is not None:
            all_index = doc.all_index(slot)
            route = check.loaded.options.all_routes[all_index]
            page.dry_run = dry_run_result(route, all_index, page.dry_inputs)
            try:
                page.clauses = list(compile_route_policy(route, all_index).clauses)
            except ConfigError:
                page.clauses = []
        page.digest = form.get("digest", "")
        return self._render_editor(session, page)

    async def _apply_edit(
        self, session: Session, index: int | None, form: dict[str, str]
    ) -> Response:
        doc, page, slot = self._edited(index, form)
        if page.conflict:
            return self._render_editor(session, page, 409)
        if page.errors:
            page.problems = ["Fix the fields marked below; nothing was written."]
            return self._render_editor(session, page, 422)
        target = page.values.get("name") or page.values.get("from") or "new route"
        action = "create route" if index is None else "edit route"
        result = await self._write(session, doc, action, target, slot)
        if isinstance(result, list):
            page.errors, page.problems = by_field(result, str(doc.path), slot)
            page.problems.insert(
                0, "The config would not pass `gatehouse check`; nothing was written."
            )
            return self._render_editor(session, page, 422)
        new_index = doc.all_index(slot)
        return self._applied(f"/routes/{new_index}", result, page.tab)

    async def _duplicate(
        self, session: Session, index: int | None, form: dict[str, str]
    ) -> Response:
        doc = self._checked_document(form)
        if index is None:
            raise ConsoleError(404, "Not Found", "Only an existing route can be duplicated.")
        original = self._route_node(doc, index)
        node = copy.deepcopy(original)
        name = str(node.get("name") or node.get("from") or f"route {index}")
        node["name"] = f"{name} (copy)"
        if "id" in node:
            del node["id"]  # ids identify one route
        slot = doc.insert_route_after(index, node)
        result = await self._write(session, doc, "duplicate route", name, slot)
        if isinstance(result, list):
            raise ConsoleError(
                422,
                "Not applied",
                "The duplicate would not pass gatehouse check: " + "; ".join(result),
            )
        return self._applied(f"/routes/{doc.all_index(slot)}", result, "general")

    async def _delete(self, session: Session, index: int | None, form: dict[str, str]) -> Response:
        doc = self._checked_document(form)
        if index is None:
            raise ConsoleError(404, "Not Found", "There is no such route.")
        node = self._route_node(doc, index)
        name = str(node.get("name") or node.get("from") or f"route {index}")
        doc.delete_route(index)
        result = await self._write(session, doc, "delete route", name, None)
        if isinstance(result, list):
            raise ConsoleError(
                422,
                "Not applied",
                "Without this route the config would not pass gatehouse check: "
                + "; ".join(result),
            )
        return self._applied("/routes", result, "")

    def _checked_document(self, form: dict[str, str]) -> ConfigDocument:
        doc = self._document()
        if form.get("digest", "") != doc.digest:
            raise ConsoleError(
                409,
                "Conflict",
                f"{doc.path} changed on disk since this page was opened; nothing was written. "
                "Reload the page and try again.",
            )
        return doc

    async def _write(
        self,
        session: Session,
        doc: ConfigDocument,
        action: str,
        target: str,
        slot: tuple[str, int] | None,
    ) -> list[str] | tuple[str, bool]:
        """Validate, write, reload and audit: the new config digest and whether the serving
        process runs it now, or the problems."""
        reason = read_only_reason(doc.path)
        if reason is not None:
            raise ConsoleError(
                409,
                "Read-only config",
                f"Not applied: {reason}. Make the file writable to edit it here.",
            )
        text = doc.dump()
        check = await validate(text, str(doc.path))
        if not check.ok or check.loaded is None:
            return check.problems
        # The file could have changed while the check ran: compared again, under a lock.
        try:
            after = doc.write_if_unchanged(text)
        except ConfigConflict:
            raise ConsoleError(
                409,
                "Conflict",
                f"{doc.path} changed on disk while the change was checked; nothing was written.",
            ) from None
        except ConfigFileError as exc:
            raise ConsoleError(409, "Not written", f"Not applied: {exc}") from None
        self.audit.record(
            user=session.email or session.user_id,
            user_id=session.user_id,
            action=action,
            target=target,
            before=doc.digest,
            after=after,
        )
        request_reload = self.services.request_reload
        if request_reload is not None:
            request_reload()
        running = await wait_for_digest(self.services.current_digest, check.loaded.digest)
        if not running:
            log.warning(
                "console: the written config is not running yet",
                extra={"digest": check.loaded.digest[:12]},
            )
        return check.loaded.digest, running

    def _applied(self, location: str, result: tuple[str, bool], tab: str) -> Response:
        digest, running = result
        query = f"applied={quote(digest[:12])}" + ("" if running else "&pending=1")
        if tab:
            query += f"&tab={quote(tab)}"
        return Response.redirect(f"{location}?{query}", 303)

    # -- sessions ---------------------------------------------------------------------------

    async def _revoke(self, session: Session, form: dict[str, str]) -> Response:
        target = form.get("session_id", "")
        if not target or len(target) > 200:
            raise ConsoleError(400, "Bad Request", "No session named.")
        await self.auth.sessions.revoke(target)
        if self.minter is not None:
            self.minter.forget_session(target)
        event = self.services.session_event
        if event is not None:
            event("revoked")
        self.audit.record(
            user=session.email or session.user_id,
            user_id=session.user_id,
            action="revoke session",
            target=overview.session_ref(target),
            before=None,
            after=None,
            detail=form.get("session_user", "")[:200],
        )
        return Response.redirect("/?revoked=" + overview.session_ref(target), 303)


def _tab(value: str) -> str:
    return value if value in {t for t, _ in TABS} else "general"
