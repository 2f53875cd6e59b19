"""Passive ejection of failing endpoints (Pomerium's ``outlier_detection``, Envoy's
``OutlierDetection``, with ``split_external_local_origin_errors`` false).

Every proxied response is recorded: a 5xx, or a request that got no response (refused
or failed connection, timeout, garbage), counts towards ``consecutive_5xx``; a 502, 503,
504 or no response towards ``consecutive_gateway_failure``; anything else resets both.
Reaching a threshold ejects the endpoint (with the ``enforcing_*`` % chance) for
``base_ejection_time`` times the number of times it was ejected, at most
``max_ejection_time``, unless ``max_ejection_percent`` of the endpoints are out already
(one may always be ejected, as in current Envoy). Every ``interval`` a sweep returns
endpoints whose time is up, lowers the multiplier of endpoints that stayed in, and runs
success-rate ejection: when at least ``success_rate_minimum_hosts`` endpoints had
``success_rate_request_volume`` requests, those whose success rate is below
mean - (``success_rate_stdev_factor`` / 1000) * standard deviation are ejected.
The sweep runs from the request path (on the first pick after it is due): no task.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from ..config.upstream_health import OutlierDetection

if TYPE_CHECKING:
    from .balancer import Target

#: The status recorded for a request that got no response (Envoy maps local-origin
#: failures to 503 when they are not split out).
NO_RESPONSE = 503


class Outliers:
    """The ejection state of one balancer's endpoints."""

    __slots__ = ("_rng", "config", "next_sweep", "targets")

    def __init__(self, config: OutlierDetection, targets: list[Target], now: float) -> None:
        self.config = config
        self.targets = targets
        self.next_sweep = now + config.interval
        self._rng = random.Random()

    def record(self, target: Target, status: int, now: float) -> None:
        """One response (or ``NO_RESPONSE``) from ``target``."""
        config = self.config
        target.requests += 1
        if status >= 500:
            target.consecutive_5xx += 1
            if status in (502, 503, 504):
                target.consecutive_gateway += 1
            else:
                target.consecutive_gateway = 0
        else:
            target.successes += 1
            target.consecutive_5xx = 0
            target.consecutive_gateway = 0
            return
        if target.ejected_until > now:
            return
        if target.consecutive_5xx >= config.consecutive_5xx and self._enforce(
            config.enforcing_consecutive_5xx
        ):
            self.eject(target, now)
        elif target.consecutive_gateway >= config.consecutive_gateway_failure and self._enforce(
            config.enforcing_consecutive_gateway_failure
        ):
            self.eject(target, now)

    def _enforce(self, percent: int) -> bool:
        return percent >= 100 or (percent > 0 and self._rng.random() * 100 < percent)

    def eject(self, target: Target, now: float) -> bool:
        """Eject ``target`` unless ``max_ejection_percent`` are out already."""
        config = self.config
        out = sum(1 for t in self.targets if t.ejected_until > now)
        if out >= 1 and (out + 1) * 100 > config.max_ejection_percent * len(self.targets):
            return False
        target.ejections += 1
        cap = max(config.base_ejection_time, config.max_ejection_time)
        target.ejected_until = now + min(config.base_ejection_time * target.ejections, cap)
        target.consecutive_5xx = 0
        target.consecutive_gateway = 0
        return True

    def sweep(self, now: float) -> None:
        """The periodic pass: un-eject, decay multipliers, success-rate ejection."""
        config = self.config
        self.next_sweep = now + config.interval
        for target in self.targets:
            if target.ejected_until and target.ejected_until <= now:
                target.ejected_until = 0.0
            elif not target.ejected_until and target.ejections > 0:
                target.ejections -= 1
        judged = [t for t in self.targets if t.requests >= config.success_rate_request_volume]
        if config.enforcing_success_rate and len(judged) >= config.success_rate_minimum_hosts:
            rates = [t.successes / t.requests for t in judged]
            mean = sum(rates) / len(rates)
            stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
            floor = mean - (config.success_rate_stdev_factor / 1000) * stdev
            for target, rate in zip(judged, rates, strict=True):
                if rate < floor and target.ejected_until <= now:
                    if self._enforce(config.enforcing_success_rate):
                        self.eject(target, now)
        for target in self.targets:
            target.requests = 0
            target.successes = 0
