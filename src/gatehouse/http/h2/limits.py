"""HTTP/2 wire limits and the per-connection flood guard (no socket, loop or clock).

The guard counts, per connection and per sliding window, the frames a client can send
to make a server work without sending requests: stream resets (rapid reset,
CVE-2023-44487), PINGs and SETTINGS (CVE-2019-9512/9515, each answered with an ACK), and
empty DATA frames (CVE-2019-9518). Past a limit the connection is closed with
``GOAWAY(ENHANCE_YOUR_CALM)``. CONTINUATION floods and HPACK bombs are bounded by the
``h2`` library (at most 64 CONTINUATION frames per header block, and the decoded header
list size checked against ``SETTINGS_MAX_HEADER_LIST_SIZE`` while decoding).
"""

from __future__ import annotations

import enum

#: Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); Envoy's
#: and nginx's default is 100 (nginx ``http2_max_concurrent_streams``).
MAX_CONCURRENT_STREAMS = 100
#: Largest frame payload we accept (SETTINGS_MAX_FRAME_SIZE), bytes: the RFC 9113
#: minimum, which every client supports.
MAX_FRAME_SIZE = 16_384
#: Receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE), bytes: bounds what a
#: client can send on one stream before gatehouse has passed it on.
STREAM_WINDOW_BYTES = 256 * 1024
#: Receive window of the whole connection, bytes (bounds buffering across streams).
CONNECTION_WINDOW_BYTES = 1024 * 1024
#: Response bytes queued on one stream (flow-control blocked) before the upstream is
#: paused, and the level at which it resumes, bytes.
STREAM_SEND_HIGH_WATER = 256 * 1024
STREAM_SEND_LOW_WATER = 64 * 1024

#: Length of the flood guard's counting window, seconds.
GUARD_WINDOW_S = 10.0


class Flood(enum.Enum):
    """Frames that cost the server work without carrying a request."""

    RESET = "reset"  # RST_STREAM from the client (rapid reset)
    PING = "ping"
    SETTINGS = "settings"
    EMPTY_DATA = "empty_data"


#: Frames of each kind allowed per connection per window. Browsers reset a few streams
#: when a page is left and send one SETTINGS and a few PINGs; gRPC clients cancel calls
#: and ping for keep-alive, well under these.
FLOOD_LIMITS: dict[Flood, int] = {
    Flood.RESET: 200,
    Flood.PING: 100,
    Flood.SETTINGS: 100,
    Flood.EMPTY_DATA: 200,
}


class FloodGuard:
    """Counts flood-prone frames per kind in fixed windows of :data:`GUARD_WINDOW_S`."""

    __slots__ = ("_counts", "_limits", "_window_start")

    def __init__(self, limits: dict[Flood, int] | None = None) -> None:
        self._limits = limits or FLOOD_LIMITS
        self._counts: dict[Flood, int] = {}
        self._window_start = 0.0

    def hit(self, kind: Flood, now: float) -> bool:
        """Count one frame of ``kind`` at ``now``; True when the limit is passed."""
        if now - self._window_start > GUARD_WINDOW_S:
            self._window_start = now
            self._counts = {}
        count = self._counts.get(kind, 0) + 1
        self._counts[kind] = count
        return count > self._limits[kind]
