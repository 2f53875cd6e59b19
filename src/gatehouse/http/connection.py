"""HTTP/1.1 request framing rules for the downstream side, testable with bytes alone.

:class:`RequestReader` wraps Node's llhttp (through ``httptools``), which already rejects
most malformed framing in strict mode (duplicate or conflicting ``Content-Length``,
``Content-Length`` with ``Transfer-Encoding``, bad chunk sizes, obsolete line folding,
bare CR/LF, NUL and other control characters in headers, invalid methods). On top of it
this class enforces what llhttp leaves to the application:

* size limits: URL (414), header block (431), body (413);
* HTTP/1.0 or 1.1 only (no HTTP/0.9), exactly one ``Host`` for HTTP/1.1 (RFC 9112 §3.2);
* no ``CONNECT`` (gatehouse is not a forward proxy);
* a request that asks for ``Upgrade`` hands the rest of the bytes to the caller.

It owns no socket, loop or clock: :meth:`RequestReader.feed` takes bytes and calls the
sink's ``on_request`` / ``on_body`` / ``on_request_end``; errors are raised as
:class:`gatehouse.errors.ClientError` subclasses whose ``status`` is the answer to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httptools

from ..errors import (
    BadRequest,
    ClientError,
    HeaderTooLarge,
    MethodNotAllowed,
    PayloadTooLarge,
    URITooLong,
)
from .messages import RequestHead

#: Per-header framing overhead counted towards the head limit (": " and CRLF), bytes.
_HEADER_OVERHEAD = 4


@dataclass(frozen=True, slots=True)
class Limits:
    """Wire limits enforced while reading a request (all in bytes; 0 = unlimited body)."""

    max_header_bytes: int = 32 * 1024
    max_url_bytes: int = 16 * 1024
    max_body_bytes: int = 0


class RequestSink(Protocol):
    """Receives the events of each request, in order."""

    def on_request(self, head: RequestHead) -> None: ...

    def on_body(self, chunk: bytes) -> None: ...

    def on_request_end(self) -> None: ...


class UpgradeRequested(Exception):
    """Raised by :meth:`RequestReader.feed` after an Upgrade request's head was delivered.

    ``rest`` holds the bytes that followed the head: the start of the tunnelled stream.
    """

    def __init__(self, rest: bytes) -> None:
        super().__init__("upgrade")
        self.rest = rest


class RequestReader:
    """Parses a stream of requests from one connection and enforces gatehouse's rules."""

    __slots__ = (
        "_body_bytes",
        "_connection",
        "_content_length",
        "_error",
        "_expect",
        "_has_host",
        "_head_bytes",
        "_headers",
        "_in_head",
        "_limits",
        "_parser",
        "_raw_head_bytes",
        "_sink",
        "_upgrade",
        "_url",
    )

    def __init__(self, sink: RequestSink, limits: Limits) -> None:
        self._sink = sink
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._error: ClientError | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._in_head = False
        self._has_host = False
        self._upgrade: bytes | None = None
        self._connection: bytes | None = None
        self._expect = False
        self._content_length = -1
        self._body_bytes = 0

    @property
    def in_head(self) -> bool:
        """True while a request head has begun but not completed (for the head timeout)."""
        return self._in_head

    def feed(self, data: bytes) -> None:
        """Parse ``data``; deliver events to the sink.

        Raises:
            ClientError: the request is malformed or over a limit; answer ``status`` and close.
            UpgradeRequested: an Upgrade request's head was delivered; stop feeding.
        """
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            raise UpgradeRequested(data[offset:]) from None
        except httptools.HttpParserInvalidMethodError:
            raise BadRequest("invalid method") from None
        except httptools.HttpParserCallbackError:
            err = self._error or BadRequest("callback failed")
            self._error = None
            raise err from None
        except httptools.HttpParserError as exc:
            raise BadRequest(f"malformed request: {exc}") from None
        if self._in_head:
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > self._limits.max_header_bytes + self._limits.max_url_bytes:
                raise HeaderTooLarge("request head too large")

    # httptools callbacks -------------------------------------------------------------

    def _fail(self, error: ClientError) -> None:
        self._error = error
        raise error

    def on_message_begin(self) -> None:
        self._reset()
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            self._fail(URITooLong("request target too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + _HEADER_OVERHEAD
        if self._head_bytes > self._limits.max_header_bytes:
            self._fail(HeaderTooLarge("request header block too large"))
        lname = name.lower()
        if lname == b"host":
            if self._has_host:
                self._fail(BadRequest("more than one Host header"))
            self._has_host = True
        elif lname == b"content-length":
            self._content_length = int(value)  # llhttp has validated the digits
        elif lname == b"expect":
            if value.lower() == b"100-continue":
                self._expect = True
            else:
                # RFC 9110 §10.1.1: an expectation we cannot meet.
                self._fail(BadRequest("unsupported Expect"))
        elif lname == b"upgrade":
            self._upgrade = value
        elif lname == b"connection":
            self._connection = (
                value if self._connection is None else self._connection + b"," + value
            )
        self._headers.append((lname, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._fail(BadRequest(f"unsupported HTTP version {version!r}"))
        if version == "1.1" and not self._has_host:
            self._fail(BadRequest("missing Host header"))
        method = parser.get_method()
        if method == b"CONNECT":
            self._fail(MethodNotAllowed("CONNECT is not supported"))
        limit = self._limits.max_body_bytes
        if limit and self._content_length > limit:
            self._fail(PayloadTooLarge("declared body too large"))
        chunked = any(k == b"transfer-encoding" for k, _ in self._headers)
        upgrade = self._upgrade if parser.should_upgrade() else None
        self._in_head = False
        self._sink.on_request(
            RequestHead(
                method=method,
                target=self._url,
                headers=self._headers,
                http_version=version,
                keep_alive=parser.should_keep_alive(),
                has_body=chunked or self._content_length > 0,
                upgrade=upgrade,
                expect_continue=self._expect,
                connection=self._connection,
            )
        )

    def on_body(self, body: bytes) -> None:
        limit = self._limits.max_body_bytes
        if limit:
            self._body_bytes += len(body)
            if self._body_bytes > limit:
                self._fail(PayloadTooLarge("body too large"))
        self._sink.on_body(body)

    def on_message_complete(self) -> None:
        self._sink.on_request_end()
