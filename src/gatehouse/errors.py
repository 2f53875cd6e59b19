"""Every gatehouse exception, each carrying the HTTP status it maps to.

The status says who is at fault (compare h11's ``error_status_hint``); one place,
:mod:`gatehouse.proxy.responses`, turns an exception into a response, and anything
not listed here becomes a 500 with a logged reason. Exception text is for logs only:
it is never shown to a client.

Hierarchy::

    GatehouseError                      500
    ├── ConfigError                     (not an HTTP error: bad configuration)
    ├── ClientError                     4xx: the request is at fault
    │   ├── BadRequest                  400 malformed request
    │   │   └── InvalidPath             400 path that cannot be normalised safely
    │   ├── RequestTimeout              408 request head or body too slow
    │   ├── PayloadTooLarge             413
    │   ├── URITooLong                  414
    │   ├── HeaderTooLarge              431
    │   ├── NotFound                    404 no route matches
    │   ├── MethodNotAllowed            405
    │   ├── UpgradeRefused              403 Upgrade the route does not allow
    │   │   └── CrossOriginUpgrade          403 Upgrade from another site's page (Origin)
    │   ├── Unauthenticated             401 no valid session
    │   │   └── SignInRequired          302 to sign in for browsers, 401 for APIs
    │   └── Forbidden                   403 policy denied
    │       ├── InvalidBearerToken          403 an IdP bearer token failed verification
    │       └── InvalidClientCertificate    495 no valid client certificate (mTLS)
    ├── UpstreamError                   502 the upstream misbehaved
    │   ├── UpstreamConnectError        502 connection refused / DNS / TLS
    │   │   └── UpstreamRefused             502 HTTP/2 stream refused unprocessed (safe to retry)
    │   ├── UpstreamProtocolError       502 garbage instead of HTTP
    │   ├── UpstreamTimeout             504
    │   ├── UpstreamOverloaded          503 circuit breaker open (circuit_breaker_thresholds)
    │   └── NoHealthyUpstream           503 every endpoint unhealthy, no panic mode
    └── ServiceUnavailable              503 a dependency (store, IdP) is down
"""

from __future__ import annotations


class GatehouseError(Exception):
    """Base of all gatehouse errors."""

    status: int = 500
    #: A short, client-safe title for the error page (never the exception text).
    title: str = "Internal Server Error"
    #: A client-safe explanation; empty: the generic one for the status.
    message: str = ""


class ConfigError(GatehouseError):
    """The configuration is invalid; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ClientError(GatehouseError):
    status = 400
    title = "Bad Request"


class BadRequest(ClientError):
    status = 400
    title = "Bad Request"


class InvalidPath(BadRequest):
    """A path that cannot be normalised safely; ``reason`` is a fixed, client-safe phrase
    (never the path itself), shown on the error page."""

    title = "Bad Request: invalid path"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.message = (
            f"gatehouse refused the path of this address: {reason}. "
            "Check the link, or ask the owner of the page that sent you here."
        )


class RequestTimeout(ClientError):
    status = 408
    title = "Request Timeout"


class PayloadTooLarge(ClientError):
    status = 413
    title = "Payload Too Large"


class URITooLong(ClientError):
    status = 414
    title = "URI Too Long"


class HeaderTooLarge(ClientError):
    status = 431
    title = "Request Header Fields Too Large"


class NotFound(ClientError):
    status = 404
    title = "Not Found"


class MethodNotAllowed(ClientError):
    status = 405
    title = "Method Not Allowed"


class UpgradeRefused(ClientError):
    status = 403
    title = "Upgrade Not Allowed"


class CrossOriginUpgrade(UpgradeRefused):
    title = "Cross-Origin Connection Refused"
    message = (
        "This connection was opened by a page of another site (its Origin is not this "
        "address), so it was refused."
    )


class Unauthenticated(ClientError):
    status = 401
    title = "Unauthorized"


class SignInRequired(Unauthenticated):
    """No session where one is needed: browsers are sent to ``location`` to sign in."""

    def __init__(
        self, message: str, location: str | None, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.location = location
        #: Sent with the redirect (the sign-in binding cookie).
        self.headers = headers or []


class Forbidden(ClientError):
    """Policy denied; ``details`` (rule outcomes) are shown only with show_error_details.

    ``user`` (email or id of who is signed in, if anyone), ``route`` (its name) and
    ``session_id`` (for the sign-out form's CSRF token) go on the 403 page.
    """

    status = 403
    title = "Forbidden"

    def __init__(
        self,
        message: str,
        details: list[str] | None = None,
        *,
        user: str | None = None,
        route: str | None = None,
        session_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.details = details
        self.user = user
        self.route = route
        self.session_id = session_id


class InvalidBearerToken(Forbidden):
    """On a ``bearer_token_format: idp_*`` route, ``Authorization: Bearer`` held a token
    that failed verification: 403 without evaluating the policy, as Pomerium answers
    ``ErrInvalidSession`` (``authorize/grpc.go``), never a fall-back to the cookie."""

    title = "Forbidden: invalid bearer token"
    message = "The bearer token of this request was not accepted."


class InvalidClientCertificate(Forbidden):
    """The route needs a valid client certificate and the TLS connection has none
    (Pomerium's 495, ``StatusInvalidClientCertificate``)."""

    status = 495
    title = "Invalid client certificate"
    message = "A valid client certificate is required to access this page."


class UpstreamError(GatehouseError):
    status = 502
    title = "Bad Gateway"


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamRefused(UpstreamConnectError):
    """The upstream did not process the request: an HTTP/2 ``REFUSED_STREAM``, or a
    stream past the last one its ``GOAWAY`` took (RFC 9113 §8.7): safe to send again."""


class UpstreamProtocolError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    status = 504
    title = "Gateway Timeout"


class UpstreamOverloaded(UpstreamError):
    """The route's circuit breaker is open: too many requests in flight and waiting."""

    status = 503
    title = "Service Unavailable"


class NoHealthyUpstream(UpstreamError):
    """Every endpoint failed its health checks or was ejected, and panic mode is off."""

    status = 503
    title = "Service Unavailable"


class ServiceUnavailable(GatehouseError):
    status = 503
    title = "Service Unavailable"
