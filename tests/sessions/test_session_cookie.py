"""The cookie codec, the handoff token and secret handling."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehouse.errors import ConfigError
from gatehouse.sessions.cookie import CookieCodec, HandoffCodec, normalize_host
from gatehouse.sessions.keys import SessionKeys, decode_secret, load_or_create_secret

NOW = 1_800_000_000.0
SID = "s" * 43
KEY = SessionKeys.from_secret(b"a" * 32)
OTHER_KEY = SessionKeys.from_secret(b"b" * 32)


def codec(keys: SessionKeys = KEY, name: str = "_gatehouse", max_age: float = 3600) -> CookieCodec:
    return CookieCodec(keys.cookie, cookie_name=name, max_age_s=max_age)


def raw(value: str) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


def enc(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_roundtrip_and_size() -> None:
    value = codec().encode(SID, "app.example.com", NOW)
    handle = codec().decode(value, "app.example.com", NOW + 10)
    assert handle is not None
    assert handle.session_id == SID
    assert handle.issued_at == int(NOW)
    assert len(value) < 200
    assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_two_encodings_differ() -> None:
    assert codec().encode(SID, "h", NOW) != codec().encode(SID, "h", NOW)


def test_host_normalized_like_a_browser() -> None:
    value = codec().encode(SID, "App.Example.com:8443", NOW)
    assert codec().decode(value, "app.example.com.", NOW) is not None
    assert normalize_host("[::1]:443") == "[::1]"


def test_tamper_every_byte_fails() -> None:
    value = codec().encode(SID, "h.example", NOW)
    data = raw(value)
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            tampered = bytearray(data)
            tampered[i] ^= flip
            assert codec().decode(enc(bytes(tampered)), "h.example", NOW) is None, i
    # other spellings of the same bytes (stray characters, padding, the other alphabet)
    for variant in (value + "=", value[:5] + "!" + value[5:], value.replace("-", "+")):
        if variant != value:
            assert codec().decode(variant, "h.example", NOW) is None
    # truncated and extended
    assert codec().decode(enc(bytes(data[:-1])), "h.example", NOW) is None
    assert codec().decode(enc(bytes(data) + b"\x00"), "h.example", NOW) is None


def test_cookie_from_another_host_or_name_fails() -> None:
    value = codec().encode(SID, "a.example.com", NOW)
    assert codec().decode(value, "b.example.com", NOW) is None
    assert codec(name="_other").decode(value, "a.example.com", NOW) is None


def test_wrong_key_fails() -> None:
    value = codec().encode(SID, "h", NOW)
    assert codec(OTHER_KEY).decode(value, "h", NOW) is None
    # the handoff key never opens a cookie, nor the reverse
    assert (
        CookieCodec(KEY.handoff, cookie_name="_gatehouse", max_age_s=3600).decode(value, "h", NOW)
        is None
    )


def test_expired_and_future_cookies_fail() -> None:
    value = codec(max_age=3600).encode(SID, "h", NOW)
    assert codec(max_age=3600).decode(value, "h", NOW + 3599) is not None
    assert codec(max_age=3600).decode(value, "h", NOW + 3600) is None
    assert codec(max_age=3600).decode(value, "h", NOW - 3600) is None


@pytest.mark.parametrize(
    "junk",
    ["", "=", "a", "é" * 10, "A" * 5000, "!!!!", "AQ", enc(b"\x01" + b"\x00" * 40), " " * 3],
)
def test_malformed_values_are_none(junk: str) -> None:
    assert codec().decode(junk, "h", NOW) is None


@given(st.text(max_size=300))
def test_decode_never_raises(junk: str) -> None:
    assert codec().decode(junk, "h", NOW) is None


@given(st.binary(max_size=200))
def test_decode_random_bytes_never_raises(data: bytes) -> None:
    assert codec().decode(enc(data), "h", NOW) is None


def test_session_id_validation_on_encode() -> None:
    with pytest.raises(ValueError):
        codec().encode("", "h", NOW)
    with pytest.raises(ValueError):
        codec().encode("x" * 200, "h", NOW)


def test_handoff_roundtrip_host_binding_and_expiry() -> None:
    h = HandoffCodec(KEY.handoff)
    bind = "b" * 43
    token = h.seal(SID, "app.example.com", bind, 60, NOW)
    claim = h.open(token, "app.example.com", bind, NOW + 59)
    assert claim is not None
    assert claim.session_id == SID
    assert claim.token_id
    assert h.open(token, "evil.example.com", bind, NOW) is None
    assert h.open(token, "app.example.com", bind, NOW + 61) is None
    # another browser's binding (login CSRF) or none at all
    assert h.open(token, "app.example.com", "c" * 43, NOW) is None
    assert h.open(token, "app.example.com", "", NOW) is None
    assert HandoffCodec(OTHER_KEY.handoff).open(token, "app.example.com", bind, NOW) is None
    # a cookie is not a handoff token
    cookie = codec().encode(SID, "app.example.com", NOW)
    assert h.open(cookie, "app.example.com", bind, NOW) is None
    data = raw(token)
    data[-1] ^= 1
    assert h.open(enc(bytes(data)), "app.example.com", bind, NOW) is None


def test_decode_secret_accepts_pomerium_format() -> None:
    secret = bytes(range(32))
    assert decode_secret(base64.b64encode(secret).decode()) == secret
    assert decode_secret(base64.urlsafe_b64encode(secret).decode().rstrip("=")) == secret
    assert decode_secret("  " + base64.b64encode(secret).decode() + "\n") == secret
    for bad in ["", "short", base64.b64encode(b"x" * 16).decode(), "!" * 44]:
        with pytest.raises(ConfigError):
            decode_secret(bad)


def test_keys_are_independent_and_redacted() -> None:
    k = SessionKeys.from_secret(b"z" * 32)
    assert len({k.cookie, k.handoff, k.tokens}) == 3
    assert b"z" * 32 not in (k.cookie, k.handoff, k.tokens)
    assert "redacted" in repr(k)


def test_generated_secret_persists(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "d" / "cookie_secret"
    first = load_or_create_secret(path)
    assert load_or_create_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


def _sid(i: int) -> str:
    return f"{i:043d}"


def test_memo_of_opened_cookies_holds_sessions_past_any_small_count() -> None:
    """20,000 sessions in rotation stay remembered as authentic (a memo of 10,000 that was
    cleared when full made every request past that pay AES-GCM again)."""
    c = codec()
    values = [c.encode(_sid(i), "app.example.com", NOW) for i in range(20_000)]
    for _ in range(2):
        for i, value in enumerate(values):
            handle = c.decode(value, "app.example.com", NOW)
            assert handle is not None and handle.session_id == _sid(i)
    assert len(c._opened) == 20_000


def test_memo_is_bounded_by_memory_and_drops_the_least_recently_used() -> None:
    c = CookieCodec(KEY.cookie, cookie_name="_gatehouse", max_age_s=3600, opened_max_bytes=3_000)
    values = [c.encode(_sid(i), "app.example.com", NOW) for i in range(40)]
    for value in values[:8]:
        assert c.decode(value, "app.example.com", NOW) is not None
    held = len(c._opened)
    assert 2 <= held < 8  # the budget, not a count, decides
    assert c.decode(values[7], "app.example.com", NOW) is not None  # newest: kept
    first_kept = next(iter(c._opened))
    assert c.decode(first_kept[0], "app.example.com", NOW) is not None  # used again: now last
    for value in values[8:]:
        assert c.decode(value, "app.example.com", NOW) is not None
    assert len(c._opened) == held and c._opened_bytes <= 3_000
    assert (values[-1], "app.example.com") in c._opened
    assert (values[0], "app.example.com") not in c._opened
    # Evicted values still decode (opened again), and forged ones are never remembered.
    assert c.decode(values[0], "app.example.com", NOW) is not None
    forged = raw(values[1])
    forged[-1] ^= 1
    assert c.decode(enc(bytes(forged)), "app.example.com", NOW) is None
    assert (enc(bytes(forged)), "app.example.com") not in c._opened
