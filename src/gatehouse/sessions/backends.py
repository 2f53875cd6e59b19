"""The store ``databroker_storage_type`` names, built from the options.

``memory`` and ``sqlite`` need nothing else; the shared stores (``redis``, ``postgres``)
read ``databroker_storage_connection_string``, or the file that
``databroker_storage_connection_string_file`` names (which wins, trimmed of surrounding
whitespace, as in Pomerium). Problems are :class:`ConfigError` at the key they are about;
no message quotes a connection string, which usually holds a password.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..config import Options
from ..errors import ConfigError
from .memory import MemoryStore
from .serialize import RecordCodec
from .store import SessionStore

SQLITE_FILE = "sessions.sqlite3"
#: The revocation stamp the PostgreSQL store shares with sibling workers (in ``data_dir``).
POSTGRES_STAMP_FILE = "sessions-postgres-revocations"
#: Types whose records are shared by replicas on other machines.
SHARED_TYPES = ("redis", "postgres")
_KEY = "databroker_storage_connection_string"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def connection_string(options: Options) -> tuple[str, str]:
    """The shared store's connection string and the key it came from.

    Raises:
        ConfigError: the file cannot be read, or neither key is set.
    """
    path = options.databroker_storage_connection_string_file
    if path:
        try:
            text = Path(path).expanduser().read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not text"
            raise ConfigError([f"{_KEY}_file: cannot read ({why})"]) from exc
        if not text:
            raise ConfigError([f"{_KEY}_file: {path} is empty"])
        return text, f"{_KEY}_file"
    value = (options.databroker_storage_connection_string or "").strip()
    if not value:
        kind = options.databroker_storage_type
        raise ConfigError(
            [f"{_KEY} (or {_KEY}_file) is required with databroker_storage_type: {kind}"]
        )
    return value, _KEY


def build_store(
    options: Options, records: RecordCodec, *, clock: Callable[[], float] = time.time
) -> SessionStore:
    """A new, not yet started, store of ``options.databroker_storage_type``.

    Raises:
        ConfigError: bad storage settings.
    """
    kind = options.databroker_storage_type
    data_dir = Path(options.data_dir).expanduser()
    if kind == "memory":
        return MemoryStore(records, clock=clock)
    if kind == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(data_dir / SQLITE_FILE, records, clock=clock)
    url, key = connection_string(options)
    if kind == "redis":
        if not url.startswith(_REDIS_SCHEMES):
            raise ConfigError([f"{key}: expected redis://, rediss:// or unix://"])
        from .redis import RedisStore

        return RedisStore(url, records)
    from .postgres import PostgresStore

    try:
        return PostgresStore(url, records, stamp_path=data_dir / POSTGRES_STAMP_FILE, clock=clock)
    except ValueError as exc:
        raise ConfigError([f"{key}: {exc}"]) from exc
