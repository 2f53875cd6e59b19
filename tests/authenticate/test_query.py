"""Query strings of the sign-in flow: the same text urlencode writes, and the same
signatures as before the pairs were encoded once (signed URLs pass between replicas)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from gatehouse.authenticate.keys import PURPOSE_REDIRECT, derive_key
from gatehouse.authenticate.query import query_string
from gatehouse.authenticate.redirects import QUERY_SIGNATURE, RedirectSigner

SECRET = b"s" * 32
text = st.text(max_size=40)
pairs = st.lists(st.tuples(text, text), max_size=8)


@given(pairs)
def test_query_string_is_what_urlencode_writes(items: list[tuple[str, str]]) -> None:
    assert query_string(items) == urlencode(items, quote_via=quote)


def _signature_as_specified(url: str) -> str:
    """HMAC-SHA256 over scheme, host, path and the sorted query without the signature,
    written out with urlencode (the module docstring's canonical form)."""
    parts = urlsplit(url)
    rest = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != QUERY_SIGNATURE
    ]
    canonical = "\n".join(
        [parts.scheme, parts.netloc, parts.path, urlencode(sorted(rest), quote_via=quote)]
    )
    key = derive_key(SECRET, PURPOSE_REDIRECT)
    digest = hmac.new(key, canonical.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@given(pairs)
def test_signed_urls_keep_their_canonical_signature(extra: list[tuple[str, str]]) -> None:
    signer = RedirectSigner(SECRET, clock=lambda: 1_700_000_000)
    url = signer.sign_in_url(
        "https://auth.example.com", "https://app.example.com/a b?x=1", extra=extra
    )
    got = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))[QUERY_SIGNATURE]
    assert got == _signature_as_specified(url)
    signer.verify(url)  # and it verifies
