"""The facts a policy is evaluated against: :class:`PolicyInput`.

Built once per request by the proxy pipeline (and by the dry run). It holds only what
criteria read, already in canonical form: the path is the normalised path that the
upstream will receive (:func:`gatehouse.proxy.paths.normalize_path`), so a rule about
``/admin`` and the upstream always see the same spelling.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from ..sessions.model import Session
from .client_cert import ClientCertificate


class PolicyInput:
    """One request as the policy sees it (read-only by convention).

    A plain slotted class, not a frozen dataclass: one is built per request, and mypyc
    compiles this to a C struct (a frozen dataclass's ``__init__`` ran as Python).
    """

    __slots__ = (
        "access_control_request_method",
        "client_certificate",
        "client_certificate_valid",
        "method",
        "now",
        "origin",
        "path",
        "session",
        "source_ip",
    )

    def __init__(
        self,
        method: str,
        path: str,
        source_ip: str = "",
        session: Session | None = None,
        now: float | datetime | None = None,
        origin: str = "",
        access_control_request_method: str = "",
        client_certificate: ClientCertificate | None = None,
        client_certificate_valid: bool = True,
    ) -> None:
        #: Request method as sent (methods are case-sensitive, RFC 9110 §9.1).
        self.method = method
        #: The normalised path, without the query string.
        self.path = path
        #: The client address (IPv4 or IPv6 text); "" when unknown (never matches source_ip).
        self.source_ip = source_ip
        #: The signed-in user's session, or None for an anonymous request.
        self.session = session
        if isinstance(now, datetime) and now.utcoffset() is None:
            raise ValueError("PolicyInput.now must be timezone-aware")
        #: Request time: a Unix time in seconds or a timezone-aware datetime (default: now).
        self.now: float | datetime = time.time() if now is None else now
        #: The ``Origin`` request header ("" when absent), for ``cors_preflight``.
        self.origin = origin
        #: The ``Access-Control-Request-Method`` request header ("" when absent).
        self.access_control_request_method = access_control_request_method
        #: The leaf the client sent in the TLS handshake (valid or not), or None.
        self.client_certificate = client_certificate
        #: Whether it is valid for the route's client CA (True on a route without one,
        #: as in Pomerium: there is nothing to be valid for).
        self.client_certificate_valid = client_certificate_valid

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
