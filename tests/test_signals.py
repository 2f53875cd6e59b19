"""Signals a process manager sends: SIGHUP reloads (supervisor and workers survive), and after
SIGTERM new connections are refused at once while in-flight requests drain."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from support import wait_until
from support.gatehouse import GatehouseProcess, public
from support.upstream import Respond, SlowHead, Upstream


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_and_keeps_serving(
    workers: int,
    start_gatehouse: Callable[..., GatehouseProcess],
    make_upstream: Callable[..., Upstream],
) -> None:
    a = make_upstream("a", Respond(body=b"from a"))
    b = make_upstream("b", Respond(body=b"from b"))
    config = {"workers": workers, "routes": public([{"from": "http://app.test", "to": a.url}])}
    gh = start_gatehouse(config)
    assert gh.get("/", "app.test").text == "from a"
    # Every worker's watcher is running (it compares the file's stamp with the one taken
    # when the supervisor read it, so the edit below is invisible to the poll).
    wait_until(
        lambda: gh.stderr_text().count('"watching the config"') == workers,
        10,
        what="every worker watching the config",
    )
    # Point the route at b with the file's size and mtime unchanged, so the 1 s change
    # poll cannot see it: only SIGHUP makes the workers read it.
    before = gh.config_path.stat()
    text = gh.config_path.read_text()
    new = text.replace(a.url, b.url)
    new += "#" * (len(text) - len(new) - 1) + "\n" if len(new) < len(text) else ""
    new = new if len(new) == len(text) else text.replace(a.url, b.url)
    gh.config_path.write_text(new)
    os.utime(gh.config_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(1.5)  # longer than the poll interval: the poll saw no change
    if len(new) == len(text):
        assert httpx.get(gh.base_url, headers={"Host": "app.test"}, timeout=5).text == "from a"
    assert gh.proc is not None
    gh.proc.send_signal(signal.SIGHUP)
    # Every worker serves the new config (fresh connections land on either worker).
    wait_until(
        lambda: all(
            httpx.get(gh.base_url, headers={"Host": "app.test"}, timeout=5).text == "from b"
            for _ in range(6)
        ),
        10,
        what="the reloaded route",
    )
    gh.proc.send_signal(signal.SIGHUP)  # unchanged: still nothing breaks
    time.sleep(0.3)
    assert gh.proc.poll() is None, gh.stderr_text()
    assert httpx.get(gh.base_url, headers={"Host": "app.test"}, timeout=5).text == "from b"
    assert "Traceback" not in gh.stderr_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_after_sigterm_new_connections_are_refused_while_draining(
    workers: int,
    start_gatehouse: Callable[..., GatehouseProcess],
    make_upstream: Callable[..., Upstream],
) -> None:
    slow = make_upstream("slow", SlowHead(delay=2.0, then=Respond(body=b"done")))
    gh = start_gatehouse(
        {
            "workers": workers,
            "shutdown_timeout": "10s",
            "routes": public([{"from": "http://slow.test", "to": slow.url}]),
        }
    )
    host, port = gh.base_url.removeprefix("http://").split(":")
    result: dict[str, object] = {}

    def call() -> None:
        try:
            r = httpx.get(gh.base_url, headers={"Host": "slow.test"}, timeout=10)
            result["status"], result["body"] = r.status_code, r.text
        except httpx.HTTPError as exc:
            result["error"] = repr(exc)

    t = threading.Thread(target=call)
    t.start()
    wait_until(lambda: slow.requests, 5, what="the slow request to reach the upstream")
    assert gh.proc is not None
    gh.proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return False
        except ConnectionRefusedError:
            return True

    started = time.monotonic()
    wait_until(refused, 1.5, interval=0.02, what="new connections to be refused")
    assert time.monotonic() - started < 1.5
    assert gh.proc.poll() is None, "still draining the in-flight request"
    t.join(10)
    assert result.get("status") == 200 and result.get("body") == "done", result
