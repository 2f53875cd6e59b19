"""Pomerium keys that gatehouse has no meaning for: ignored with a warning, or refused.

Every key Pomerium documents (its configuration reference, ``config/options.go`` and
``config/policy.go``) is either an option of the model, with Pomerium's meaning, or listed
here, so that a Pomerium config never meets "unknown key":

- :data:`IGNORED` / :data:`ROUTE_IGNORED`: deployment and tuning keys of Pomerium's
  split services and Envoy. Ignoring them changes nothing about who may reach what, so
  they load with a warning.
- :data:`NOT_SUPPORTED` / :data:`ROUTE_NOT_SUPPORTED`: features gatehouse lacks. Ignoring
  them would change behaviour (a rewrite not done, a check not made), so the loader
  refuses them with ``<key>: not supported by gatehouse (<why>)``.
- :data:`ALWAYS_ON`: switches for what gatehouse always does; ``true`` loads silently,
  ``false`` is refused.
- :data:`ONLY_VALUE`: keys (global and route) whose one supported value is what gatehouse
  always does; that value (any case) loads silently, others are refused.

TLS, upgrade and header-hardening keys are owned by their modules and not listed here.
"""

from __future__ import annotations

from typing import Any

from ..timeslice import Steps, drive

Location = tuple[str | int, ...]

_SPLIT = "gatehouse runs every service in one process"
_ENVOY = "gatehouse has no Envoy"
_DNS = "the system resolver is used"
_TRACING = "tracing is not supported yet"

#: Global keys accepted with a warning (see the module docstring).
IGNORED: dict[str, str] = {
    "authenticate_internal_service_url": _SPLIT,
    "authorize_internal_service_url": _SPLIT,
    "authorize_service_urls": _SPLIT,
    "databroker_internal_service_url": _SPLIT,
    "databroker_service_urls": _SPLIT,
    "databroker_cluster_leader_id": _SPLIT,
    "databroker_cluster_node_id": _SPLIT,
    "databroker_cluster_nodes": _SPLIT,
    "databroker_raft_bind_address": _SPLIT,
    "installation_id": "Pomerium Zero's installation id has no meaning here",
    "override_certificate_name": f"{_SPLIT} (it names the certificate of internal gRPC calls)",
    "tls_derive": f"{_SPLIT} (it derives certificates for internal calls from the shared secret)",
    "debug_address": "gatehouse has no debug listener; see metrics_address",
    "proxy_log_level": f"{_ENVOY}; log_level applies to everything",
    "envoy_admin_address": _ENVOY,
    "envoy_admin_access_log_path": _ENVOY,
    "envoy_admin_profile_path": _ENVOY,
    "envoy_bind_config_source_address": _ENVOY,
    "envoy_bind_config_freebind": _ENVOY,
    "envoy_dynamic_extensions": _ENVOY,
    "health_check_systemd_disabled": "gatehouse sends no systemd notifications",
    "dns_resolvers": _DNS,
    "dns_failure_refresh_rate": _DNS,
    "dns_query_timeout": _DNS,
    "dns_query_tries": _DNS,
    "dns_refresh_rate": _DNS,
    "dns_udp_max_queries": _DNS,
    "dns_use_tcp": _DNS,
    **{
        key: _TRACING
        for key in (
            "otel_traces_exporter",
            "otel_traces_sampler_arg",
            "otel_resource_attributes",
            "otel_log_level",
            "otel_attribute_value_length_limit",
            "otel_exporter_otlp_endpoint",
            "otel_exporter_otlp_traces_endpoint",
            "otel_exporter_otlp_protocol",
            "otel_exporter_otlp_traces_protocol",
            "otel_exporter_otlp_headers",
            "otel_exporter_otlp_traces_headers",
            "otel_exporter_otlp_timeout",
            "otel_exporter_otlp_traces_timeout",
            "otel_bsp_schedule_delay",
            "otel_bsp_max_export_batch_size",
        )
    },
}

#: Route keys accepted with a warning.
ROUTE_IGNORED: dict[str, str] = {
    "tls_upstream_allow_renegotiation": "gatehouse does not renegotiate upstream TLS "
    "(TLS 1.3 has no renegotiation)",
}

_SSH = "SSH routes are not supported"
_MCP = "MCP routes are not supported"
_ENTERPRISE = "a Pomerium Enterprise feature"

