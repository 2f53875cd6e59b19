"""A scripted browser for the IdP's pages: follow the sign-in form like a user would."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


def form_fields(page: str) -> tuple[str, dict[str, str]]:
    action = _ACTION.search(page)
    if action is None:
        raise AssertionError("no form on the page")
    return html.unescape(action.group(1)), {
        html.unescape(k): html.unescape(v) for k, v in _INPUT.findall(page)
    }


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def authorize_url(
    issuer: str, client_id: str, redirect_uri: str, challenge: str, **extra: str
) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid email profile offline_access",
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return issuer + "/authorize?" + urlencode({k: v for k, v in params.items() if v != ""})


def submit_sign_in(
    browser: requests.Session, origin: str, page: str, username: str, password: str
) -> requests.Response:
    action, fields = form_fields(page)
    return browser.post(
        origin + action,
        data={**fields, "username": username, "password": password},
        allow_redirects=False,
    )


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
