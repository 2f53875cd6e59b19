"""Byte tunnel between a client and an upstream after an HTTP ``101 Switching Protocols``.

Both connections stop parsing HTTP: each side's bytes are written to the other as they
come, with back-pressure (a side whose peer is not accepting writes stops being read),
and closing either side closes both. :class:`Tunnel` also tracks activity for the idle
timeout and offers :meth:`Tunnel.close` for re-authorization (a session that ended).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import DownstreamProtocol
    from .upstream import UpstreamConnection


class Tunnel:
    """A spliced client/upstream pair."""

    def __init__(self, client: DownstreamProtocol, upstream: UpstreamConnection) -> None:
        self.client = client
        self.upstream = upstream
        self.bytes_up = 0
        self.bytes_down = 0
        self.last_activity = time.monotonic()
        self.closed: asyncio.Future[None] = client.loop.create_future()

    def start(self, upstream_rest: bytes) -> None:
        """Begin relaying; ``upstream_rest`` is what the upstream sent after its 101 head."""
        client_rest = self.client.start_tunnel(self._to_upstream, self.upstream)
        self.upstream.start_tunnel(self._to_client, self.client)
        self.client.on_lost = self.close
        if upstream_rest:
            self._to_client(upstream_rest)
        if client_rest:
            self._to_upstream(client_rest)
        self.upstream.closed.add_done_callback(lambda _: self.close())

    def _to_upstream(self, data: bytes) -> None:
        self.bytes_up += len(data)
        self.last_activity = time.monotonic()
        transport = self.upstream.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _to_client(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self.last_activity = time.monotonic()
        self.client.write(data)

    def close(self) -> None:
        """Close both sides (idempotent)."""
        if self.closed.done():
            return
        self.closed.set_result(None)
        self.upstream.close()
        self.client.close()
