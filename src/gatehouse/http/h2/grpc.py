"""gRPC status for responses gatehouse makes itself (deny, sign-in, upstream errors).

A gRPC client reads the outcome of a call from the ``grpc-status`` trailer, not from the
HTTP status, so a plain ``403`` reaches it as ``UNKNOWN``. As Envoy does for its local
replies (``Grpc::Utility::httpToGrpcStatus``), gatehouse answers a gRPC request with a
trailers-only response: HTTP 200, ``content-type: application/grpc`` and the mapped
``grpc-status`` (https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md).

One departure from that table: gatehouse's 504 always means the route's timeout passed,
so it becomes DEADLINE_EXCEEDED, not UNAVAILABLE (which invites the client to retry at
once); Envoy's router made the same change (envoyproxy/envoy#10184, #44479).
"""

from __future__ import annotations

from urllib.parse import quote

from ..messages import RequestHead

#: HTTP status → gRPC status code (doc/http-grpc-status-mapping.md; Envoy's mapping).
_HTTP_TO_GRPC = {
    400: 13,  # INTERNAL
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 12,  # UNIMPLEMENTED
    429: 14,  # UNAVAILABLE
    502: 14,
    503: 14,
    504: 4,  # DEADLINE_EXCEEDED: the route's timeout (see the module docstring)
}
UNKNOWN = 2


def is_grpc(head: RequestHead) -> bool:
    """True for a gRPC call (``content-type: application/grpc[+proto|...]``)."""
    ctype = head.get(b"content-type")
    return ctype is not None and ctype[:16].lower() == b"application/grpc"


def grpc_status_for(http_status: int) -> int:
    return _HTTP_TO_GRPC.get(http_status, UNKNOWN)


def grpc_message(text: str) -> bytes:
    """Percent-encode a ``grpc-message`` value (gRPC HTTP/2 protocol, "Responses")."""
    return quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii")
