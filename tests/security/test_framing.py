"""Framing and request smuggling over raw sockets.

The attack: make gatehouse and the upstream disagree on where a request ends, so that
bytes gatehouse treats as a body reach the upstream as a second request that no policy
checked. Every case here carries a smuggled request for ``/smuggled`` (or ``/admin`` on
a host whose policy forbids it) and asserts the upstream never received it: not as a
request, and not as bytes of any request it did receive. gatehouse re-frames every
body it forwards (its own ``content-length`` or chunking, never the client's), and
llhttp in strict mode refuses ambiguous framing with 400, after which the connection
is closed: nothing pipelined behind a framing error is read.
"""

from __future__ import annotations

import pytest

from support.client import RawConnection

from .conftest import Stack, raw, statuses

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: pub.localhost\r\nConnection: close\r\n\r\n"
END = b"GET /end HTTP/1.1\r\nHost: pub.localhost\r\nConnection: close\r\n\r\n"


def _never_smuggled(stack: Stack) -> None:
    for req in stack.seen():
        assert "smuggled" not in req.target
        assert b"smuggled" not in req.body
    assert b"/smuggled" not in stack.app.raw_bytes


def _req(head: bytes, body: bytes = b"", line: bytes = b"POST / HTTP/1.1") -> bytes:
    """``line``, ``Host: pub.localhost``, the ``head`` lines, a blank line, ``body``, then
    the smuggled request."""
    return line + b"\r\nHost: pub.localhost\r\n" + head + b"\r\n" + body + SMUGGLED


CHUNKED = b"Transfer-Encoding: chunked\r\n"

