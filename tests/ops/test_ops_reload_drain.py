"""Config reloads and SIGTERM under load drop no request that had started.

Eight client threads keep requests going on keep-alive connections (``http.client``),
each request with a unique path. A request counts as *started* when gatehouse read it:
it reached the upstream or has an access-log line. Rules:

* during several valid config rewrites, every request succeeds (200, full body);
* after SIGTERM, every started request completes with 200 and its full body; the only
  failures allowed are connections refused, or closed before a response began, for
  requests gatehouse never started; the process exits 0.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from support import wait_until
from support.gatehouse import GatehouseProcess, public
from support.upstream import Respond, SlowHead, Upstream

pytestmark = pytest.mark.e2e

CLIENTS = 8
BODY = b"x" * 2048


class Load:
    """Closed-loop clients; results are (id, outcome) with outcome "ok" or an error text."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ids = itertools.count()
        self.results: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            rid = next(self.ids)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                conn.request("GET", f"/r/{rid}", headers={"Host": "app.localhost"})
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200 and body == BODY
                self.results.append((rid, "ok" if ok else f"status {resp.status} {len(body)}B"))
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.results.append((rid, type(exc).__name__))
                if conn is not None:
                    conn.close()
                conn = None
                if isinstance(exc, ConnectionRefusedError):
                    time.sleep(0.01)  # the listener is gone: do not spin
        if conn is not None:
            conn.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(20)

    def count_ok(self) -> int:
        return sum(1 for _, r in self.results if r == "ok")


def _config(up: Upstream, marker: str = "v0") -> dict[str, Any]:
    return {
        "workers": 2,
        "shutdown_timeout": "10s",
        "routes": public(
            [
                {
                    "from": "http://app.localhost",
                    "to": up.url,
                    "set_response_headers": {"X-Config": marker},
                }
            ]
        ),
    }


def test_reloads_under_load_drop_nothing(  # type: ignore[no-untyped-def]
    start_gatehouse: Callable[..., GatehouseProcess], make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream("app", SlowHead(delay=0.02, then=Respond(body=BODY)))
    gh = start_gatehouse(_config(up))
    with Load(gh.port) as load:
        wait_until(lambda: load.count_ok() > 50, 10, what="load to run")
        for i in range(1, 5):
            gh.write_config(_config(up, f"v{i}"))
            before = load.count_ok()
            # Both workers reload; wait for them and for more traffic after it.
            wait_until(
                lambda: sum(1 for r in gh.logs() if r.get("message") == "config reloaded") >= 2 * i,
                10,
                what=f"reload {i} in both workers",
            )
            wait_until(lambda: load.count_ok() > before + 50, 10, what="traffic after the reload")
    failures = [r for r in load.results if r[1] != "ok"]
    assert failures == [], failures[:10]
    assert load.count_ok() > 400


def test_sigterm_under_load_drains_every_started_request(  # type: ignore[no-untyped-def]
    start_gatehouse: Callable[..., GatehouseProcess], make_upstream: Callable[..., Upstream]
) -> None:
    # Slow enough that many requests are in flight when SIGTERM arrives.
    up = make_upstream("app", SlowHead(delay=0.3, then=Respond(body=BODY)))
    gh = start_gatehouse(_config(up))
    with Load(gh.port) as load:
        wait_until(lambda: load.count_ok() > 40, 15, what="load to run")
        gh.proc.send_signal(15)  # type: ignore[union-attr]
        code = gh.proc.wait(30)  # type: ignore[union-attr]
    assert code == 0, gh.stderr_text()
    started = {int(r.path.rsplit("/", 1)[1]) for r in up.requests if r.path.startswith("/r/")}
    for line in gh.access_log():
        path = str(line.get("path", ""))
        if path.startswith("/r/"):
            started.add(int(path.rsplit("/", 1)[1]))
    dropped = [(rid, r) for rid, r in load.results if r != "ok" and rid in started]
    assert dropped == [], f"started requests that failed: {dropped[:10]}"
    unstarted = {r for rid, r in load.results if r != "ok"}
    assert unstarted <= {
        "ConnectionRefusedError",
        "RemoteDisconnected",
        "ConnectionResetError",
        "BrokenPipeError",
    }, unstarted
    # Every request in flight at SIGTERM finished: the drain, not the bound, ended it.
    assert (
        gh.find_log(lambda r: r.get("message") == "stopped" and r.get("connections_cut", 0) > 0)
        is None
    )
