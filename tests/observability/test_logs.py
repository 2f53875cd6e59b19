"""The JSON process log: one object per record with time, level, logger, message, extras
and pid; libraries' per-request info lines only at debug level."""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import time
from collections.abc import Iterator

import pytest

from gatehouse.observability.logs import setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_its_fields(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    before = time.time()
    logging.getLogger("gatehouse.authenticate").info(
        "signed in", extra={"user": "alice-sub", "email": "alice@example.com"}
    )
    logging.getLogger("gatehouse.x").debug("not shown at info")
    (line,) = lines(stream)
    assert line["message"] == "signed in" and line["level"] == "info"
    assert line["logger"] == "gatehouse.authenticate"
    assert line["user"] == "alice-sub" and line["email"] == "alice@example.com"
    assert line["pid"] == os.getpid()
    stamp = datetime.datetime.strptime(str(line["time"]), "%Y-%m-%dT%H:%M:%S.%fZ")
    at = stamp.replace(tzinfo=datetime.UTC).timestamp()
    assert before - 0.002 <= at <= time.time() + 0.001
    assert set(line) == {"time", "level", "logger", "message", "user", "email", "pid"}


def test_exceptions_and_times_across_seconds(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    log = logging.getLogger("gatehouse.t")
    for ts in (1_700_000_000.999, 1_700_000_001.0, 1_700_000_001.5):
        record = log.makeRecord("gatehouse.t", logging.INFO, "", 0, "at", (), None)
        record.created = ts
        log.handle(record)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    got = lines(stream)
    assert [g["time"] for g in got[:3]] == [
        "2023-11-14T22:13:20.999Z",
        "2023-11-14T22:13:21.000Z",
        "2023-11-14T22:13:21.500Z",
    ]
    assert "ValueError: boom" in str(got[3]["exception"])


def test_httpx_request_lines_only_at_debug(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    logging.getLogger("httpx").info("HTTP Request: POST http://idp/token")
    logging.getLogger("httpx").warning("something wrong")
    assert [g["message"] for g in lines(stream)] == ["something wrong"]
    stream = io.StringIO()
    setup_logging("debug", stream)
    logging.getLogger("httpx").info("HTTP Request: POST http://idp/token")
    assert [g["message"] for g in lines(stream)] == ["HTTP Request: POST http://idp/token"]
