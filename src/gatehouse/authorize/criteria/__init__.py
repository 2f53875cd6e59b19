"""The registry of PPL criteria: name -> compiler (one criterion family per module)."""

from __future__ import annotations

from .base import UNAUTHENTICATED, Criterion, CriterionCompiler
from .certificate import compile_client_certificate, compile_invalid_client_certificate
from .claims import compile_claim, compile_groups
from .request import compile_http_method, compile_http_path, compile_source_ip
from .schedule import compile_date, compile_day_of_week, compile_time_of_day
from .simple import (
    compile_accept,
    compile_authenticated_user,
    compile_cors_preflight,
    compile_reject,
)
from .user import compile_domain, compile_email, compile_user

CRITERIA: dict[str, CriterionCompiler] = {
    "accept": compile_accept,
    "reject": compile_reject,
    "authenticated_user": compile_authenticated_user,
    "cors_preflight": compile_cors_preflight,
    "email": compile_email,
    "domain": compile_domain,
    "user": compile_user,
    "claim": compile_claim,
    "groups": compile_groups,
    "http_method": compile_http_method,
    "http_path": compile_http_path,
    "source_ip": compile_source_ip,
    "date": compile_date,
    "day_of_week": compile_day_of_week,
    "time_of_day": compile_time_of_day,
    "client_certificate": compile_client_certificate,
    "invalid_client_certificate": compile_invalid_client_certificate,
}

#: Pomerium criteria gatehouse does not implement (yet), with the reason.
UNSUPPORTED: dict[str, str] = {
    "device": "device identity is a Pomerium Enterprise feature gatehouse does not have",
    "pomerium_routes": "internal routes are always reachable in gatehouse",
    "record": "external data sources (databroker records) are not supported",
    "mcp_tool": "MCP routes are not supported by gatehouse",
    "ssh_username": "SSH routes are not supported by gatehouse",
    "ssh_publickey": "SSH routes are not supported by gatehouse",
    "ssh_username_matches_email": "SSH routes are not supported by gatehouse",
    "ssh_username_matches_claim": "SSH routes are not supported by gatehouse",
}

__all__ = ["CRITERIA", "UNAUTHENTICATED", "UNSUPPORTED", "Criterion", "CriterionCompiler"]
