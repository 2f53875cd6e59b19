"""The facts a policy is evaluated against: :class:`PolicyInput`.

Built once per request by the proxy pipeline (and by the dry run). It holds only what
criteria read, already in canonical form: the path is the normalised path that the
upstream will receive (:func:`gatehouse.proxy.paths.normalize_path`), so a rule about
``/admin`` and the upstream always see the same spelling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..sessions.model import Session


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """One request as the policy sees it."""

    #: Request method as sent (methods are case-sensitive, RFC 9110 §9.1).
    method: str
    #: The normalised path, without the query string.
    path: str
    #: The client address (IPv4 or IPv6 text); "" when unknown (never matches source_ip).
    source_ip: str = ""
    #: The signed-in user's session, or None for an anonymous request.
    session: Session | None = None
    #: Request time: a Unix time in seconds or a timezone-aware datetime.
    now: float | datetime = field(default_factory=time.time)
    #: The ``Origin`` request header ("" when absent), for ``cors_preflight``.
    origin: str = ""
    #: The ``Access-Control-Request-Method`` request header ("" when absent).
    access_control_request_method: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.now, datetime) and self.now.utcoffset() is None:
            raise ValueError("PolicyInput.now must be timezone-aware")

    def timestamp(self) -> float:
        """The request time as a Unix time in seconds."""
        now = self.now
        return now.timestamp() if isinstance(now, datetime) else float(now)

    def datetime_utc(self) -> datetime:
        """The request time as an aware UTC datetime."""
        now = self.now
        if isinstance(now, datetime):
            return now.astimezone(UTC)
        return datetime.fromtimestamp(float(now), UTC)