#: Requests whose framing is ambiguous: each must be refused with 400 and reach nobody.
AMBIGUOUS = {
    "cl-and-te": _req(b"Content-Length: 4\r\n" + CHUNKED, b"0\r\n\r\n"),
    "te-and-cl": _req(CHUNKED + b"Content-Length: 48\r\n", b"0\r\n\r\n"),
    "duplicate-cl-differing": _req(b"Content-Length: 0\r\nContent-Length: 48\r\n"),
    "cl-list": _req(b"Content-Length: 0, 48\r\n"),
    "cl-plus-sign": _req(b"Content-Length: +48\r\n"),
    "cl-negative": _req(b"Content-Length: -1\r\n"),
    "cl-hex": _req(b"Content-Length: 0x30\r\n"),
    "te-not-chunked-last": _req(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
    "te-xchunked": _req(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    "te-space-before-colon": _req(
        b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"
    ),
    "te-obs-fold": _req(b"Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
    "obs-fold-any-header": _req(b"X-A: a\r\n b\r\n", line=b"GET / HTTP/1.1"),
    "bare-lf-line-end": b"GET / HTTP/1.1\nHost: pub.localhost\nX-A: a\n\n" + SMUGGLED,
    "bare-cr-in-header": _req(b"X-A: a\rX-B: b\r\n", line=b"GET / HTTP/1.1"),
    "nul-in-header": _req(b"X-A: a\x00b\r\n", line=b"GET / HTTP/1.1"),
    "space-in-header-name": _req(b"X A: b\r\n", line=b"GET / HTTP/1.1"),
    "chunk-size-0x": _req(CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-overflow": _req(CHUNKED, b"ffffffffffffffffff1\r\nx\r\n0\r\n\r\n"),
    "chunk-size-negative": _req(CHUNKED, b"-1\r\nx\r\n0\r\n\r\n"),
    "chunk-missing-crlf": _req(CHUNKED, b"5\r\nhelloXX0\r\n\r\n"),
    "chunk-ext-bare-lf": _req(CHUNKED, b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
    "two-hosts": _req(b"Host: only.localhost\r\n", line=b"GET / HTTP/1.1"),
    "no-host-1.1": b"GET / HTTP/1.1\r\n\r\n" + SMUGGLED,
    "request-line-extra-token": _req(b"", line=b"GET / HTTP/1.1 x"),
    "http-2.0-version": _req(b"", line=b"GET / HTTP/2.0"),
    "http-0.9": b"GET /\r\n\r\n" + SMUGGLED,
    "lowercase-method": _req(b"", line=b"get / HTTP/1.1"),
    "connect-method": _req(b"", line=b"CONNECT pub.localhost:80 HTTP/1.1"),
    "expect-unsupported": _req(b"Expect: 200-ok\r\nContent-Length: 0\r\n"),
}


@pytest.mark.parametrize("payload", list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
def test_ambiguous_framing_is_refused_and_nothing_behind_it_is_read(
    fresh: Stack, payload: bytes
) -> None:
    response, out = raw(fresh.port, payload)
    assert response is not None, out
    assert 400 <= response.status < 500, out[:300]
    assert statuses(out) == [response.status]  # the smuggled request got no answer
    assert response.header("connection") == "close"
    _never_smuggled(fresh)
    # Framing errors are refused before routing: the upstream saw nothing at all.
    assert fresh.app.requests == []


def test_body_bytes_are_never_read_as_a_request_upstream(fresh: Stack) -> None:
    """A body that looks like a request arrives upstream as body bytes inside gatehouse's
    own framing, never as a request of its own."""
    body = SMUGGLED
    data = (
        b"POST /x HTTP/1.1\r\nHost: pub.localhost\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    _, out = raw(fresh.port, data + END)
    assert statuses(out) == [200, 200]
    assert [r.target for r in fresh.app.requests] == ["/x", "/end"]
    assert fresh.app.requests[0].body == body
    assert fresh.app.requests[0].header("content-length") == str(len(body))


def test_chunked_body_is_reframed_and_trailers_do_not_become_headers(fresh: Stack) -> None:
    data = (
        b"POST /x HTTP/1.1\r\nHost: pub.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Pomerium-Claim-Email: admin@example.com\r\n\r\n"
    )
    response, _ = raw(fresh.port, data + END)
    assert response is not None and response.status == 200
    first = fresh.app.requests[0]
    assert first.body == b"hello"
    assert "x-pomerium-claim-email" not in first.header_names()
    assert b"admin@example.com" not in fresh.app.raw_bytes


def test_pipelined_request_after_content_length_body_is_authorized_on_its_own(
    fresh: Stack,
) -> None:
    """Bytes after a Content-Length body are the next request: gatehouse parses it and
    applies its route's policy (here: ``only.localhost`` forbids ``/admin``)."""
    data = (
        b"POST /public HTTP/1.1\r\nHost: only.localhost\r\nContent-Length: 2\r\n\r\nok"
        b"GET /admin HTTP/1.1\r\nHost: only.localhost\r\nConnection: close\r\n\r\n"
    )
    _, out = raw(fresh.port, data)
    assert statuses(out)[0] == 200
    assert statuses(out)[1] in (302, 401, 403)
    assert [r.path for r in fresh.app.requests] == ["/public"]


def test_pipelining_after_an_error_stops_reading(fresh: Stack) -> None:
    """A 400 closes the connection: a valid request pipelined behind it is never served."""
    data = b"GET /bad%zz HTTP/1.1\r\nHost: pub.localhost\r\n\r\n" + SMUGGLED
    response, out = raw(fresh.port, data)
    assert response is not None and response.status == 400
    assert statuses(out) == [400]
    assert fresh.app.requests == []


def test_absolute_form_authority_wins_over_host_header(fresh: Stack) -> None:
    """``GET http://only.localhost/admin`` with ``Host: pub.localhost`` is judged by
    ``only.localhost``'s policy (RFC 9112 §3.2.2), never the permissive host's."""
    data = (
        b"GET http://only.localhost/admin HTTP/1.1\r\nHost: pub.localhost\r\n"
        b"Connection: close\r\n\r\n"
    )
    response, _ = raw(fresh.port, data)
    assert response is not None and response.status in (302, 401, 403)
    assert fresh.app.requests == []


def test_expect_continue_on_a_denied_route_never_reaches_the_upstream(fresh: Stack) -> None:
    with RawConnection(fresh.port) as conn:
        conn.send(
            b"POST /admin HTTP/1.1\r\nHost: only.localhost\r\nExpect: 100-continue\r\n"
            b"Content-Length: 48\r\n\r\n"
        )
        response = conn.read_response()
        assert response.status in (401, 403)
        assert 100 not in response.interim
    assert fresh.app.requests == []


def test_valid_pipelined_requests_are_answered_in_order(fresh: Stack) -> None:
    """Control: well-formed pipelining works, so the refusals above are about framing."""
    data = (
        b"".join(b"GET /p%d HTTP/1.1\r\nHost: pub.localhost\r\n\r\n" % i for i in range(3))
        + b"GET /p3 HTTP/1.1\r\nHost: pub.localhost\r\nConnection: close\r\n\r\n"
    )
    _, out = raw(fresh.port, data)
    assert statuses(out) == [200, 200, 200, 200]
    assert [r.target for r in fresh.app.requests] == ["/p0", "/p1", "/p2", "/p3"]


def test_tolerated_request_line_spacing_is_reserialised_canonically(fresh: Stack) -> None:
    """llhttp accepts ``GET  / HTTP/1.1`` (two spaces). That is safe because the upstream
    never sees the client's request line: gatehouse writes its own, one space each, so
    both parse the same two requests here."""
    _, out = raw(fresh.port, b"GET  / HTTP/1.1\r\nHost: pub.localhost\r\n\r\n" + SMUGGLED)
    assert [r.raw_head.split(b"\r\n")[0] for r in fresh.app.requests] == [
        b"GET / HTTP/1.1",
        b"GET /smuggled HTTP/1.1",
    ]
    assert statuses(out) == [200, 200]
