"""``set_request_headers`` substitutions (``${pomerium.*}``): the syntax Pomerium documents,
rendering, and values that could not travel in a header (bytes-level, no sockets)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from gatehouse.config import load_text
from gatehouse.proxy.header_template import HeaderTemplate, RequestFacts, parse, render
from gatehouse.proxy.headers import upstream_request_head
from gatehouse.proxy.router import compile_route
from tls.pki import Authority


def _shown(value: str) -> str:
    """The template with each reference drawn as ``<a,b,c>`` (as Pomerium's tests do)."""
    return "".join(
        p if isinstance(p, str) else "<" + ",".join(p) + ">" for p in parse(value).parts
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("x $$ y $$ z", "x $ y $ z"),
        ("${x.y.z}", "<x,y,z>"),
        ("${   x   .\ty .  z }", "<x,y,z>"),
        ('${x["y"].z}', "<x,y,z>"),
        ('${x["', '${x["'),
        ("${", "${"),
        ("${}", "${}"),
        ('${x["\\\\"]}', "<x,\\>"),
        ('${x["\\""]}', '<x,">'),
        ("${pomerium.access_token}", "<pomerium,access_token>"),
        ("$pomerium.access_token", "<pomerium,access_token>"),
        ("$pomerium.client_cert_fingerprint", "<pomerium,client_cert_fingerprint>"),
        ("${pomerium.jwt}", "<pomerium,jwt>"),
        (
            '${pomerium.request.headers["X-Access-Token"]}',
            "<pomerium,request,headers,X-Access-Token>",
        ),
        ("$pomerium.request.headers.X-Access-Token", "<pomerium,request,headers,X-Access-Token>"),
        ("before ${   pomerium  .  jwt  } after", "before <pomerium,jwt> after"),
        ("Bearer $pomerium.jwt.", "Bearer $pomerium.jwt."),  # a dot must start a name
        ("$", "$"),
        ("cost: 5$", "cost: 5$"),
        ("${a}${b}", "<a><b>"),
    ],
)
def test_the_syntax_pomerium_documents(value: str, shown: str) -> None:
    assert _shown(value) == shown


def _facts(**kw: object) -> RequestFacts:
    base: dict[str, object] = {
        "access_token": "",
        "id_token": "",
        "jwt": lambda: "",
        "peer_chain": (),
        "headers": (),
    }
    base.update(kw)
    return RequestFacts(**base)  # type: ignore[arg-type]


def _one(value: str, facts: RequestFacts) -> bytes | None:
    out = render([(b"x-h", parse(value))], facts)
    return out[0][1] if out else None


def test_each_reference_renders_its_value() -> None:
    ca = Authority("client CA")
    who = ca.issue("laptop.example.test", "odd,name.example", client=True, common_name="alice",
                   emails=("alice@example.com",))
    der = who.cert.public_bytes(serialization.Encoding.DER)
    minted: list[int] = []

    def jwt() -> str:
        minted.append(1)
        return "header.payload.sig"

    facts = _facts(
        access_token="at-123",
        id_token="id.tok.en",
        jwt=jwt,
        peer_chain=(der,),
        headers=[(b"x-access-token", b"abc"), (b"x-multi", b"1"), (b"x-multi", b"2")],
    )
    assert _one("Bearer ${pomerium.access_token}", facts) == b"Bearer at-123"
    assert _one("$pomerium.id_token", facts) == b"id.tok.en"
    assert minted == []  # the assertion is minted only for a template that uses it
    assert _one("${pomerium.jwt}", facts) == b"header.payload.sig"
    fingerprint = hashlib.sha256(der).hexdigest().encode()
    assert _one("${pomerium.client_cert_fingerprint}", facts) == fingerprint
    # A SAN holding a comma is left out rather than split wrongly (as Pomerium).
    assert _one("${pomerium.client_cert_san_dns}", facts) == b"laptop.example.test"
    assert _one("${pomerium.client_cert_san_email}", facts) == b"alice@example.com"
    assert _one('Bearer ${pomerium.request.headers["X-Access-Token"]}', facts) == b"Bearer abc"
    assert _one("$pomerium.request.headers.x-multi", facts) == b"1,2"
    # Unknown references render as nothing; a value that renders empty is not sent.
    assert _one("a${pomerium.nope}b", facts) == b"ab"
    assert _one("${pomerium.nope}", facts) is None
    assert _one("$HOME", facts) is None
    # Without a session or a client certificate, the references are empty.
    assert _one("[${pomerium.client_cert_fingerprint}]", _facts()) == b"[]"


def test_a_value_that_cannot_travel_in_a_header_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    facts = _facts(access_token="tok\r\nx-injected: 1", id_token="caf\u00e9\u2603")
    assert _one("t=${pomerium.access_token};", facts) == b"t=;"
    assert _one("${pomerium.id_token}", facts) is None  # not Latin-1
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2


def test_the_upstream_head_carries_plain_and_rendered_values() -> None:
    loaded = load_text(
        """
insecure_server: true
routes:
  - from: http://app.example.com
    to: http://127.0.0.1:9
    set_request_headers:
      X-Plain: fixed
      X-Token: Bearer ${pomerium.access_token}
      X-Cost: $$5
""",
        env={},
    )
    route = compile_route(loaded.options, loaded.options.routes[0], 0)
    assert route.set_request_headers == ((b"x-plain", b"fixed"),)
    assert [k for k, _ in route.request_header_templates] == [b"x-token", b"x-cost"]
    assert all(isinstance(t, HeaderTemplate) for _, t in route.request_header_templates)
    rendered = render(route.request_header_templates, _facts(access_token="at"))
    head = upstream_request_head(
        method=b"GET",
        target=b"/",
        # The client's own copies of set headers never reach the upstream.
        headers=[(b"x-token", b"forged"), (b"x-cost", b"0")],
        connection=None,
        route=route,
        host_header=b"127.0.0.1:9",
        original_host=b"app.example.com",
        client_ip="10.0.0.1",
        scheme="http",
        body_framing=None,
        upgrade=None,
        identity_headers=None,
        set_headers=rendered,
    )
    lines = head.decode().split("\r\n")
    assert "x-plain: fixed" in lines
    assert "x-token: Bearer at" in lines
    assert "x-cost: $5" in lines
    assert "x-token: forged" not in lines and "x-cost: 0" not in lines
