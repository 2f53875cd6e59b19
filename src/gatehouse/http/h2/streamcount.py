"""``h2.H2Connection`` with an open-stream count that does not walk every stream.

``h2`` checks ``SETTINGS_MAX_CONCURRENT_STREAMS`` on each new stream by reading
``open_inbound_streams``, which walks every stream the connection holds (and drops the
closed ones from its table as it goes). With 100 streams in flight that walk cost 5-9 % of
a request's CPU (bench/h2_bench.py). :class:`CountingH2Connection` keeps the same limit
exactly at lower cost:

- its stream table records every inbound stream ``h2`` adds (``live``), whatever path
  adds it, and forgets it when ``h2`` removes it or gatehouse reports it closed
  (:meth:`stream_finished`);
- below the limit, ``len(live)`` is an upper bound of the open streams, and a bound under
  the limit gives ``h2``'s check the same answer as the exact count;
- at the limit the closed streams are dropped from ``live`` and the open ones counted as
  ``h2`` counts them (``H2Stream.open``), so a refusal is exact;
- ``h2``'s own walk (which also frees closed streams) runs once the table holds
  :data:`PURGE_AT` entries: amortised over that many streams instead of on each.

It relies on ``h2`` keeping its streams in the ``streams`` dict, adding with ``[]=`` and
removing with ``pop``, and reading ``open_inbound_streams`` for the limit (true of h2 4.x;
pyproject pins it, tests/http/h2/test_h2_stream_count.py checks it).
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
from h2.stream import H2Stream

#: Streams (open or closed) the table may hold before ``h2``'s own walk frees the closed.
PURGE_AT = 256


class StreamTable(dict[int, H2Stream]):
    """``h2``'s stream table, also tracking the inbound streams that may still be open."""

    __slots__ = ("inbound_parity", "live")

    def __init__(self, inbound_parity: int) -> None:
        super().__init__()
        self.inbound_parity = inbound_parity
        #: Inbound streams not known to be closed (a superset of the open ones).
        self.live: dict[int, H2Stream] = {}

    def __setitem__(self, stream_id: int, stream: H2Stream) -> None:
        super().__setitem__(stream_id, stream)
        if stream_id % 2 == self.inbound_parity:
            self.live[stream_id] = stream

    def pop(self, stream_id: int, *default: Any) -> Any:
        self.live.pop(stream_id, None)
        return super().pop(stream_id, *default)

    def __delitem__(self, stream_id: int) -> None:
        self.live.pop(stream_id, None)
        super().__delitem__(stream_id)


class CountingH2Connection(h2.connection.H2Connection):
    """An ``H2Connection`` whose ``open_inbound_streams`` costs O(1) below the limit."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self.streams = StreamTable(int(not config.client_side))

    @property
    def open_inbound_streams(self) -> int:
        """Open inbound streams: exact at ``SETTINGS_MAX_CONCURRENT_STREAMS`` or above;
        below it an upper bound (which is all ``h2``'s limit check needs)."""
        table = self.streams
        assert isinstance(table, StreamTable)
        if len(table) >= PURGE_AT:
            # h2's walk: exact, and frees the closed streams (through table.pop).
            return super().open_inbound_streams
        live = table.live
        if len(live) < self.local_settings.max_concurrent_streams:
            return len(live)
        count = 0
        for stream_id, stream in list(live.items()):
            if stream.closed:
                del live[stream_id]
            elif stream.open:
                count += 1
        return count

    def stream_finished(self, stream_id: int) -> None:
        """gatehouse is done with a stream: stop counting it if ``h2`` has closed it."""
        table = self.streams
        assert isinstance(table, StreamTable)
        stream = table.live.get(stream_id)
        if stream is not None and stream.closed:
            del table.live[stream_id]
