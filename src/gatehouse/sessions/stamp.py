"""A revocation stamp shared by every process on one machine: 8 bytes of a mapped file.

Worker processes learn about sign-outs by polling the store, which leaves a window in
which another worker still trusts its cached copy. The stamp closes it without per-request
I/O: the file beside the SQLite store (``sessions.sqlite3-revocations``) is mapped
``MAP_SHARED`` by each process that opens the store, so all of them read the same page of
memory. A revocation writes a fresh random value *after* its store write has committed;
a request's cached-session path compares the stamp with the value its process last
caught up at (one memory read), and when it differs the process reads the store's change
log before trusting its cache.

Random values instead of a counter: two revokers racing a read-modify-write could write
back a value a reader has already seen, and the reader would miss the second revocation.
A fresh 64-bit random value repeats a seen one with probability 2**-64, and needs no lock.
The word is naturally aligned at offset 0 of the mapping, so its 8-byte store and load
are single instructions on the platforms gatehouse runs on: no torn values.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

#: Size of the stamp file (bytes): one unsigned 64-bit word.
STAMP_BYTES = 8


class SharedStamp:
    """The stamp in ``path`` (created with mode 0600 if missing)."""

    __slots__ = ("_map", "_view")

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Growing an empty file zero-fills it; a file another process already grew is
            # left alone (ftruncate to its own size changes nothing).
            if os.fstat(fd).st_size < STAMP_BYTES:
                os.ftruncate(fd, STAMP_BYTES)
            self._map = mmap.mmap(fd, STAMP_BYTES, mmap.MAP_SHARED)
        finally:
            os.close(fd)  # the mapping keeps the pages; the descriptor is not needed
        self._view = memoryview(self._map).cast("Q")

    def read(self) -> int:
        """The current value (one load from shared memory)."""
        value: int = self._view[0]
        return value

    def change(self) -> None:
        """Publish "something was revoked": a fresh value no reader has seen."""
        self._view[0] = int.from_bytes(os.urandom(STAMP_BYTES), "little")

    def close(self) -> None:
        self._view.release()
        self._map.close()
