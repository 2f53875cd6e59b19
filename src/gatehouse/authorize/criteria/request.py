"""Criteria on the request: ``http_method``, ``http_path`` (string matchers), ``source_ip``.

``http_path`` sees the normalised path (the one the upstream receives) and compares it
case-sensitively. ``source_ip`` takes an address or CIDR, or a list of them, IPv4 or
IPv6. As in Pomerium, a CIDR may have host bits set (``192.168.1.1/24`` is
``192.168.1.0/24``), and IPv4-mapped IPv6 is IPv4 on both sides: a client at
``::ffff:10.0.0.1`` is ``10.0.0.1``, and ``::ffff:10.0.0.0/104`` is ``10.0.0.0/8``.
"""

from __future__ import annotations

import functools
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
            # Not strict: Pomerium (Go's net.ParseCIDR) masks host bits away.
            nets.append(_unmapped(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError as exc:
            raise PolicySyntaxError(where, f"invalid IP address or CIDR {item!r}: {exc}") from None
    return tuple(nets)


_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(net: IPNetwork) -> IPNetwork:
    """An IPv4-mapped IPv6 network as the IPv4 network it maps (clients are unmapped too)."""
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_V4_MAPPED):
        first = net.network_address.ipv4_mapped
        if first is not None:
            return ipaddress.IPv4Network((int(first), net.prefixlen - 96))
    return net


_IP_OK: CriterionOutcome = (True, "source-ip-ok")
_IP_NO: CriterionOutcome = (False, "source-ip-unauthorized")


@functools.lru_cache(maxsize=4096)
def _client_address(text: str) -> tuple[int, int] | None:
    """``(version, integer)`` of a client address, IPv4-mapped IPv6 read as IPv4.

    Cached: parsing with :mod:`ipaddress` costs microseconds, and clients repeat."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


def compile_source_ip(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("source_ip", sub_path, loc)
    nets = parse_networks(data, loc)
    # (network integer, mask integer) per version: membership is two integer operations,
    # against about 1 µs for ipaddress's `in`.
    v4 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 4)
    v6 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 6)

    def run(inp: PolicyInput) -> CriterionOutcome:
        parsed = _client_address(inp.source_ip) if inp.source_ip else None
        if parsed is None:
            return _IP_NO
        version, value = parsed
        for net, mask in v4 if version == 4 else v6:
            if value & mask == net:
                return _IP_OK
        return _IP_NO

    return run
