"""Pomerium route and global keys with gatehouse meaning: how they are validated."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gatehouse.config.loader import load_text
from gatehouse.errors import ConfigError


def load(route: dict[str, Any] | None = None, **top: Any) -> Any:
    data: dict[str, Any] = {"insecure_server": True, **top}
    if route is not None:
        data["routes"] = [{"from": "http://a.test", "to": "http://b:1", **route}]
    return load_text(yaml.safe_dump(data), "c.yaml", env={})


def problem(route: dict[str, Any] | None = None, **top: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(route, **top)
    (only,) = info.value.problems
    return str(only)


def test_policy_file_refused_as_pomerium_does() -> None:
    text = problem(policy_file="/etc/pomerium/policy.yaml")
    assert "policy_file: not supported by gatehouse (Pomerium removed it too" in text


def test_rewrite_response_headers_loaded() -> None:
    rules = [{"header": "Location", "prefix": "http://in/", "value": "https://out/"}]
    route = load({"rewrite_response_headers": rules}).options.routes[0]
    assert route.rewrite_response_headers[0].header == "Location"
    assert route.rewrite_response_headers[0].value == "https://out/"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"header": "Bad Name", "value": "x"}, "is not a header name"),
        ({"header": "Location", "value": "x\r\ny: z"}, "must not contain CR, LF or NUL"),
        ({"prefix": "x"}, "header: Field required"),
        ({"header": "Location", "values": "x"}, "values"),
    ],
)
def test_rewrite_response_headers_refused(rule: dict[str, Any], message: str) -> None:
    text = problem({"rewrite_response_headers": [rule]})
    assert "routes[0].rewrite_response_headers[0]" in text and message in text, text


def test_host_rewrite_header_must_be_a_header_name() -> None:
    assert "is not a header name" in problem({"host_rewrite_header": "x:y"})


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            {"host_rewrite_header": "X-Host", "preserve_host_header": True},
            "use only one way to set the upstream Host (has preserve_host_header, "
            "host_rewrite_header)",
        ),
        (
            {
                "host_rewrite": "x",
                "host_path_regex_rewrite_pattern": "a",
                "host_path_regex_rewrite_substitution": "b",
            },
            "(has host_rewrite, host_path_regex_rewrite_pattern)",
        ),
        ({"host_path_regex_rewrite_pattern": "a"}, "go together"),
        (
            {
                "host_path_regex_rewrite_pattern": "^/(a)$",
                "host_path_regex_rewrite_substitution": "\\2",
            },
            "refers to group \\2; the pattern has 1",
        ),
        (
            {
                "host_path_regex_rewrite_pattern": "^/(a)$",
                "host_path_regex_rewrite_substitution": "\\n",
            },
            "a backslash must be followed by a digit or a backslash",
        ),
    ],
)
def test_host_rewrite_conflicts_and_substitutions(route: dict[str, Any], message: str) -> None:
    assert message in problem(route)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("^/(?=admin)", "lookaround"),
        ("^/(a)\\1$", "backreferences are not RE2 syntax"),
        ("^/(?>a)", "atomic groups"),
        ("^/a++", "possessive"),
        ("^/[[:alpha:]]+", "POSIX classes"),
        ("^/\\pL+", "Unicode classes"),
        ("^/a\\z", "write \\Z"),
        ("^/(?<n>a)", "write (?P<name>...)"),
        ("^/(", "invalid regular expression"),
    ],
)
def test_host_path_pattern_is_read_as_re2(pattern: str, message: str) -> None:
    text = problem(
        {"host_path_regex_rewrite_pattern": pattern, "host_path_regex_rewrite_substitution": "x"}
    )
    assert "routes[0].host_path_regex_rewrite_pattern" in text and message in text, text


def test_host_path_pattern_escaped_backslash_is_literal() -> None:
    # The pattern ``^/a\\z$`` is a literal backslash then "z" (not RE2's ``\z``): accepted.
    route = {
        "host_path_regex_rewrite_pattern": "^/a\\\\z$",
        "host_path_regex_rewrite_substitution": "h",
    }
    assert load(route).options.routes[0].host_path_regex_rewrite_pattern == "^/a\\\\z$"


def test_log_fields_loaded() -> None:
    options = load(
        access_log_fields=["method", "headers.X-Foo", "headers"],
        authorize_log_fields="request-id,email,removed-groups-count,body,mcp-tool",
    ).options
    assert options.access_log_fields == ["method", "headers.X-Foo", "headers"]
    assert options.authorize_log_fields == [
        "request-id",
        "email",
        "removed-groups-count",
        "body",
        "mcp-tool",
    ]
    assert load().options.access_log_fields is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "access_log_fields",
            ["methd"],
            "unknown access_log_fields field 'methd'; expected one of",
        ),
        ("access_log_fields", ["client-certificate"], "'client-certificate' is not supported"),
        ("access_log_fields", ["headers.Bad Name"], "is not a header name"),
        ("authorize_log_fields", ["id-token"], "gatehouse never logs tokens"),
        ("authorize_log_fields", ["id_token"], "unknown authorize_log_fields field"),
        ("authorize_log_fields", ["nope"], "headers or headers.<Name>"),
    ],
)
def test_log_fields_refused(key: str, value: list[str], message: str) -> None:
    text = problem(**{key: value})
    assert text.startswith(f"c.yaml:1: {key}: ") and message in text, text


@pytest.mark.parametrize(
    ("route", "policy"),
    [
        ({"load_balancing_policy": "LEAST_REQUEST"}, "LEAST_REQUEST"),
        ({"load_balancing_policy": "LOAD_BALANCING_POLICY_MAGLEV"}, "MAGLEV"),
        ({"lb_policy": "ring_hash", "ring_hash_lb_config": {"minimum_ring_size": 64}}, "RING_HASH"),
        (
            {"lb_policy": "LEAST_REQUEST", "least_request_lb_config": {"choice_count": 3}},
            "LEAST_REQUEST",
        ),
        ({}, "ROUND_ROBIN"),
    ],
)
def test_load_balancing_policy_names(route: dict[str, Any], policy: str) -> None:
    assert load(route).options.routes[0].balancing_policy == policy


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"load_balancing_policy": "FASTEST"}, "load_balancing_policy: Input should be"),
        ({"lb_policy": "RANDOM", "load_balancing_policy": "MAGLEV"}, "disagree"),
        ({"maglev_lb_config": {"table_size": 65537}}, "maglev_lb_config is for"),
        (
            {"load_balancing_policy": "MAGLEV", "maglev_lb_config": {"table_size": 65536}},
            "table_size must be a prime number",
        ),
        (
            {
                "health_checks": [
                    {
                        "timeout": "1s",
                        "interval": "5s",
                        "unhealthy_threshold": 1,
                        "healthy_threshold": 1,
                        "tcp_health_check": {},
                    }
                ]
            },
            "tcp_health_check is not supported by gatehouse (HTTP and gRPC checks only)",
        ),
        (
            {
                "health_checks": [
                    {
                        "timeout": "1s",
                        "interval": "5s",
                        "healthy_threshold": 1,
                        "http_health_check": {"path": "/"},
                    }
                ]
            },
            "unhealthy_threshold: Field required",
        ),
        (
            {
                "health_checks": [
                    {
                        "timeout": "1s",
                        "interval": "5s",
                        "unhealthy_threshold": 1,
                        "healthy_threshold": 1,
                        "http_health_check": {"path": "/", "codec_client_type": "HTTP3"},
                    }
                ]
            },
            "'HTTP3' is not supported by gatehouse",
        ),
        (
            {
                "health_checks": [
                    {
                        "timeout": "1s",
                        "interval": "5s",
                        "unhealthy_threshold": 1,
                        "healthy_threshold": 1,
                        "http_health_check": {
                            "path": "/",
                            "expected_statuses": [{"start": 300, "end": 200}],
                        },
                    }
                ]
            },
            "end must be greater than start",
        ),
        ({"outlier_detection": {"enforcing_failure_percentage": 5}}, "not supported by gatehouse"),
        ({"outlier_detection": {"consecutive_5xx": 0}}, "greater than or equal to 1"),
        ({"healthy_panic_threshold": 101}, "less than or equal to 100"),
    ],
)
def test_balancing_keys_refused(route: dict[str, Any], message: str) -> None:
    text = problem(route)
    assert text.startswith("c.yaml:") and "routes[0]" in text and message in text, text


def test_health_check_defaults() -> None:
    check = {
        "timeout": "2s",
        "interval": "10s",
        "unhealthy_threshold": 3,
        "healthy_threshold": 2,
        "http_health_check": {"path": "/healthz"},
    }
    route = load({"health_checks": [check], "outlier_detection": {}}).options.routes[0]
    (hc,) = route.health_checks
    assert (hc.timeout, hc.interval, hc.unhealthy_interval) == (2.0, 10.0, None)
    assert route.outlier_detection is not None
    assert route.outlier_detection.consecutive_5xx == 5  # Envoy's defaults
    assert route.outlier_detection.base_ejection_time == 30.0
    assert route.outlier_detection.max_ejection_percent == 10
