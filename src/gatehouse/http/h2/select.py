"""Choosing HTTP/1.1 or HTTP/2 for a new connection (``codec_type``).

Over TLS the choice is ALPN's (RFC 7301; RFC 9113 §3.2): ``h2`` when the client offered it
and ``codec_type`` allows HTTP/2. In plain text, ``auto`` looks at the first bytes: the
HTTP/2 connection preface (RFC 9113 §3.3, "prior knowledge") starts ``PRI * HTTP/2.0``,
which no HTTP/1.1 request does; ``http2`` serves only HTTP/2. The selector hands the
transport to the chosen protocol and steps out of the data path.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING

from .protocol import H2Protocol

if TYPE_CHECKING:
    from ..server import DownstreamProtocol, HttpServer

#: What an HTTP/2 connection preface starts with (RFC 9113 §3.4).
PREFACE_START = b"PRI * HTTP/2.0"


class Codec(enum.Enum):
    """Pomerium's ``codec_type``: which HTTP versions clients may speak."""

    AUTO = "auto"
    HTTP1 = "http1"
    HTTP2 = "http2"


def alpn_protocols(codec: Codec) -> list[str]:
    """The ALPN list the TLS listener offers for ``codec``, most preferred first."""
    if codec is Codec.HTTP1:
        return ["http/1.1"]
    if codec is Codec.HTTP2:
        return ["h2"]
    return ["h2", "http/1.1"]


class ProtocolSelector(asyncio.Protocol):
    """Picks the protocol of one connection, then hands the transport over."""

    def __init__(self, server: HttpServer, codec: Codec) -> None:
        self.server = server
        self.codec = codec
        self.transport: asyncio.Transport | None = None
        self._h1: DownstreamProtocol | None = None
        #: First bytes held while they are still a prefix of the preface.
        self._pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from ..server import DownstreamProtocol

        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            alpn = ssl_object.selected_alpn_protocol()
            if alpn == "h2" or (alpn is None and self.codec is Codec.HTTP2):
                self._hand_over(H2Protocol(self.server))
            else:
                self._hand_over(DownstreamProtocol(self.server))
            return
        if self.codec is Codec.HTTP2:
            self._hand_over(H2Protocol(self.server))
            return
        # Plain text, auto: an HTTP/1.1 protocol owns the connection (and its head
        # timeout) until the first bytes show which protocol the client speaks.
        self._h1 = DownstreamProtocol(self.server)
        self._h1.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        h1, self._h1 = self._h1, None
        transport = self.transport
        if h1 is None or transport is None:
            return
        data, self._pending = self._pending + data, b""
        if len(data) < len(PREFACE_START) and PREFACE_START.startswith(data):
            # Too few bytes to tell (a client writing byte by byte): keep waiting.
            self._h1, self._pending = h1, data
            return
        if data.startswith(PREFACE_START):
            self.server.connections.discard(h1)
            h2proto = H2Protocol(self.server)
            transport.set_protocol(h2proto)
            h2proto.connection_made(transport)
            h2proto.data_received(data)
        else:
            transport.set_protocol(h1)
            h1.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        h1, self._h1 = self._h1, None
        if h1 is not None:
            h1.connection_lost(exc)

    def eof_received(self) -> bool | None:
        h1 = self._h1
        return h1.eof_received() if h1 is not None else None

    def _hand_over(self, proto: asyncio.Protocol) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.set_protocol(proto)
        proto.connection_made(transport)
