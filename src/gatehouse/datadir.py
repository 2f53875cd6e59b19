"""Files gatehouse generates once in ``data_dir`` (keys, secrets) and every process shares.

Several worker processes may start at the same moment and must end up with the same key:
the content is written to a private temporary file and published with ``link``, which
fails if the name exists, so exactly one writer wins and everyone reads its file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def create_once(path: Path, make: Callable[[], bytes]) -> bytes:
    """The bytes of ``path``, creating it with ``make()`` (mode 0600) the first time.

    Raises:
        OSError: the directory or file cannot be created or read.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, make())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process won the race: use its file
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()
