"""The console through a real gatehouse process with the built-in IdP.

Each test signs users in through the real sign-in flow (console host → authenticate
host → built-in IdP form → hand-off), then uses the console's pages and forms as a
browser would, and checks what a user would notice: statuses, the config file on disk,
the proxy's behaviour after an apply, the audit trail.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys

import yaml

from support.gatehouse import clean_env
from support.upstream import Upstream

from .conftest import APP, CONSOLE, ConsoleUser, audit_lines, csrf_of, digest_of


def _file(gh) -> bytes:  # type: ignore[no-untyped-def]
    return gh.config_path.read_bytes()


def _running_digest(gh) -> str:  # type: ignore[no-untyped-def]
    r = gh.get("/healthz", "console.localhost")
    return str(r.json()["config"])


# -- who may use it -----------------------------------------------------------------------


def test_anonymous_is_sent_to_sign_in_and_cannot_post(console_gh) -> None:  # type: ignore[no-untyped-def]
    r = console_gh.get("/routes", "console.localhost", headers={"Accept": "text/html"})
    assert r.status_code == 302
    assert r.headers["location"].startswith("http://authenticate.localhost/.pomerium/sign_in?")
    before = _file(console_gh)
    r = console_gh.get("/routes/0/delete", "console.localhost", method="POST", data={"x": "1"})
    assert r.status_code == 401
    assert _file(console_gh) == before


def test_signed_in_user_not_allowed_by_console_policy_gets_403_everywhere(
    bob: ConsoleUser, alice: ConsoleUser
) -> None:
    gh = bob.gh
    before = _file(gh)
    token = csrf_of(alice.get("/routes/0").text)  # a real token, but alice's
    for path in ("/", "/routes", "/routes/0", "/routes/new", "/audit", "/nonexistent"):
        r = bob.get(path)
        assert r.status_code == 403, path
        assert "console_policy does not allow you" in r.text
    for path in (
        "/routes/0",
        "/routes/new",
        "/routes/0/dry-run",
        "/routes/0/duplicate",
        "/routes/0/delete",
        "/sessions/revoke",
    ):
        r = bob.post(path, {"csrf": token, "digest": digest_of(alice.get("/routes").text)})
        assert r.status_code == 403, path
    assert _file(gh) == before
    assert audit_lines(gh) == []
    denied = [r for r in gh.logs() if r.get("message") == "console access denied"]
    assert denied and denied[0]["policy"]["user"] == "bob@example.com"


# -- CSRF ---------------------------------------------------------------------------------


def test_missing_wrong_or_cross_site_csrf_is_refused_and_nothing_changes(
    alice: ConsoleUser, bob: ConsoleUser
) -> None:
    gh = alice.gh
    before = _file(gh)
    form = alice.form("/routes/0")
    form["name"] = "renamed"
    missing = {k: v for k, v in form.items() if k != "csrf"}
    assert alice.post("/routes/0", missing).status_code == 403
    assert alice.post("/routes/0", {**form, "csrf": "0" * 64}).status_code == 403
    # A token is bound to its session: bob's own token (were he an admin) is not alice's.
    assert alice.post("/routes/0", {**form, "csrf": form["csrf"][::-1]}).status_code == 403
    evil = {"Origin": "http://evil.localhost", "Sec-Fetch-Site": "cross-site"}
    assert alice.post("/routes/0", form, headers=evil).status_code == 403
    assert alice.post("/routes/0", form, headers={"Origin": "null"}).status_code == 403
    assert alice.post("/routes/0", form, headers={"Sec-Fetch-Site": "same-site"}).status_code == 403
    assert alice.post("/routes/0/delete", {"digest": form["digest"]}).status_code == 403
    assert _file(gh) == before
    assert audit_lines(gh) == []
    refusals = [r for r in gh.logs() if r.get("message") == "console request refused: %s"]
    assert not refusals  # the reason is formatted into the message
    assert any(str(r.get("message", "")).startswith("console request refused") for r in gh.logs())
    # The same form with the right token passes.
    r = alice.post("/routes/0", form)
    assert r.status_code == 303, r.text


# -- editing round-trips the YAML, and the proxy follows -----------------------------------


def test_edit_headers_keeps_comments_and_takes_effect_without_restart(
    alice: ConsoleUser, app_upstream: Upstream
) -> None:
    gh = alice.gh
    pid = gh.pid
    old_text = _file(gh).decode()
    assert alice.browser.follow(APP + "/before").status_code == 200
    assert app_upstream.requests[-1].header("x-pomerium-jwt-assertion") is None

    form = alice.form("/routes/0?tab=headers")
    assert form["tab"] == "headers"
    form["pass_identity_headers"] = "on"
    form["set_request_headers"] = "X-Console: yes"
    r = alice.post("/routes/0", form)
    assert r.status_code == 303, r.text
    applied = re.search(r"applied=([0-9a-f]{12})", r.headers["location"])
    assert applied

    text = _file(gh).decode()
    for comment in (
        "# gatehouse config for the console tests",
        "# the application behind single sign-on",
        "# the test upstream",
    ):
        assert comment in text
    route = yaml.safe_load(text)["routes"][0]
    assert list(route)[:4] == ["name", "from", "to", "policy"]  # key order kept
    assert route["pass_identity_headers"] is True
    assert route["set_request_headers"] == {"X-Console": "yes"}
    # Only the route's new keys were added: every other line is as it was.
    old_lines = old_text.splitlines()
    new_lines = text.splitlines()
    assert [line for line in old_lines if line not in new_lines] == []

    # Applied: the running process (same pid) serves the new config.
    assert gh.pid == pid and gh.proc is not None and gh.proc.poll() is None
    assert _running_digest(gh) == applied.group(1)
    page = alice.get(r.headers["location"].removeprefix(CONSOLE))
    assert f"digest is now {applied.group(1)}" in page.text
    assert alice.browser.follow(APP + "/after").status_code == 200
    seen = app_upstream.requests[-1]
    assert seen.target == "/after"
    assert seen.header("x-console") == "yes"
    assert seen.header("x-pomerium-jwt-assertion")


def test_create_duplicate_and_delete_a_route(alice: ConsoleUser, app_upstream: Upstream) -> None:
    gh = alice.gh
    form = alice.form("/routes/new")
    form.update(
        name="fresh",
        **{"from": "http://fresh.localhost"},
        to=app_upstream.url,
        policy="- allow:\n    or:\n      - email: {is: alice@example.com}\n",
    )
    r = alice.post("/routes/new", form)
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith("/routes/2?")
    data = yaml.safe_load(_file(gh))
    assert [route["name"] for route in data["routes"]] == ["app", "public", "fresh"]
    assert "# the application behind single sign-on" in _file(gh).decode()
    assert alice.browser.follow("http://fresh.localhost/new").status_code == 200
    assert app_upstream.requests[-1].target == "/new"

    listing = alice.get("/routes?q=fresh")
    assert listing.status_code == 200
    assert "fresh.localhost" in listing.text and "app.localhost" not in listing.text
    assert "allow or: email" in listing.text

    r = alice.post("/routes/2/duplicate", {"csrf": form["csrf"], "digest": digest_of(listing.text)})
    assert r.status_code == 303, r.text
    names = [route["name"] for route in yaml.safe_load(_file(gh))["routes"]]
    assert names == ["app", "public", "fresh", "fresh (copy)"]

    for index in (3, 2):
        digest = digest_of(alice.get("/routes").text)
        r = alice.post(f"/routes/{index}/delete", {"csrf": form["csrf"], "digest": digest})
        assert r.status_code == 303, r.text
    assert r.headers["location"].startswith("/routes?applied=")
    assert "Applied. The running config" in alice.get(r.headers["location"]).text
    text = _file(gh).decode()
    assert [route["name"] for route in yaml.safe_load(text)["routes"]] == ["app", "public"]
    assert "# the application behind single sign-on" in text and "# the test upstream" in text
    gone = gh.get("/", "fresh.localhost")
    assert gone.status_code == 404
    actions = [line["action"] for line in audit_lines(gh)]
    assert actions == ["create route", "duplicate route", "delete route", "delete route"]


# -- apply: conflicts, read-only files, invalid input ---------------------------------------


def test_a_change_on_disk_since_the_editor_opened_is_a_conflict(alice: ConsoleUser) -> None:
    gh = alice.gh
    form = alice.form("/routes/0")
    theirs = _file(gh) + b"# edited by someone else\n"
    gh.config_path.write_bytes(theirs)
    form["name"] = "mine"
    r = alice.post("/routes/0", form)
    assert r.status_code == 409
    assert 'id="conflict"' in r.text and "changed on disk" in r.text
    assert _file(gh) == theirs  # never overwritten
    r = alice.post("/routes/0/delete", {"csrf": form["csrf"], "digest": form["digest"]})
    assert r.status_code == 409
    assert _file(gh) == theirs
    assert audit_lines(gh) == []


def test_a_read_only_config_is_refused_with_a_clear_message(alice: ConsoleUser) -> None:
    gh = alice.gh
    form = alice.form("/routes/0")
    before = _file(gh)
    os.chmod(gh.config_path, 0o444)
    try:
        page = alice.get("/routes/0")
        assert 'id="read-only"' in page.text and "is read-only (mode 0444)" in page.text
        assert 'id="apply"' not in page.text
        form["name"] = "changed"
        r = alice.post("/routes/0", form)
        assert r.status_code == 409
        assert "Not applied" in r.text and "read-only (mode 0444)" in r.text
        assert _file(gh) == before
        assert stat.S_IMODE(gh.config_path.stat().st_mode) == 0o444
    finally:
        os.chmod(gh.config_path, 0o644)
    assert audit_lines(gh) == []


def _check_stderr(path) -> str:  # type: ignore[no-untyped-def]
    check = subprocess.run(
        [sys.executable, "-m", "gatehouse", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert check.returncode == 1, check.stdout
    return check.stderr


def _without_location(message: str) -> str:
    return message.split(": ", 2)[-1]  # without "<file>:<line>: "


def test_invalid_input_is_shown_beside_its_field_with_the_check_message(
    alice: ConsoleUser, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import html

    gh = alice.gh
    before = _file(gh)
    cases = [
        ("to", "ftp://127.0.0.1:1", "ftp://127.0.0.1:1"),
        (
            "policy",
            "- allow:\n    or:\n      - emial: {is: alice@example.com}\n",
            [{"allow": {"or": [{"emial": {"is": "alice@example.com"}}]}}],
        ),
        ("match", "regex:(unclosed", None),
    ]
    for field, text, value in cases:
        form = alice.form("/routes/0")
        data = yaml.safe_load(before)
        if field == "match":
            form["match_kind"], form["match_value"] = text.split(":", 1)
            data["routes"][0]["regex"] = "(unclosed"
        else:
            form[field] = text
            data["routes"][0][field] = value
        r = alice.post("/routes/0", form)
        assert r.status_code == 422, field
        assert _file(gh) == before
        shown = re.search(rf'<p class="field-error" id="err-{field}"[^>]*>(.*?)</p>', r.text)
        assert shown, (field, r.text)
        message = html.unescape(shown.group(1))
        assert message.startswith(str(gh.config_path) + ":")  # located: file and line
        # The same message as `gatehouse check` gives for that file.
        copy = tmp_path / f"{field}.yaml"
        copy.write_text(yaml.safe_dump(data, sort_keys=False))
        reported = [_without_location(line) for line in _check_stderr(copy).splitlines()]
        assert _without_location(message) in reported, (message, reported)
    # Text that is not YAML at all is refused beside the policy, before any check.
    form = alice.form("/routes/0")
    form["policy"] = "- allow: {or: [\n"
    r = alice.post("/routes/0", form)
    assert r.status_code == 422
    assert re.search(r'id="err-policy"[^>]*>invalid YAML', r.text)
    assert _file(gh) == before
    assert audit_lines(gh) == []


# -- audit ---------------------------------------------------------------------------------


def test_every_change_writes_one_audit_line(alice: ConsoleUser) -> None:
    gh = alice.gh
    before = _file(gh)
    form = alice.form("/routes/0")
    form["idle_timeout"] = "10m"
    assert alice.post("/routes/0", form).status_code == 303
    after = _file(gh)
    (line,) = audit_lines(gh)
    assert line["user"] == "alice@example.com"
    assert line["action"] == "edit route" and line["target"] == "app"
    assert line["before_digest"] == hashlib.sha256(before).hexdigest()
    assert line["after_digest"] == hashlib.sha256(after).hexdigest()
    logged = gh.wait_log(lambda r: r.get("message") == "console change")
    assert logged["audit"]["after_digest"] == line["after_digest"]
    page = alice.get("/audit")
    assert line["after_digest"][:12] in page.text


# -- escaping -------------------------------------------------------------------------------


def test_markup_in_a_route_name_or_policy_is_shown_as_text(
    alice: ConsoleUser, app_upstream: Upstream
) -> None:
    form = alice.form("/routes/new")
    attack = "<script>alert(1)</script>"
    form.update(
        name=attack,
        **{"from": "http://xss.localhost"},
        to=app_upstream.url,
        policy='- allow:\n    or:\n      - email: {is: "<img src=x onerror=alert(2)>"}\n',
    )
    assert alice.post("/routes/new", form).status_code == 303
    for path in ("/routes", "/routes/2", "/routes/2?tab=policy", "/audit"):
        page = alice.get(path)
        assert page.status_code == 200
        assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
        assert "onerror=alert(2)>" not in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp and "unsafe" not in csp  # no inline script
        assert page.headers["x-frame-options"] == "DENY"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in alice.get("/routes").text


# -- policy dry run ---------------------------------------------------------------------------


def test_dry_run_shows_the_same_decision_as_check_policy(alice: ConsoleUser) -> None:
    from gatehouse.authorize.dryrun import check_policy
    from gatehouse.config import load_file

    gh = alice.gh
    options = load_file(gh.config_path).options
    form = alice.form("/routes/0?tab=policy")
    assert 'id="rules"' in alice.get("/routes/0?tab=policy").text
    for email, expected in (("alice@example.com", "allow"), ("eve@example.com", "deny")):
        form.update(dr_email=email, dr_path="/x", dr_method="GET")
        r = alice.post("/routes/0/dry-run", form)
        assert r.status_code == 200, r.text
        outcome = re.search(r'id="dry-outcome"[^>]*>([^<]+)<', r.text)
        decision, _ = check_policy(options, APP + "/x", email=email)
        assert outcome and outcome.group(1) == decision.outcome.value == expected
        assert "email-ok" in r.text if expected == "allow" else "email-unauthorized" in r.text
    # A dry run evaluates the policy as edited, without writing it.
    before = _file(gh)
    form["policy"] = "- allow:\n    or:\n      - email: {is: eve@example.com}\n"
    form["dr_email"] = "eve@example.com"
    r = alice.post("/routes/0/dry-run", form)
    assert re.search(r'id="dry-outcome"[^>]*>allow<', r.text)
    assert _file(gh) == before
    assert 'id="tab-policy" checked' in r.text
    # Nobody signed in: sign in first, as check-policy says.
    form["dr_email"] = ""
    r = alice.post("/routes/0/dry-run", form)
    assert re.search(r'id="dry-outcome"[^>]*>needs-login<', r.text)


# -- overview --------------------------------------------------------------------------------


def test_overview_lists_sessions_and_revoke_is_immediate(
    alice: ConsoleUser, app_upstream: Upstream
) -> None:
    gh = alice.gh
    from support.browser import Browser

    from .conftest import PASSWORDS

    # bob signs in to the app (not the console).
    bob = Browser(gh.port)
    page = bob.follow(APP + "/")
    from idp.helpers import form_fields

    action, fields = form_fields(page.text)
    from urllib.parse import urljoin

    fields.update(username="bob", password=PASSWORDS["bob"])
    assert bob.follow(urljoin(bob.last_url, action), method="POST", data=fields).status_code == 200
    assert bob.get(APP + "/again").status_code == 200

    overview = alice.get("/")
    assert overview.status_code == 200
    assert "bob@example.com" in overview.text and "alice@example.com" in overview.text
    assert 'id="keys"' in overview.text and "signing now" in overview.text
    assert "session store</b>: OK" in overview.text
    assert "identity provider</b>: OK" in overview.text
    decisions = re.search(r'id="decisions-by-user".*?</table>', overview.text, re.S)
    assert decisions and "bob@example.com" in decisions.group(0)

    rows = re.findall(
        r'<tr data-ref="[0-9a-f]+"><td class="user">([^<]+).*?name="session_id" value="([^"]+)"',
        overview.text,
        re.S,
    )
    bob_session = next(sid for user, sid in rows if user == "bob@example.com")
    bob_row = re.search(r'<td class="user">bob@example.com.*?</tr>', overview.text, re.S)
    assert bob_row and '<td class="routes-used">app</td>' in bob_row.group(0)
    r = alice.post("/sessions/revoke", {"csrf": csrf_of(overview.text), "session_id": bob_session})
    assert r.status_code == 303, r.text
    # Immediately: the next request with bob's cookie is not signed in.
    after = bob.get(APP + "/after-revoke")
    assert after.status_code == 302
    assert "/.pomerium/sign_in" in after.headers["location"]
    assert (
        "bob@example.com" not in alice.get("/").text.split('id="sessions"')[1].split("</table>")[0]
    )
    (line,) = audit_lines(gh)
    assert line["action"] == "revoke session" and line["user"] == "alice@example.com"


def test_pages_have_the_console_security_headers(alice: ConsoleUser) -> None:
    for path in ("/", "/routes", "/routes/0", "/nope"):
        r = alice.get(path)
        assert r.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    css = alice.get("/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "@media" in css.text  # responsive


# -- several workers ----------------------------------------------------------------------------


def test_apply_reaches_every_worker(tmp_path, app_upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    from support import wait_until
    from support.gatehouse import GatehouseProcess

    from .conftest import config_text

    workdir = tmp_path / "multi"
    workdir.mkdir()
    gh = GatehouseProcess(config_text(workdir, app_upstream.url, workers=2), workdir).start()
    try:
        alice = ConsoleUser(gh, "alice")
        form = alice.form("/routes/1?tab=headers")
        form["set_request_headers"] = "X-Applied: everywhere"
        assert alice.post("/routes/1", form).status_code == 303

        def every_worker_serves_it() -> bool:
            # Fresh connections are spread over the workers by the kernel.
            for _ in range(12):
                assert gh.get("/", "public.localhost").status_code == 200
            recent = app_upstream.requests[-12:]
            return all(r.header("x-applied") == "everywhere" for r in recent)

        assert wait_until(every_worker_serves_it, timeout=5, interval=0.1)
        pids = {r["pid"] for r in gh.logs() if r.get("message") == "config reloaded"}
        assert len(pids) == 2  # both workers reloaded, neither restarted
    finally:
        assert gh.stop() == 0, gh.stderr_text()


def test_without_console_policy_nobody_may_use_it(tmp_path, app_upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    from support.gatehouse import GatehouseProcess

    from .conftest import config_text

    workdir = tmp_path / "gh-no-policy"
    workdir.mkdir()
    text = config_text(workdir, app_upstream.url)
    text = re.sub(r"console_policy:\n(?:  .*\n)+", "", text)
    assert "console_policy:" not in text
    gh = GatehouseProcess(text, workdir).start()
    try:
        page = ConsoleUser(gh, "alice").landing  # alice is an admin, but no policy allows her
        assert page.status_code == 403
        assert "console_policy does not allow you" in page.text
    finally:
        assert gh.stop() == 0, gh.stderr_text()


def test_routes_list_shows_whether_each_upstream_answers(alice: ConsoleUser) -> None:
    from support.upstream import closed_port

    form = alice.form("/routes/1")
    form["to"] = f"http://127.0.0.1:{closed_port()}"
    assert alice.post("/routes/1", form).status_code == 303
    page = alice.get("/routes").text
    rows = dict(re.findall(r'<tr data-index="(\d)">.*?<td class="health">(.*?)</td>', page, re.S))
    assert '<span class="ok">up</span>' in rows["0"]
    assert '<span class="bad">down</span> <small>Connection refused</small>' in rows["1"]
