"""Byte tunnel between a client and an upstream after an HTTP ``101 Switching Protocols``.

Both connections stop parsing HTTP. Theory of operation:

* **Relay.** Each protocol is given the *other* side's transport
  (:meth:`DownstreamProtocol.start_tunnel`, :meth:`UpstreamConnection.start_tunnel`); its
  ``data_received`` writes each chunk there directly, as read, counting the bytes and
  stamping the time. No frame is parsed, no callback, task or future is made per chunk:
  the relay is one read and one write per chunk, inside the (compiled) protocols. A
  WebSocket message small enough for one segment crosses gatehouse in one ``recv`` and one
  ``send`` each way, as with nginx.
* **Back-pressure.** When a side's transport buffer passes its high-water mark, its
  ``pause_writing`` pauses reading on the peer; ``resume_writing`` resumes it. So a slow
  reader on either side stops gatehouse from reading the fast writer, and memory stays
  bounded by the transports' buffers.
* **Closing.** Closing either side closes both (``on_lost`` of the client,
  ``connection_lost`` of the upstream, :meth:`Tunnel.close`).
* **Watching.** :class:`Tunnel` gives the pipeline what it needs to watch the pair without
  being on the relay path: the byte counts, the time of the last byte either way (idle
  timeout) and :meth:`Tunnel.close` (idle, or re-authorization found the session ended).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import DownstreamProtocol
    from .upstream import UpstreamConnection


class Tunnel:
    """A spliced client/upstream pair."""

    def __init__(self, client: DownstreamProtocol, upstream: UpstreamConnection) -> None:
        self.client = client
        self.upstream = upstream
        self.closed: asyncio.Future[None] = client.loop.create_future()

    @property
    def bytes_up(self) -> int:
        """Bytes relayed from the client to the upstream."""
        return self.client.tunnel_bytes

    @property
    def bytes_down(self) -> int:
        """Bytes relayed from the upstream to the client."""
        return self.upstream.tunnel_bytes

    @property
    def last_activity(self) -> float:
        """Monotonic time of the last byte relayed either way (or of the tunnel's start)."""
        return max(self.client.tunnel_last, self.upstream.tunnel_last)

    def start(self, upstream_rest: bytes) -> None:
        """Begin relaying; ``upstream_rest`` is what the upstream sent after its 101 head.

        Called while the client connection is corked behind the 101 head: ``upstream_rest``
        goes through the cork, so it reaches the client after that head.
        """
        client, upstream = self.client, self.upstream
        client_out, upstream_out = client.transport, upstream.transport
        if client_out is None or upstream_out is None:
            self.close()
            return
        client_rest = client.start_tunnel(upstream_out, upstream)
        upstream.start_tunnel(client_out, client)
        client.on_lost = self.close
        if upstream_rest:
            upstream.tunnel_bytes += len(upstream_rest)
            client.write(upstream_rest)
        if client_rest:
            client.tunnel_bytes += len(client_rest)
            if not upstream_out.is_closing():
                upstream_out.write(client_rest)
        # Either peer may already be paused (its buffer full): carry that across the pair.
        if client.write_paused:
            upstream.pause_reading()
        if upstream.write_paused:
            client.pause_reading()
        upstream.closed.add_done_callback(lambda _: self.close())

    def close(self) -> None:
        """Close both sides (idempotent)."""
        if self.closed.done():
            return
        self.closed.set_result(None)
        self.upstream.close()
        self.client.close()
