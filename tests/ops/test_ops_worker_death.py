"""A worker killed with SIGKILL is replaced; requests on the other worker do not notice.

``workers: 2``. Keep-alive connections are opened until both workers hold some (which
worker accepted a connection is read from /proc: the socket inode in each worker's fds),
a slow request is started on every connection, and one worker is killed. Requests on the
survivor complete with 200; those on the dead worker see their connection drop (the only
failure a client can get, and a retry on a new connection succeeds); the supervisor starts
a replacement and new connections are served.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import pytest
from ops_helpers import children_of, owner_of_connection

from support import wait_until
from support.client import RawConnection
from support.gatehouse import GatehouseProcess, public
from support.upstream import Respond, SlowHead, Upstream

pytestmark = pytest.mark.e2e


def test_killed_worker_is_replaced_and_the_other_keeps_serving(  # type: ignore[no-untyped-def]
    start_gatehouse: Callable[..., GatehouseProcess], make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream("app")
    quick = Respond(body=b"quick")
    slow = SlowHead(delay=1.5, then=Respond(body=b"slow"))
    up.handler = lambda req: slow if req.path.startswith("/slow") else quick  # type: ignore[assignment]
    gh = start_gatehouse(
        {"workers": 2, "routes": public([{"from": "http://app.localhost", "to": up.url}])}
    )
    workers = wait_until(lambda: _two(children_of(gh.pid)), 10, what="2 workers")

    by_worker: dict[int, list[RawConnection]] = {w: [] for w in workers}
    spare: list[RawConnection] = []
    for _ in range(40):
        conn = RawConnection(gh.port, timeout=10)
        assert conn.request("GET", "/warm", "app.localhost").status == 200
        owner = owner_of_connection(gh.port, conn.sock.getsockname()[1], workers)
        (by_worker[owner] if owner in by_worker else spare).append(conn)
        if all(len(v) >= 2 for v in by_worker.values()):
            break
    assert all(len(v) >= 2 for v in by_worker.values()), {k: len(v) for k, v in by_worker.items()}
    victim, survivor = workers

    results: dict[int, list[object]] = {victim: [], survivor: []}

    def slow_request(worker: int, conn: RawConnection) -> None:
        try:
            r = conn.request("GET", f"/slow/{worker}", "app.localhost")
            results[worker].append((r.status, r.body))
        except (OSError, ConnectionError) as exc:
            results[worker].append(exc)

    threads = [
        threading.Thread(target=slow_request, args=(w, c))
        for w, cs in by_worker.items()
        for c in cs
    ]
    for t in threads:
        t.start()
    n_slow = sum(len(v) for v in by_worker.values())
    wait_until(
        lambda: sum(1 for r in up.requests if r.path.startswith("/slow")) >= n_slow,
        5,
        what="every slow request to reach the upstream",
    )
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(10)

    # The survivor's in-flight requests were not disturbed.
    assert results[survivor] == [(200, b"slow")] * len(by_worker[survivor]), results[survivor]
    # The victim's connections dropped: an error, never a wrong or partial success.
    assert all(isinstance(r, (OSError, ConnectionError)) for r in results[victim]), results[victim]

    # A replacement appears, and new connections are served (retrying connect errors only).
    replacement = wait_until(
        lambda: _two([p for p in children_of(gh.pid) if p != victim]),
        10,
        what="a replacement worker",
    )
    assert survivor in replacement
    gh.wait_log(lambda r: str(r.get("message")).startswith("worker exited unexpectedly"))
    for i in range(20):
        for attempt in range(3):
            try:
                with RawConnection(gh.port) as conn:
                    r = conn.request("GET", f"/after/{i}", "app.localhost")
                break
            except ConnectionRefusedError:
                if attempt == 2:
                    raise
        assert (r.status, r.body) == (200, b"quick")
    for conns in by_worker.values():
        for c in conns:
            c.close()
    for c in spare:
        c.close()


def _two(pids: list[int]) -> list[int] | None:
    return pids if len(pids) == 2 else None
