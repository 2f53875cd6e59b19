"""How long a sign-out takes to reach another gatehouse process through the PostgreSQL store.

Two OS processes on one PostgreSQL (default ``postgres://postgres@127.0.0.1:5432/test``),
each with its own :class:`~gatehouse.sessions.postgres.PostgresStore` on the same tables
(a prefix unique to the run, dropped at the end). The parent deletes sessions one at a time;
the child notes when each invalidation reaches its listeners (what drops the session from
its cache). Both read ``CLOCK_MONOTONIC``, which all processes of one machine share, so the
figure is the child's arrival time minus the moment the parent's delete returned (negative:
the notification beat the delete's own reply). The child's poll runs once an hour, so every
arrival measured here came by LISTEN/NOTIFY.

    PYTHONPATH=src .venv/bin/python bench/revocation_bench.py [-n 200] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid

import psycopg

from gatehouse.sessions.postgres import PostgresStore
from gatehouse.sessions.serialize import RecordCodec

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"
CODEC = RecordCodec(b"k" * 32)


async def child(url: str, prefix: str) -> None:
    store = PostgresStore(url, CODEC, prefix=prefix, poll_interval_s=3600)

    def arrived(session_id: str | None) -> None:
        sys.stdout.write(f"{session_id} {time.monotonic_ns()}\n")
        sys.stdout.flush()

    store.add_invalidation_listener(arrived)
    await store.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    await store.close()


async def parent(url: str, n: int) -> None:
    prefix = f"bench_{uuid.uuid4().hex[:10]}_"
    store = PostgresStore(url, CODEC, prefix=prefix, poll_interval_s=3600)
    await store.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", "--url", url, "--prefix", prefix,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        from_return: list[float] = []
        from_call: list[float] = []
        for i in range(n):
            sid = f"s{i}"
            called = time.monotonic_ns()
            await store.delete(sid)
            returned = time.monotonic_ns()
            line = await asyncio.wait_for(proc.stdout.readline(), 5)
            got, at = line.decode().split()
            assert got == sid, (got, sid)
            from_return.append((int(at) - returned) / 1e6)
            from_call.append((int(at) - called) / 1e6)
            await asyncio.sleep(0.01)  # one revocation at a time, as sign-outs come
    finally:
        proc.stdin.close()
        await proc.wait()
        await store.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for table in ("sessions_v1", "once_v1", "locks_v1", "changes_v1"):
                name = psycopg.sql.Identifier(f"{prefix}{table}")
                await conn.execute(psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    for label, values in (
        ("after delete returned", from_return),
        ("after delete called", from_call),
    ):
        q = statistics.quantiles(values, n=100)
        print(
            f"{label:22} ms: min {min(values):.2f}  median {statistics.median(values):.2f}  "
            f"p95 {q[94]:.2f}  p99 {q[98]:.2f}  max {max(values):.2f}  (n={len(values)})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="revocations to time")
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        asyncio.run(child(args.url, args.prefix))
    else:
        asyncio.run(parent(args.url, args.n))


if __name__ == "__main__":
    main()
