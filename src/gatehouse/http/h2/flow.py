"""HTTP/2 send-side flow control shared by the client-facing and upstream streams."""

from __future__ import annotations

from collections import deque

from h2.connection import H2Connection


def take_window(h2conn: H2Connection, stream_id: int, pending: deque[bytes]) -> bytes | None:
    """The next DATA chunk ``stream_id`` may send now, taken off ``pending``: at most the
    stream's flow-control window and the peer's frame size. ``None``: nothing queued, or
    the window is closed (the rest stays queued until a WINDOW_UPDATE)."""
    if not pending:
        return None
    window = h2conn.local_flow_control_window(stream_id)
    if window <= 0:
        return None
    chunk = pending[0]
    n = min(len(chunk), window, h2conn.max_outbound_frame_size)
    if n == len(chunk):
        pending.popleft()
        return chunk
    pending[0] = chunk[n:]
    return chunk[:n]
