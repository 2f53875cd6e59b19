"""Error pages and page values without a server: escaping, request ids, JSON, times."""

from __future__ import annotations

import json

from gatehouse.errors import Forbidden, InvalidPath, NotFound, UpstreamTimeout
from gatehouse.http.messages import RequestHead
from gatehouse.pages.values import claim_text, shown_claims, shown_time
from gatehouse.proxy.responses import error_response, request_id

HOSTILE = '<script>alert("x")</script>'


def head(
    accept: bytes = b"text/html", extra: list[tuple[bytes, bytes]] | None = None
) -> RequestHead:
    return RequestHead(
        method=b"GET",
        target=b"/",
        headers=[(b"host", b"app.example.com"), (b"accept", accept), *(extra or [])],
        http_version="1.1",
        keep_alive=True,
        has_body=False,
        upgrade=None,
        expect_continue=False,
    )


def test_forbidden_page_escapes_the_user_and_route_and_shows_the_buttons() -> None:
    error = Forbidden("denied", user=HOSTILE, route=HOSTILE, session_id="s")
    page = error_response(error, head(), request_id="0123456789abcdef", csrf="tok").body.decode()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert page.count('action="/.pomerium/sign_out"') == 2
    assert 'name="csrf" value="tok"' in page
    assert 'id="request-id">0123456789abcdef<' in page


def test_forbidden_without_a_session_has_no_sign_out_buttons() -> None:
    page = error_response(Forbidden("denied"), head(), request_id="r" * 16).body.decode()
    assert "sign_out" not in page and 'id="user"' not in page


def test_json_errors_carry_the_same_facts() -> None:
    error = Forbidden("denied", user="a@example.com", route="app")
    response = error_response(error, head(b"application/json"), request_id="abcd" * 4)
    body = json.loads(response.body)
    assert body == {
        "status": 403,
        "error": "Forbidden",
        "message": "You do not have access to this page.",
        "hint": body["hint"],
        "request_id": "abcd" * 4,
        "user": "a@example.com",
        "route": "app",
    }
    assert ("X-Request-Id", "abcd" * 4) in response.headers
    gateway = json.loads(error_response(UpstreamTimeout("slow"), head(b"*/*")).body)
    assert gateway["status"] == 504 and "request id" in gateway["hint"]


def test_not_found_names_the_host_escaped() -> None:
    page = error_response(NotFound("x"), head(), host=HOSTILE).body.decode()
    assert "No route matches the host &lt;script&gt;" in page and "<script>" not in page


def test_invalid_path_says_why_without_echoing_the_path() -> None:
    page = error_response(InvalidPath("it holds a ';' path parameter"), head()).body.decode()
    assert "refused the path of this address: it holds a &#39;;&#39; path parameter." in page


def test_request_id_keeps_a_well_formed_client_id_only() -> None:
    assert request_id(head(extra=[(b"x-request-id", b"abc-123_XYZ.9")])) == "abc-123_XYZ.9"
    for bad in (b"<b>injected</b>", b"short", b"x" * 65, b"a b c d e f g h"):
        rid = request_id(head(extra=[(b"x-request-id", bad)]))
        assert len(rid) == 16 and int(rid, 16) >= 0
    assert request_id(head()) != request_id(head())


def test_claims_are_json_not_python() -> None:
    assert claim_text(["demo", "admins"]) == '["demo", "admins"]'
    assert claim_text(True) == "true" and claim_text(None) == "null"
    assert claim_text({"b": 1, "a": [False]}) == '{"a": [false], "b": 1}'
    assert claim_text("plain") == "plain"
    shown = {c.name: c for c in shown_claims({"iat": 1000, "email_verified": True}, now=1060)}
    assert shown["email_verified"].text == "true" and shown["email_verified"].time is None
    iat = shown["iat"].time
    assert iat is not None and iat.epoch == "1000" and iat.text.endswith("(1 minute ago)")


def test_times_read_as_words() -> None:
    t = shown_time(1767225600, now=1767225600 - 2 * 3600)
    assert t.text == "2026-01-01 00:00:00 UTC (in 2 hours)"
    assert t.iso == "2026-01-01T00:00:00Z" and t.epoch == "1767225600"
    assert shown_time(0, now=5 * 86400).text.endswith("(5 days ago)")
