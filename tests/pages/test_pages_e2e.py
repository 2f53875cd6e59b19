"""gatehouse's own pages through a real gatehouse process and the built-in IdP.

What a person sees: a 403 that names who is signed in and the route, with sign-out and
"sign in as someone else" buttons and a request id that is also in the access log; a
404 naming the host; a ``;`` path refused in words; the session page with claims as
JSON and times in words; sign-out confirmation and "sign in again"; the verify app in the
same look. Every user-controlled value (a hostile name and group) arrives escaped.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable, Iterator
from urllib.parse import urljoin
from wsgiref.simple_server import WSGIServer

import httpx
import jwt
import pytest

from gatehouse.idp.passwords import hash_password
from gatehouse.verify.app import VerifyApp
from gatehouse.verify.app import serve as serve_verify_app
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

APP = "http://app.localhost"
DENIED = "http://denied.localhost"
VERIFY = "http://verify.localhost"
PASSWORD = "correct horse battery"
#: A name and a group an attacker might get into their IdP profile.
HOSTILE_NAME = '<img src=x onerror="alert(1)">'
HOSTILE_GROUP = "<script>alert('g')</script>"

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_FORMS = re.compile(r'<form method="post" action="([^"]+)">(.*?)</form>', re.S)


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def verify_app() -> Iterator[WSGIServer]:
    """The verify app on a free port (its JWKS URL is set once gatehouse has a port)."""
    server = serve_verify_app("127.0.0.1", 0, None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gh(
    make_upstream: Callable[..., Upstream],
    start_gatehouse: Callable[..., GatehouseProcess],
    password_hash: str,
    verify_app: WSGIServer,
) -> GatehouseProcess:
    app = make_upstream("app")
    allow_alice = [{"allow": {"or": [{"email": {"is": "alice@example.com"}}]}}]
    config = {
        "authenticate_service_url": "http://authenticate.localhost",
        "idp_provider": "builtin",
        "idp_users": [
            {
                "username": "alice",
                "password_hash": password_hash,
                "email": "alice@example.com",
                "name": HOSTILE_NAME,
                "groups": ["staff", HOSTILE_GROUP],
            },
            {
                "username": "bob",
                "password_hash": password_hash,
                "email": "bob@example.com",
                "name": "Bob",
                "groups": ["staff"],
            },
        ],
        "routes": [
            {"name": "app", "from": APP, "to": app.url, "policy": allow_alice},
            {
                "name": "payroll",
                "from": DENIED,
                "to": app.url,
                "policy": [{"allow": {"or": [{"email": {"is": "nobody@example.com"}}]}}],
            },
            {
                "name": "verify",
                "from": VERIFY,
                "to": f"http://127.0.0.1:{verify_app.server_port}",
                "pass_identity_headers": True,
                "policy": allow_alice,
            },
        ],
    }
    gh = start_gatehouse(config)
    app_object = verify_app.get_app()
    assert isinstance(app_object, VerifyApp)
    app_object.jwks_url = f"http://127.0.0.1:{gh.port}/.well-known/pomerium/jwks.json"
    return gh


def submit(browser: Browser, page_url: str, form_html: str, action: str) -> httpx.Response:
    data = {html.unescape(k): html.unescape(v) for k, v in _HIDDEN.findall(form_html)}
    return browser.request("POST", urljoin(page_url, html.unescape(action)), data=data)


def forms(page: str) -> list[tuple[str, str]]:
    return _FORMS.findall(page)


def follow_from(browser: Browser, url: str, response: httpx.Response) -> httpx.Response:
    while response.status_code in (301, 302, 303, 307, 308):
        url = urljoin(url, response.headers["location"])
        response = browser.get(url)
    return response


def sign_in(browser: Browser, url: str, username: str = "alice") -> httpx.Response:
    page = browser.follow(url)
    assert 'name="password"' in page.text, page.text[:300]
    return sign_in_from_form(browser, page, username)


def assert_escaped(text: str) -> None:
    """No hostile markup reached the page raw; it is there, escaped."""
    assert "<script>" not in text and "<img" not in text
    assert "onerror=&#34;alert(1)&#34;" in text or "onerror=&quot;alert(1)&quot;" in text


# -- 403 --------------------------------------------------------------------------------------


def test_forbidden_page_names_the_user_the_route_and_a_logged_request_id(
    gh: GatehouseProcess,
) -> None:
    browser = Browser(gh.port)
    assert sign_in(browser, f"{APP}/").status_code == 200
    # Signed in on app.localhost; denied.localhost gets its own session via the hand-off.
    page = browser.follow(f"{DENIED}/salaries")
    assert page.status_code == 403
    text = page.text
    assert 'id="user">alice@example.com<' in text
    assert 'id="route">payroll<' in text
    assert "Ask the owner of this application for access" in text
    match = re.search(r'id="request-id">([0-9a-f]{16})<', text)
    assert match, text
    rid = match.group(1)
    assert page.headers["x-request-id"] == rid
    line = gh.wait_access(lambda e: e.get("request_id") == rid)
    assert line["status"] == 403 and line["host"] == "denied.localhost"
    assert line["user"] == "alice@example.com"
    # Buttons, not links: sign out, and sign in as someone else (both POST with a token).
    kinds = [("then" in body, action) for action, body in forms(text)]
    assert kinds == [(False, "/.pomerium/sign_out"), (True, "/.pomerium/sign_out")]


def test_forbidden_json_has_the_same_facts(gh: GatehouseProcess) -> None:
    browser = Browser(gh.port)
    sign_in(browser, f"{APP}/")
    browser.follow(f"{DENIED}/")  # get a denied.localhost session
    response = browser.get(f"{DENIED}/api", headers={"Accept": "application/json"})
    assert response.status_code == 403
    body = response.json()
    assert body["user"] == "alice@example.com" and body["route"] == "payroll"
    assert re.fullmatch(r"[0-9a-f]{16}", body["request_id"])
    assert body["hint"] and body["message"]


def test_sign_in_as_someone_else_from_the_403_page(gh: GatehouseProcess) -> None:
    browser = Browser(gh.port)
    sign_in(browser, f"{APP}/")
    page = browser.follow(f"{DENIED}/")
    (action, body) = next(f for f in forms(page.text) if "then" in f[1])
    response = submit(browser, f"{DENIED}/", body, action)
    assert response.status_code == 303
    final = follow_from(browser, f"{DENIED}/", response)
    # Signed out everywhere (IdP too): the IdP asks who you are, and sends you back here.
    assert 'name="password"' in final.text
    again = sign_in_from_form(browser, final, "bob")
    assert again.status_code == 403 and 'id="user">bob@example.com<' in again.text


def sign_in_from_form(browser: Browser, page: httpx.Response, username: str) -> httpx.Response:
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action
    data = {html.unescape(k): html.unescape(v) for k, v in _HIDDEN.findall(page.text)}
    data.update({"username": username, "password": PASSWORD})
    response = browser.request(
        "POST", urljoin(browser.last_url, html.unescape(action.group(1))), data=data
    )
    return follow_from(browser, browser.last_url, response)


# -- 404 and 400 ------------------------------------------------------------------------------


def test_not_found_names_the_host(gh: GatehouseProcess) -> None:
    browser = Browser(gh.port)
    page = browser.get("http://nothing-here.localhost/x")
    assert page.status_code == 404
    assert "No route matches the host nothing-here.localhost." in page.text
    assert re.search(r'id="request-id">[0-9a-f]{16}<', page.text)
    api = browser.get("http://nothing-here.localhost/x", headers={"Accept": "application/json"})
    assert api.json()["host"] == "nothing-here.localhost"


def test_path_parameter_400_says_what_was_wrong(gh: GatehouseProcess) -> None:
    page = Browser(gh.port).get(f"{APP}/admin;jsessionid=1")
    assert page.status_code == 400
    assert "holds a &#39;;&#39; path parameter" in page.text
    assert "allow_path_parameters" in page.text
    assert "Check the link" in page.text


def test_a_client_request_id_is_kept_only_when_well_formed(gh: GatehouseProcess) -> None:
    browser = Browser(gh.port)
    good = browser.get("http://nothing.localhost/", headers={"X-Request-Id": "trace-1234abcd"})
    assert good.headers["x-request-id"] == "trace-1234abcd"
    bad = browser.get("http://nothing.localhost/", headers={"X-Request-Id": "<b>x</b>yyyyyyy"})
    assert re.fullmatch(r"[0-9a-f]{16}", bad.headers["x-request-id"])
    assert "<b>x</b>" not in bad.text


# -- session page, sign-out, signed out -------------------------------------------------------


def test_session_page_shows_claims_as_json_times_in_words_and_escapes(
    gh: GatehouseProcess,
) -> None:
    browser = Browser(gh.port)
    sign_in(browser, f"{APP}/")
    page = browser.get(f"{APP}/.pomerium/")
    assert page.status_code == 200
    text = page.text
    assert_escaped(text)
    assert "&lt;script&gt;alert(&#39;g&#39;)&lt;/script&gt;" in text  # the group, escaped
    # JSON, not Python: a list claim as a JSON array, no reprs.
    assert "[&#34;staff&#34;, &#34;&lt;script&gt;" in text
    assert "[&#39;" not in text and ">True<" not in text and ">False<" not in text
    # Times: words, with the epoch in the title.
    expires = re.search(r'<time datetime="([^"]+)" title="(\d+)" id="expires">([^<]+)</time>', text)
    assert expires, text
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 1[34] hours\)", expires.group(3))
    iat = re.search(r'<code>iat</code></th><td><time datetime="[^"]+" title="(\d+)">([^<]+)<', text)
    assert iat and iat.group(2).endswith("ago)") and "UTC" in iat.group(2)


def test_plain_get_of_sign_out_asks_first_and_keeps_the_session(gh: GatehouseProcess) -> None:
    browser = Browser(gh.port)
    sign_in(browser, f"{APP}/")
    page = browser.get(f"{APP}/.pomerium/sign_out")
    assert page.status_code == 200
    assert 'id="user">alice@example.com<' in page.text
    assert browser.get(f"{APP}/still-signed-in").status_code == 200
    ((action, body),) = forms(page.text)
    response = submit(browser, f"{APP}/.pomerium/sign_out", body, action)
    assert response.status_code == 303
    final = follow_from(browser, f"{APP}/.pomerium/sign_out", response)
    assert "You have been signed out." in final.text
    link = re.search(r'href="([^"]+)" id="sign-in-again">Sign in again<', final.text)
    assert link and html.unescape(link.group(1)) == f"{APP}/"
    assert browser.get(f"{APP}/").status_code == 302  # signed out: sign-in again


def test_signed_out_page_ignores_a_forged_return_ticket(gh: GatehouseProcess) -> None:
    page = Browser(gh.port).get(
        "http://authenticate.localhost/.pomerium/signed_out?state=aHR0cHM6Ly9ldmlsLmV4YW1wbGUv.00"
    )
    assert page.status_code == 200
    assert "evil" not in page.text and 'id="sign-in-again">To sign in again' in page.text


# -- verify app -------------------------------------------------------------------------------


def test_verify_page_matches_the_look_and_shows_key_id_readable_times_and_links(
    gh: GatehouseProcess,
) -> None:
    browser = Browser(gh.port)
    sign_in(browser, f"{APP}/")
    page = browser.follow(f"{VERIFY}/")
    assert page.status_code == 200, page.text[:500]
    text = page.text
    assert "<footer>gatehouse" in text  # the shared look (base.html)
    assert 'id="status">&#10003; Identity verified<' in text
    assert 'id="email">alice@example.com<' in text
    assert_escaped(text)
    assert 'href="/.pomerium/" id="session-link"' in text
    assert 'href="/.pomerium/sign_out" id="sign-out-link"' in text
    token = re.search(r"<code>X-Pomerium-Jwt-Assertion</code></th><td><code>([^<]+)<", text)
    assert token, "request headers listed"
    kid = jwt.get_unverified_header(html.unescape(token.group(1)))["kid"]
    assert f'id="kid">{kid}<' in text  # the key that verified the signature
    exp = re.search(r'<code>exp</code></th><td><time datetime="[^"]+" title="(\d+)">([^<]+)<', text)
    assert exp and "UTC (in " in exp.group(2)
    assert "verify.localhost" in text  # the host it verified for
