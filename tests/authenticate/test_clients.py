"""IdP ids of per-route OAuth clients, and the sign-in state carrying them."""

from __future__ import annotations

import base64
import json
import os

import pytest

from gatehouse.authenticate.clients import DEFAULT_IDP_ID, ClientIds
from gatehouse.authenticate.errors import InvalidState
from gatehouse.authenticate.state import StateCodec
from gatehouse.config.routes import RouteOptions

SECRET = os.urandom(32)


def route(**keys: str) -> RouteOptions:
    return RouteOptions.model_validate({"from": "https://a.example.com", "to": "http://x", **keys})


def test_the_global_client_is_the_default_id() -> None:
    ids = ClientIds(SECRET, "global", "global-secret")
    assert ids.for_route(route()) == DEFAULT_IDP_ID
    # The same client spelled out on a route is still the global one.
    assert ids.for_route(route(idp_client_id="global")) == DEFAULT_IDP_ID
    assert ids.for_route(route(idp_client_secret="global-secret")) == DEFAULT_IDP_ID


def test_each_client_has_its_own_id_that_reveals_no_secret() -> None:
    ids = ClientIds(SECRET, "global", "global-secret")
    a = ids.for_route(route(idp_client_id="a", idp_client_secret="sa"))
    b = ids.for_route(route(idp_client_id="b", idp_client_secret="sb"))
    a2 = ids.for_route(route(idp_client_id="a", idp_client_secret="other"))
    only_secret = ids.for_route(route(idp_client_secret="rotated"))
    assert len({DEFAULT_IDP_ID, a, b, a2, only_secret}) == 5
    assert ids.clients[a] == ("a", "sa")
    assert ids.clients[only_secret] == ("global", "rotated")
    # Route without a secret uses the global one (Pomerium's GetIdentityProviderForPolicy).
    c = ids.for_route(route(idp_client_id="c"))
    assert ids.clients[c] == ("c", "global-secret")
    for idp_id in (a, b, a2, only_secret, c):
        assert len(idp_id) == 22 and idp_id.isascii()
    # Another shared_secret: other ids (the id is a MAC, not a plain hash).
    assert (
        ClientIds(os.urandom(32), "global", "global-secret").for_route(
            route(idp_client_id="a", idp_client_secret="sa")
        )
        != a
    )


def test_state_carries_the_client_and_old_states_mean_the_global_one() -> None:
    codec = StateCodec(SECRET)
    txn, state, csrf = codec.begin("https://a.example.com/", idp_id="abc")
    assert codec.open(state, csrf).idp_id == "abc"
    _, plain, csrf2 = codec.begin("https://a.example.com/")
    assert codec.open(plain, csrf2).idp_id == ""
    # A state sealed by the previous version (nine fields) still opens, as the global client.
    old = [
        txn.id,
        txn.csrf_hash,
        txn.code_verifier,
        txn.nonce,
        txn.redirect_url,
        int(txn.issued_at),
        int(txn.expires_at),
        "",
        False,
    ]
    nonce = os.urandom(12)
    aead = codec._aead  # sealing a legacy payload needs the cipher
    sealed = nonce + aead.encrypt(nonce, json.dumps(old).encode(), b"gatehouse sign-in state v1")
    legacy = "g1." + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
    assert codec.open(legacy, csrf).idp_id == ""
    with pytest.raises(InvalidState):
        codec.open(state, csrf2)
