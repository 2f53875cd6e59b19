"""Redirect-target allow list (open-redirect variants) and signed URLs."""

from __future__ import annotations

import pytest

from gatehouse.authenticate.errors import InvalidRedirect
from gatehouse.authenticate.redirects import (
    QUERY_REDIRECT_URI,
    RedirectSigner,
    is_allowed_programmatic_redirect,
    is_allowed_redirect,
    redirect_host,
)

ALLOWED = ["app.example.com", "*.corp.example.com", "authenticate.example.com"]
SECRET = b"k" * 32

GOOD = [
    "https://app.example.com",
    "https://app.example.com/",
    "https://app.example.com/a/b?c=d&e=%2F#frag",
    "http://app.example.com:8080/x",
    "https://APP.example.com/",  # host case does not matter
    "https://app.example.com//evil.com/",  # a path on app.example.com
    "https://app.example.com/?next=https://evil.com",
    "https://wiki.corp.example.com/page",
    "https://a.b.corp.example.com/",
    "https://authenticate.example.com/.pomerium/",
]

BAD = [
    "",
    "/relative/path",
    "//evil.com/",
    "///evil.com/",
    "https:evil.com",
    "https:/evil.com",
    "https:///evil.com",
    "https://evil.com/",
    "https://app.example.com.evil.com/",
    "https://evilapp.example.com/",
    "https://example.com/",
    "https://corp.example.com/",  # the wildcard needs a label before it
    "https://app.example.com@evil.com/",
    "https://user:pw@app.example.com/",
    "https://evil.com\\@app.example.com/",
    "https://evil.com\\.app.example.com/",
    "https:\\\\evil.com",
    "https://evil.com#@app.example.com/",
    "https://evil.com?@app.example.com/",
    "https://app.example.com%2f@evil.com/",
    "https://app%2eexample.com/",
    "https://%61pp.example.com/",
    "https://app.example.com%00.evil.com/",
    "https://app.example.com\x00/",
    "https://app.example.com/\r\nSet-Cookie: x=y",
    "https://app.example.com /",
    " https://app.example.com/",
    "https://app.example.com/\t",
    "\thttps://app.example.com/",
    "HTTPS://app.example.com/",
    "Https://app.example.com/",
    "hTTp://app.example.com/",
    "javascript:alert(1)",
    "javascript://app.example.com/%0aalert(1)",
    "JavaScript://app.example.com/",
    "data:text/html,<script>alert(1)</script>",
    "ftp://app.example.com/",
    "file:///etc/passwd",
    "https://app.example.com:99999/",
    "https://app.example.com:/",
    "https://app.example.com:80x/",
    "https://[::1]/",
    "https://app.example.com./",
    "https://\uff41pp.example.com/",  # full-width a
    "https://app.example.com/\u2028",
    "https://app.example.com/" + "a" * 3000,
]


@pytest.mark.parametrize("url", GOOD)
def test_allowed(url: str) -> None:
    assert is_allowed_redirect(url, ALLOWED)


@pytest.mark.parametrize("url", BAD)
def test_refused(url: str) -> None:
    assert not is_allowed_redirect(url, ALLOWED)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8000/callback", True),
        ("http://127.0.0.1/", True),
        ("http://127.1.2.3:9/x", True),
        ("http://localhost:31337/", True),
        ("http://[::1]:5000/cb", True),
        ("https://cli.example.org/cb", True),  # whitelisted
        ("http://10.0.0.1:8000/", False),
        ("http://evil.com/", False),
        ("http://127.0.0.1.evil.com/", False),
        ("http://localhost.evil.com/", False),
        ("http://127.0.0.1@evil.com/", False),
        ("http://0x7f000001/", False),
        ("javascript://127.0.0.1/%0aalert(1)", False),
    ],
)
def test_programmatic(url: str, allowed: bool) -> None:
    assert is_allowed_programmatic_redirect(url, ["localhost", "cli.example.org"]) is allowed


def test_programmatic_loopback_needs_localhost_entry() -> None:
    assert not is_allowed_programmatic_redirect("http://127.0.0.1:8000/", ["cli.example.org"])


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_signed_url_round_trip() -> None:
    clock = Clock()
    signer = RedirectSigner(SECRET, clock=clock)
    url = signer.sign_in_url("https://authenticate.example.com", "https://app.example.com/a?b=c")
    assert url.startswith("https://authenticate.example.com/.pomerium/sign_in?")
    for name in ("pomerium_issued", "pomerium_expiry", "pomerium_signature"):
        assert name + "=" in url
    params = signer.verify(url)
    assert params == {QUERY_REDIRECT_URI: "https://app.example.com/a?b=c"}
    # Parameter order and an explicit default port do not matter.
    base, query = url.split("?")
    reordered = base.replace(".com/", ".com:443/") + "?" + "&".join(reversed(query.split("&")))
    assert signer.verify(reordered) == params


def test_signed_url_expires() -> None:
    clock = Clock()
    signer = RedirectSigner(SECRET, clock=clock)
    url = signer.sign("https://authenticate.example.com/.pomerium/sign_out")
    clock.now += 300 + 30 + 1
    with pytest.raises(InvalidRedirect):
        signer.verify(url)


def test_signed_url_from_the_future() -> None:
    clock = Clock()
    url = RedirectSigner(SECRET, clock=clock).sign("https://a.example.com/x")
    clock.now -= 120
    with pytest.raises(InvalidRedirect):
        RedirectSigner(SECRET, clock=clock).verify(url)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda u: u.replace("app.example.com", "evil.example.com"),
        lambda u: u.replace("authenticate.example.com", "other.example.com"),
        lambda u: u.replace("/sign_in", "/sign_out"),
        lambda u: u.replace("pomerium_expiry=", "pomerium_expiry=9"),
        lambda u: u + "&extra=1",
        lambda u: u.split("&pomerium_signature")[0],
        lambda u: u.replace("pomerium_signature=", "pomerium_signature=A"),
        lambda u: u + "&pomerium_signature=AAAA",
    ],
)
def test_signed_url_tampering(tamper: object) -> None:
    signer = RedirectSigner(SECRET, clock=Clock())
    url = signer.sign_in_url("https://authenticate.example.com", "https://app.example.com/")
    with pytest.raises(InvalidRedirect):
        signer.verify(tamper(url))  # type: ignore[operator]


def test_signed_url_other_secret() -> None:
    url = RedirectSigner(SECRET, clock=Clock()).sign("https://a.example.com/x")
    with pytest.raises(InvalidRedirect):
        RedirectSigner(b"z" * 32, clock=Clock()).verify(url)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        RedirectSigner(b"short")


def test_every_control_non_ascii_and_backslash_character_is_refused() -> None:
    """Each code point below U+0200 (and a few above) in the path or the query: refused
    exactly when it is a control, space, DEL, non-ASCII or a backslash."""
    points = [*range(0x200), 0x2028, 0xFEFF, 0xFFFF, 0x1F600, 0x10FFFF]
    for point in points:
        ch = chr(point)
        unsafe = point <= 0x20 or point >= 0x7F or ch == "\\"
        for url in (f"https://app.example.com/a{ch}b", f"https://app.example.com/?q={ch}"):
            expected = None if unsafe else "app.example.com"
            assert redirect_host(url) == expected, (hex(point), url)
