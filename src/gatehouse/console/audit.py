"""The console's audit trail: one JSON line per change, in a file and in the process log.

Each line says who (the signed-in user's email and id), what (the action and its target),
and the config file's SHA-256 before and after, so any change can be matched with the
file's history. Lines are appended with ``O_APPEND`` (whole lines, even with several
workers writing) and the file is created with mode 0600.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger("gatehouse.console")

#: Largest audit line read back for the console's audit page, bytes.
MAX_LINE_BYTES = 16 * 1024


class AuditLog:
    """Appends audit records to ``path`` and logs each one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(
        self,
        *,
        user: str,
        user_id: str,
        action: str,
        target: str,
        before: str | None,
        after: str | None,
        detail: str = "",
    ) -> dict[str, Any]:
        """Write one record; the process log gets it even when the file cannot be written."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "user": user,
            "user_id": user_id,
            "action": action,
            "target": target,
            "before_digest": before,
            "after_digest": after,
        }
        if detail:
            entry["detail"] = detail
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("cannot write the console audit log %s: %s", self.path, exc)
        log.info("console change", extra={"audit": entry})
        return entry

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` records, newest first (unreadable lines skipped)."""
        try:
            with self.path.open("rb") as f:
                tail: deque[bytes] = deque(f, maxlen=limit)
        except OSError:
            return []
        out = []
        for raw in reversed(tail):
            try:
                value = json.loads(raw[:MAX_LINE_BYTES])
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out
