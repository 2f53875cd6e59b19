"""Structured JSON logs: the process log (Python ``logging``) and the per-request access log.

The access log is written directly, not through ``logging``: one line per request is on
the hot path, and ``logging``'s machinery costs more than the rest of the line. Lines are
buffered and flushed every :data:`ACCESS_FLUSH_INTERVAL_S` or when the buffer is large.
Nothing secret (tokens, cookies, session handles, client secrets) is ever logged: callers
pass only the fields listed in :func:`access_line`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

#: Longest time an access-log line waits in the buffer, seconds.
ACCESS_FLUSH_INTERVAL_S = 0.2
#: Buffered access-log bytes that force a flush.
ACCESS_FLUSH_BYTES = 64 * 1024

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: Libraries whose per-request info lines are shown only at debug level.
QUIET_LIBRARY_LOGGERS = ("httpx", "httpcore")
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for key in fields.keys() - _STD_ATTRS:  # the ``extra`` fields, found in C
            if not key.startswith("_"):
                out[key] = fields[key]
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        out["pid"] = _pid[0]
        return json.dumps(out, default=str)


_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))
_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def _iso(ts: float) -> str:
    # strftime is most of a line's formatting cost; a second's prefix is made once.
    whole = int(ts)
    if whole != _second[0]:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int(ts % 1 * 1000):03d}Z"


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every gatehouse log record to ``stream`` (stderr) as JSON at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # httpx logs every request at info; IdP calls are counted and timed by the metrics,
    # and their failures logged by the callers, so that line is only useful for debugging.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    # No line shows the caller's file, line or thread: skip finding them for each record
    # (the "Optimization" section of Python's logging HOWTO).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = False  # a getpid() per record: the formatter knows the pid


class AccessLog:
    """Buffered JSON access-log lines on stdout (or a given file descriptor)."""

    def __init__(self, fd: int | None = None, enabled: bool = True) -> None:
        self.fd = sys.stdout.fileno() if fd is None else fd
        self.enabled = enabled
        self._buffer: list[str] = []
        self._size = 0
        self._last_flush = time.monotonic()

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(fields, separators=(",", ":"), default=str) + "\n"
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= ACCESS_FLUSH_BYTES:
            self.flush()

    def request(
        self,
        *,
        route: str | None,
        method: str,
        host: str,
        path: str,
        status: int,
        bytes_sent: int,
        bytes_in: int,
        duration_s: float,
        upstream: str | None,
        upstream_s: float | None,
        client: str,
        user: str | None,
        decision: str | None,
        aborted: bool,
        error: str | None,
        request_id: str | None = None,
    ) -> None:
        """One request's line; built by hand because this runs for every request (the
        same JSON ``json.dumps`` would give, at a third of the cost)."""
        if not self.enabled:
            return
        upstream_ms = "null" if upstream_s is None else _ms(upstream_s)
        tail = _ABORTED if aborted else ""
        if error is not None:
            tail += ',"error":' + _js(error)
        if request_id is not None:  # only error responses have one (shown on the page)
            tail += ',"request_id":' + _js_once(request_id)
        # Only str values in the f-string (no format specs, see _ms): mypyc joins them in
        # one allocation; the text is what json.dumps would give.
        line = (
            f'{{"time":"{now_iso()}","route":{_js(route)},"method":{_js(method)},'
            f'"host":{_js(host)},"path":{_js_once(path)},"status":{status},'
            f'"bytes":{bytes_sent},"bytes_in":{bytes_in},'
            f'"duration_ms":{_ms(duration_s)},"upstream":{_js(upstream)},'
            f'"upstream_ms":{upstream_ms},"client":{_js(client)},"user":{_js(user)},'
            f'"decision":{_js(decision)}{tail}}}\n'
        )
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= ACCESS_FLUSH_BYTES:
            self.flush()

    def maybe_flush(self) -> None:
        if self._buffer and time.monotonic() - self._last_flush >= ACCESS_FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        data = "".join(self._buffer).encode()
        self._buffer.clear()
        self._size = 0
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            pass  # stdout gone: nothing useful left to do with access lines


_encode_str = json.encoder.encode_basestring_ascii
#: JSON forms of recent field values (route, method, host, upstream, client, user...):
#: they repeat from request to request. Bounded; paths are never cached.
_JS_CACHE: dict[str, str] = {}
_JS_CACHE_MAX = 4096
_JS_CACHE_MAX_LEN = 256


def _js(value: str | None) -> str:
    if value is None:
        return "null"
    cached = _JS_CACHE.get(value)
    if cached is None:
        cached = str(_encode_str(value))
        if len(_JS_CACHE) < _JS_CACHE_MAX and len(value) <= _JS_CACHE_MAX_LEN:
            _JS_CACHE[value] = cached
    return cached


#: "000" ... "999": the fractional part of a millisecond figure.
_THOUSANDTHS = tuple(f"{i:03d}" for i in range(1000))


def _ms(seconds: float) -> str:
    """``seconds`` in milliseconds with three decimals (``1.234``), truncated."""
    us = int(seconds * 1_000_000)
    if us < 0:
        us = 0
    return f"{us // 1000}.{_THOUSANDTHS[us % 1000]}"


def _js_once(value: str) -> str:
    return str(_encode_str(value))


_ABORTED = ',"aborted":true'
#: (second, its ISO text, millisecond, the full stamp): many requests share a millisecond.
_time_cache: list[Any] = [0, "", 0, ""]


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds (cached per millisecond)."""
    cache = _time_cache
    ms = int(time.time() * 1000)
    if cache[2] == ms:
        return str(cache[3])
    sec = ms // 1000
    if cache[0] != sec:
        cache[0] = sec
        cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    stamp = f"{cache[1]}.{ms % 1000:03d}Z"
    cache[2] = ms
    cache[3] = stamp
    return stamp
