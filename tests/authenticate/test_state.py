"""The sealed sign-in state: secrecy, integrity, expiry, CSRF binding and single use."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from gatehouse.authenticate.errors import InvalidState
from gatehouse.authenticate.oidc import pkce_challenge
from gatehouse.authenticate.state import StateCodec, consume, csrf_cookie_name

SECRET = b"x" * 32
URL = "https://app.example.com/page?q=1"


class Clock:
    now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_round_trip() -> None:
    codec = StateCodec(SECRET)
    txn, state, csrf = codec.begin(URL)
    opened = codec.open(state, csrf)
    assert opened == replace(txn, issued_at=int(txn.issued_at), expires_at=int(txn.expires_at))
    assert opened.redirect_url == URL
    assert opened.code_challenge == pkce_challenge(txn.code_verifier)
    assert 43 <= len(txn.code_verifier) <= 128  # RFC 7636 §4.1


def test_state_hides_its_secrets() -> None:
    txn, state, csrf = StateCodec(SECRET).begin(URL)
    raw = base64.urlsafe_b64decode(state[3:] + "==")
    for secret in (txn.code_verifier, txn.nonce, URL, csrf):
        assert secret not in state and secret.encode() not in raw


def test_states_differ() -> None:
    codec = StateCodec(SECRET)
    states = {codec.begin(URL, "a" * 43)[1] for _ in range(20)}
    assert len(states) == 20


def test_csrf_cookie_reused_when_well_formed() -> None:
    codec = StateCodec(SECRET)
    _, state1, csrf = codec.begin(URL)
    _, state2, csrf2 = codec.begin(URL, csrf)
    assert csrf2 == csrf
    codec.open(state1, csrf)
    codec.open(state2, csrf)
    _, _, fresh = codec.begin(URL, "not-a-valid-cookie")
    assert fresh != "not-a-valid-cookie"


@pytest.mark.parametrize("cookie", [None, "", "b" * 43])
def test_wrong_csrf_cookie(cookie: str | None) -> None:
    codec = StateCodec(SECRET)
    _, state, _ = codec.begin(URL, "a" * 43)
    with pytest.raises(InvalidState):
        codec.open(state, cookie)


def test_every_byte_is_authenticated() -> None:
    codec = StateCodec(SECRET)
    _, state, csrf = codec.begin(URL)
    for i in range(3, len(state), 7):
        flipped = state[:i] + ("A" if state[i] != "A" else "B") + state[i + 1 :]
        with pytest.raises(InvalidState):
            codec.open(flipped, csrf)


@pytest.mark.parametrize("state", ["", "g1.", "g1.!!!!", "x" * 5000, "g2.AAAA", "g1.AAAA"])
def test_garbage(state: str) -> None:
    with pytest.raises(InvalidState):
        StateCodec(SECRET).open(state, "a" * 43)


def test_other_secret() -> None:
    _, state, csrf = StateCodec(SECRET).begin(URL)
    with pytest.raises(InvalidState):
        StateCodec(b"y" * 32).open(state, csrf)


def test_expiry() -> None:
    clock = Clock()
    codec = StateCodec(SECRET, ttl_s=600, clock=clock)
    _, state, csrf = codec.begin(URL)
    clock.now += 599
    codec.open(state, csrf)
    clock.now += 1
    with pytest.raises(InvalidState):
        codec.open(state, csrf)


def test_redirect_url_too_long() -> None:
    with pytest.raises(InvalidState):
        StateCodec(SECRET).begin("https://app.example.com/" + "a" * 3000)


@pytest.mark.anyio
async def test_single_use() -> None:
    seen: dict[str, float] = {}

    async def consume_once(key: str, ttl_s: float) -> bool:
        if key in seen:
            return False
        seen[key] = ttl_s
        return True

    codec = StateCodec(SECRET)
    txn, state, csrf = codec.begin(URL)
    await consume(codec, codec.open(state, csrf), consume_once)
    ((key, ttl),) = seen.items()
    assert txn.id in key and 600 <= ttl <= 661
    with pytest.raises(InvalidState):
        await consume(codec, codec.open(state, csrf), consume_once)


def test_csrf_cookie_name() -> None:
    assert csrf_cookie_name("_gatehouse") == "_gatehouse_csrf"
