"""Choosing and configuring the store from the options: the connection string, from the
config or from ``databroker_storage_connection_string_file``, for every shared type; and
its problems, reported at their key without quoting the string."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.config import load_text
from gatehouse.errors import ConfigError
from gatehouse.sessions.manager import build_session_manager
from gatehouse.sessions.postgres import PostgresStore
from gatehouse.sessions.redis import RedisStore

pytestmark = pytest.mark.anyio

SECRET = "A" * 43 + "="
BASE = f"insecure_server: true\naddress: ':8080'\ncookie_secret: '{SECRET}'\n"


def build(extra: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    text = BASE + f"data_dir: {tmp_path / 'data'}\n" + extra
    return build_session_manager(load_text(text, env={}).options)


async def test_connection_string_file_for_redis(tmp_path: Path, redis_url: str) -> None:
    dsn = tmp_path / "dsn"
    dsn.write_text(f"\n  {redis_url}  \n")  # whitespace trimmed, as Pomerium does
    m = build(
        "databroker_storage_type: redis\n"
        f"databroker_storage_connection_string_file: {dsn}\n"
        "databroker_storage_connection_string: redis://ignored.invalid:1/0\n",  # the file wins
        tmp_path,
    )
    assert isinstance(m.store, RedisStore)
    await m.start()  # really talks to the Redis the file names
    try:
        s = await m.create(user_id="u")
        assert await m.get(s.id) is not None
    finally:
        await m.close()


async def test_connection_string_file_for_postgres(tmp_path: Path, postgres_url: str) -> None:
    dsn = tmp_path / "dsn"
    dsn.write_text(postgres_url + "\n")
    m = build(
        "databroker_storage_type: Postgres\n"  # any case, as Pomerium reads enums
        f"databroker_storage_connection_string_file: {dsn}\n",
        tmp_path,
    )
    assert isinstance(m.store, PostgresStore)
    await m.store.ping()
    await m.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("databroker_storage_type: postgres\n", "databroker_storage_connection_string (or"),
        (
            "databroker_storage_type: postgres\n"
            "databroker_storage_connection_string: 'postgres://u:s3cret@h/db?bogus=1'\n",
            "databroker_storage_connection_string: not a PostgreSQL connection string",
        ),
        (
            "databroker_storage_type: redis\n"
            "databroker_storage_connection_string: 'postgres://u:s3cret@h/db'\n",
            "databroker_storage_connection_string: expected redis://",
        ),
    ],
)
def test_bad_connection_strings(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(extra, tmp_path)
    assert message in info.value.problems[0]
    assert "s3cret" not in str(info.value.problems)


def test_bad_connection_string_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    for path, message in ((empty, "is empty"), (tmp_path / "missing", "cannot read")):
        with pytest.raises(ConfigError) as info:
            build(
                "databroker_storage_type: postgres\n"
                f"databroker_storage_connection_string_file: {path}\n",
                tmp_path,
            )
        assert info.value.problems[0].startswith("databroker_storage_connection_string_file: ")
        assert message in info.value.problems[0]


def test_shared_stores_need_the_secrets(tmp_path: Path) -> None:
    text = "insecure_server: true\naddress: ':8080'\ndatabroker_storage_type: postgres\n"
    with pytest.raises(ConfigError) as info:
        build_session_manager(load_text(text, env={}).options)
    assert "cookie_secret is required with databroker_storage_type: postgres" in str(
        info.value.problems
    )
