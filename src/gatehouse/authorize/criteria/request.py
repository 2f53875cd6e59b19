"""Criteria on the request: ``http_method``, ``http_path`` (string matchers), ``source_ip``.

``http_path`` sees the normalised path (the one the upstream receives) and compares it
case-sensitively. ``source_ip`` takes an address or CIDR, or a list of them, IPv4 or
IPv6; an IPv4-mapped IPv6 client address (``::ffff:10.0.0.1``) is matched as IPv4.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..decision import CriterionOutcome
from ..input import PolicyInput
from ..matchers import compile_string_matcher
from ..problems import Loc, PolicySyntaxError
from .base import Criterion, no_sub_path, request_criterion

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def compile_http_method(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("http_method", sub_path, loc)
    pred = compile_string_matcher(data, loc)
    return request_criterion(
        "http-method-ok", "http-method-unauthorized", lambda inp: pred(inp.method)
    )


def compile_http_path(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("http_path", sub_path, loc)
    pred = compile_string_matcher(data, loc)
    return request_criterion("http-path-ok", "http-path-unauthorized", lambda inp: pred(inp.path))


def parse_networks(data: Any, loc: Loc) -> tuple[IPNetwork, ...]:
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PolicySyntaxError(loc, "expected an IP address or CIDR, or a list of them")
    nets = []
    for i, item in enumerate(items):
        where = (*loc, i) if isinstance(data, list) else loc
        if not isinstance(item, str):
            raise PolicySyntaxError(where, "expected an IP address or CIDR as a string")
        try:
            # strict: 10.0.0.1/8 is almost certainly a typo for 10.0.0.0/8 or 10.0.0.1/32.
            nets.append(ipaddress.ip_network(item.strip(), strict=True))
        except ValueError as exc:
            raise PolicySyntaxError(where, f"invalid IP address or CIDR {item!r}: {exc}") from None
    return tuple(nets)


_IP_OK: CriterionOutcome = (True, "source-ip-ok")
_IP_NO: CriterionOutcome = (False, "source-ip-unauthorized")


def compile_source_ip(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("source_ip", sub_path, loc)
    nets = parse_networks(data, loc)
    v4 = tuple(n for n in nets if n.version == 4)
    v6 = tuple(n for n in nets if n.version == 6)

    def run(inp: PolicyInput) -> CriterionOutcome:
        text = inp.source_ip
        if not text:
            return _IP_NO
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return _IP_NO
        if addr.version == 6:
            mapped = addr.ipv4_mapped  # type: ignore[union-attr]
            if mapped is None:
                return _IP_OK if any(addr in n for n in v6) else _IP_NO
            addr = mapped
        return _IP_OK if any(addr in n for n in v4) else _IP_NO

    return run