#: Global keys refused with "not supported by gatehouse (<why>)".
NOT_SUPPORTED: dict[str, str] = {
    "identity_providers": "one identity provider per gatehouse",
    "runtime_flags": "Pomerium's runtime flags have no gatehouse counterpart",
    "google_cloud_serverless_authentication_service_account": "Google Cloud serverless "
    "authentication is not supported",
    "forward_auth_url": "Pomerium's forward-auth mode was removed in v0.21; put gatehouse in "
    "front of the app as its reverse proxy",
    "policy_file": 'Pomerium removed it too ("policy file setting is deprecated"); '
    "put the routes in the config file under routes",
    "path_with_escaped_slashes_action": "encoded slashes are always refused; see docs/policy.md",
    "blob_storage": _ENTERPRISE,
    "auto_apply_changesets": _ENTERPRISE,
    "session_recording_concurrency": _ENTERPRISE,
    "ssh_address": _SSH,
    "ssh_host_keys": _SSH,
    "ssh_host_key_files": _SSH,
    "ssh_user_ca_key": _SSH,
    "ssh_user_ca_key_file": _SSH,
    "ssh_rls_enabled": _SSH,
    "ssh_rls_additional_entries": _SSH,
    "mcp_allowed_client_id_domains": _MCP,
    "mcp_allowed_as_metadata_domains": _MCP,
}

#: Route keys refused with "not supported by gatehouse (<why>)".
ROUTE_NOT_SUPPORTED: dict[str, str] = {
    "allowed_groups": "removed from Pomerium; write `groups: {has: ...}` in policy",
    "identity_providers": "one identity provider per gatehouse",
    "jwt_groups_filter": "only the global jwt_groups_filter is supported",
    "kubernetes_service_account_token": "no Kubernetes API impersonation",
    "kubernetes_service_account_token_file": "no Kubernetes API impersonation",
    "enable_google_cloud_serverless_authentication": "Google Cloud serverless "
    "authentication is not supported",
    "regex_priority_order": "routes are matched in the order written",
    "max_request_bytes": "only the global max_request_body_bytes is supported",
    "upstream_tunnel": _ENTERPRISE,
    "upstream_oauth2": _MCP,
    "mcp": _MCP,
    "ssh_policy": _SSH,
    "ssh_policy_rego": _SSH,
    "codec_client_type": "upstreams are reached over HTTP/1.1",
}

#: Switches for what gatehouse always does: ``true`` loads, ``false`` is refused.
ALWAYS_ON: dict[str, str] = {
    "normalize_path": "paths are always normalised; see docs/policy.md",
    "merge_slashes": "repeated slashes are always merged; see docs/policy.md",
}


#: Keys with one supported value, Pomerium's default: key → (value, why no other).
ONLY_VALUE: dict[str, tuple[str, str]] = {}


def not_supported(loc: Location) -> str | None:
    """The refusal for an unknown key at ``loc`` (top level or a route), if it is one."""
    key = str(loc[-1])
    only = ONLY_VALUE.get(key)
    if only is not None and (len(loc) == 1 or len(loc) == 3):
        return f"not supported by gatehouse (only `{only[0]}`: {only[1]})"
    if len(loc) == 1:
        why = NOT_SUPPORTED.get(key) or (ALWAYS_ON.get(key) and f"only true: {ALWAYS_ON[key]}")
    elif len(loc) == 3 and loc[0] in ("routes", "policy") and isinstance(loc[1], int):
        why = ROUTE_NOT_SUPPORTED.get(key)
    else:
        why = None
    return f"not supported by gatehouse ({why})" if why else None


#: Routes screened between two points where a sliced load may pause.
SCREEN_ROUTES_PER_STEP = 64


def screen(data: dict[str, Any]) -> list[tuple[Location, str]]:
    """Remove the ignored keys (and ``true`` always-on switches) from ``data``, globally
    and in each route; return a warning for each ignored key, by location."""
    return drive(screen_steps(data))


def screen_steps(data: dict[str, Any]) -> Steps[list[tuple[Location, str]]]:
    """:func:`screen` as a generator pausing every :data:`SCREEN_ROUTES_PER_STEP` routes
    (a reload sliced on the event loop, :mod:`gatehouse.timeslice`)."""
    warnings: list[tuple[Location, str]] = []
    for key in list(data):
        if key in IGNORED:
            del data[key]
            warnings.append(((key,), f"{key} ignored: {IGNORED[key]}"))
        elif key in ALWAYS_ON and data[key] is True:
            del data[key]
        elif _is_only_value(key, data[key]):
            del data[key]
    for section in ("routes", "policy"):
        routes = data.get(section)
        if not isinstance(routes, list):
            continue
        for i, route in enumerate(routes):
            if i % SCREEN_ROUTES_PER_STEP == SCREEN_ROUTES_PER_STEP - 1:
                yield
            if not isinstance(route, dict):
                continue
            for key in list(route):
                if _is_only_value(key, route[key]):
                    del route[key]
                elif key in ROUTE_IGNORED:
                    del route[key]
                    warnings.append(
                        ((section, i, key), f"{section}[{i}].{key} ignored: {ROUTE_IGNORED[key]}")
                    )
    return warnings


def _is_only_value(key: str, value: Any) -> bool:
    only = ONLY_VALUE.get(key)
    return only is not None and isinstance(value, str) and value.strip().lower() == only[0]
