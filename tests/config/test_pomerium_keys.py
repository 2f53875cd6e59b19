"""Pomerium keys without a gatehouse meaning: warned, refused by name, never "unknown key"."""

from __future__ import annotations

import pytest

from gatehouse.config.loader import load_text
from gatehouse.config.options import sign_in_checks
from gatehouse.errors import ConfigError

BASE = "insecure_server: true\n"
ROUTE = "routes:\n- from: https://a.example.com\n  to: http://b:80\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "c.yaml", env={})
    return list(info.value.problems)


def test_global_key_refused_by_name() -> None:
    (problem,) = problems(BASE + "blob_storage: {}\n")
    assert problem.startswith("c.yaml:2: blob_storage: not supported by gatehouse (")


def test_route_key_refused_by_name() -> None:
    (problem,) = problems(BASE + ROUTE + "  jwt_groups_filter: [x]\n")
    assert "c.yaml:5: routes[0].jwt_groups_filter: not supported by gatehouse (" in problem


def test_tuning_keys_load_with_a_warning() -> None:
    loaded = load_text(BASE + "dns_use_tcp: true\n" + ROUTE + "  logo_url: x.png\n", env={})
    # logo_url is shown on the routes portal, so it is a real option, not a warning.
    assert [w.split(": ", 1)[1].split(" ignored")[0] for w in loaded.warnings] == [
        "dns_use_tcp"
    ]


def test_always_on_switches() -> None:
    assert load_text(BASE + "normalize_path: true\nmerge_slashes: true\n", env={}).warnings == ()
    (problem,) = problems(BASE + "merge_slashes: false\n")
    assert "merge_slashes: not supported by gatehouse (only true:" in problem


def test_tcp_and_ssh_routes_named() -> None:
    text = BASE + "routes:\n- from: tcp+https://redis.example.com:6379\n  to: http://r:1\n"
    assert "tcp+https:// routes are not supported by gatehouse" in problems(text)[0]


@pytest.mark.parametrize(
    ("key", "value", "attr", "expected"),
    [
        ("cookie_same_site", "Lax", "cookie_same_site", "lax"),
        ("databroker_storage_type", "MEMORY", "databroker_storage_type", "memory"),
        ("idp_provider", "Google", "idp_provider", "google"),
        ("jwt_issuer_format", "URI", "jwt_issuer_format", "uri"),
        ("log_level", "INFO", "log_level", "info"),
    ],
)
def test_enum_values_in_any_case(key: str, value: str, attr: str, expected: str) -> None:
    options = load_text(f"{BASE}{key}: {value}\n", env={}).options
    assert getattr(options, attr) == expected


def test_bearer_token_format_and_audiences_global_and_per_route() -> None:
    # Pomerium's three values, any case; the route's value and list win over the global ones.
    text = (
        BASE
        + "bearer_token_format: IDP_Access_Token\n"
        + "idp_access_token_allowed_audiences: [api://one, api://two]\n"
        + ROUTE
        + "  bearer_token_format: idp_identity_token\n"
        + "- from: https://c.example.com\n  to: http://b:80\n"
        + "  idp_access_token_allowed_audiences: api://three\n"
        + "- from: https://d.example.com\n  to: http://b:80\n"
        + "  bearer_token_format: default\n"
    )
    loaded = load_text(text, env={})
    assert loaded.warnings == ()
    options = loaded.options
    first, second, third = options.all_routes
    assert options.route_bearer_token_format(first) == "idp_identity_token"
    assert options.route_bearer_token_format(second) == "idp_access_token"
    assert options.route_bearer_token_format(third) == "default"
    assert options.route_access_token_audiences(first) == ("api://one", "api://two")
    assert options.route_access_token_audiences(second) == ("api://three",)
    assert load_text(BASE + ROUTE, env={}).options.bearer_token_format == "default"


@pytest.mark.parametrize(
    ("value", "expected"),
    [  # Pomerium's table (config/custom_test.go), `jwt` apart
        ('""', "default"),
        ("unknown", "default"),
        ("default", "default"),
        ("idp_access_token", "idp_access_token"),
        ("idp_identity_token", "idp_identity_token"),
    ],
)
def test_bearer_token_format_values(value: str, expected: str) -> None:
    text = BASE + "bearer_token_format: idp_access_token\n" + ROUTE
    text += f"  bearer_token_format: {value}\n"
    options = load_text(text, env={}).options
    # Set on the route (even to unknown), it overrides the global value, as in Pomerium.
    assert options.route_bearer_token_format(options.routes[0]) == expected
    global_only = load_text(f"{BASE}bearer_token_format: {value}\n", env={}).options
    assert global_only.bearer_token_format == expected


def test_bearer_token_format_other_values_refused() -> None:
    # Pomerium's newer `jwt` (tokens of its identity_providers) is not a gatehouse value.
    (problem,) = problems(BASE + "bearer_token_format: jwt\n")
    assert problem.startswith("c.yaml:2: bearer_token_format:")
    assert "idp_identity_token" in problem


def test_bearer_token_format_needs_an_identity_provider() -> None:
    text = BASE + "bearer_token_format: idp_identity_token\n" + ROUTE
    text += "  bearer_token_format: idp_access_token\n"
    found = sign_in_checks(load_text(text, env={}).options)
    assert found == [
        (("bearer_token_format",), "idp_provider is required to verify IdP tokens"),
        (("routes", 0, "bearer_token_format"), "idp_provider is required to verify IdP tokens"),
    ]


def test_autocert_trusted_ca_in_one_form_only() -> None:
    (problem,) = problems(BASE + "autocert_trusted_ca: a.pem\nautocert_trusted_ca_file: b.pem\n")
    assert "use either autocert_trusted_ca or autocert_trusted_ca_file, not both" in problem
