#!/usr/bin/env python3
"""Benchmark: does gatehouse's cost per request stay flat as the work grows? (issue 15)

Each row runs two gatehouse processes that differ only in size — 1 route vs 10,000, one
path rule vs 10,000, one session vs 100,000, a 1-rule policy vs 200 rules — both behind
the same nginx ``return 200`` upstream, drives each with ``wrk`` (a Lua script cycling
the hosts, paths or cookies of the row, so both sides pay the same client-side work),
interleaved small, large, large, small..., and prints the proxy's CPU time per request
(``/proc/PID/stat`` utime+stime over the run, divided by the requests wrk counted) and the
ratio large/small. A store row compares signed-in requests with the PostgreSQL session
store against the SQLite one (a schema of its own in database ``gatehouse_bench``, dropped
at exit; the PostgreSQL transactions of each run are printed). A start-up row times
``gatehouse check`` and ``gatehouse run`` (until
the first proxied request answers) with 1 and 10,000 routes. A reload row serves 10,000
routes to a steady client (a few keep-alive connections on one route, 2,000 requests/s by
default; ``--reload-rate 0``: as fast as answers come, saturating the proxy), changes one
route and sends SIGHUP a few times, and prints the time from SIGHUP to the "config
reloaded" line and the request p99 from SIGHUP to 2 s after that line vs the steady p99
of the same run.

Usage::

    python bench/scaling_bench.py                         # every row, -c20 -d5s, 2 rounds
    python bench/scaling_bench.py --rows hosts,paths -d 10s --rounds 3
    python bench/scaling_bench.py --src /tmp/before/src   # another checkout's gatehouse
    python bench/scaling_bench.py --rows startup,reload --installed /work/venv  # a wheel
    python bench/scaling_bench.py --rows store --installed /work/venv --profile  # + py-spy

``--src`` puts that source tree first on the gatehouse processes' ``PYTHONPATH`` (the
default: this checkout's ``src``), so two versions are compared with the same command;
``--installed VENV`` runs the gatehouse installed in that virtual environment instead (the
compiled build, as shipped).
``--profile`` adds one py-spy run of each row's large side (``--native`` on a compiled
build, whose functions are then named by their Python names; see ``proxy_bench.py``).
The sessions row creates its sessions directly in the SQLite store (gatehouse's own
``SessionManager``, as ``proxy_bench.py --scenario authenticated`` does) and warms the
large side up by cycling every cookie once before measuring, so the row shows the steady
state of 100,000 sessions in rotation, not their first sight.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_bench import (
    _LISTENING,
    _UPSTREAM_BODY,
    READY_POLL_S,
    READY_TIMEOUT_S,
    UPSTREAM_BODY,
    BenchError,
    Proc,
    Processes,
    RunResult,
    _ms,
    cpu_seconds,
    ensure_tools,
    gatehouse_build,
    parse_wrk,
    postgres_bench_url,
    postgres_transactions,
    pyspy_finish,
    pyspy_start,
    run_cleanups,
    start_nginx,
)

ROOT = Path(__file__).resolve().parent.parent
#: Hosts of the routes (``h<i>.<suffix>``); a suffix no real name ends with.
SUFFIX = "scale.localhost"

_LUA = """\
local lines = {{}}
for line in io.lines("{path}") do lines[#lines + 1] = line end
local n, i = #lines, math.random(0, #lines - 1)
request = function()
  i = i + 1
  local host, path, cookie = lines[(i % n) + 1]:match("([^\\t]*)\\t([^\\t]*)\\t?(.*)")
  local headers = {{Host = host}}
  if cookie ~= "" then headers["Cookie"] = cookie end
  return wrk.format("GET", path, headers)
end
"""


@dataclass
class Side:
    """One gatehouse of a row: its config, the requests wrk cycles, and what it measured."""

    name: str
    config: str
    requests: list[tuple[str, str, str]]  # (host, path, cookie header value or "")
    warm_all: bool = False
    #: Count PostgreSQL transactions per measured run (the store row's PostgreSQL side).
    count_db: bool = False
    port: int = 0
    pid: int = 0
    proc: Proc | None = None
    results: list[RunResult] = field(default_factory=list)
    db_transactions: list[int] = field(default_factory=list)


@dataclass
class Row:
    name: str
    what: str
    target: float
    small: Side
    large: Side


def _route(host: str, upstream: int, extra: str = "") -> str:
    return f"  - from: http://{host}\n    to: http://127.0.0.1:{upstream}\n{extra}"


_PUBLIC = "    allow_public_unauthenticated_access: true\n"
_BASE = "address: 127.0.0.1:0\ninsecure_server: true\nworkers: 1\naccess_log: false\n"


def row_hosts(upstream: int, n: int) -> Row:
    hosts = [f"h{i}.{SUFFIX}" for i in range(n)]
    routes = "".join(_route(h, upstream, _PUBLIC) for h in hosts)
    one = _BASE + "routes:\n" + _route(hosts[0], upstream, _PUBLIC)
    return Row(
        "hosts",
        f"{n:,} routes, requests cycling over {n:,} hosts vs 1 route",
        1.3,
        Side("1 route", one, [(hosts[0], "/", "")]),
        Side(f"{n:,} routes", _BASE + "routes:\n" + routes, [(h, "/", "") for h in hosts]),
    )


def row_paths(upstream: int, n: int) -> Row:
    host = f"paths.{SUFFIX}"
    rules = "".join(_route(host, upstream, f"    prefix: /p{i}/\n" + _PUBLIC) for i in range(n))
    one = _BASE + "routes:\n" + _route(host, upstream, "    prefix: /p0/\n" + _PUBLIC)
    return Row(
        "paths",
        f"the last of {n:,} prefix rules on one host vs 1 rule",
        1.3,
        Side("1 rule", one, [(host, "/p0/x", "")]),
        Side(f"{n:,} rules", _BASE + "routes:\n" + rules, [(host, f"/p{n - 1}/x", "")]),
    )


#: ``--extra`` config lines, added to every gatehouse config.
EXTRA: list[str] = []


def _signed_in_base(data_dir: Path, store: str = "sqlite") -> str:
    if store == "postgres":  # a schema of its own, dropped at exit
        url = json.dumps(postgres_bench_url())  # a JSON string is a YAML string
        store += f"\ndatabroker_storage_connection_string: {url}"
    return (
        _BASE
        + "".join(line + "\n" for line in EXTRA)
        + (
            "authenticate_service_url: http://authenticate.localhost\n"
            "idp_provider: oidc\nidp_provider_url: http://127.0.0.1:9\n"
            "idp_client_id: bench\nidp_client_secret: bench-client-secret-0123456789\n"
            f"shared_secret: {base64.b64encode(secrets.token_bytes(32)).decode()}\n"
            f"cookie_secret: {base64.b64encode(secrets.token_bytes(32)).decode()}\n"
            f"signing_key: {_signing_key()}\n"
            f"data_dir: {data_dir}\ndatabroker_storage_type: {store}\n"
        )
    )


def _signing_key() -> str:
    from gatehouse.identity.keys import generate_pem

    return base64.b64encode(generate_pem().encode()).decode()


def _make_sessions(config: str, host: str, count: int) -> list[str]:
    """``count`` signed-in sessions in the config's store; their cookie header values."""
    from gatehouse.config import load_text
    from gatehouse.sessions.manager import build_session_manager

    options = load_text(config, "<bench>", env={}).options

    async def make() -> list[str]:
        manager = build_session_manager(options)
        await manager.start()
        try:
            out = []
            for i in range(count):
                session = await manager.create(
                    user_id=f"user-{i}", email=f"user{i}@example.com", groups=["staff"]
                )
                out.append(f"{options.cookie_name}={manager.cookie_value(session, host)}")
            return out
        finally:
            await manager.close()

    return asyncio.run(make())


def row_sessions(upstream: int, n: int, tmp: Path) -> Row:
    host = f"app.{SUFFIX}"
    extra = "    pass_identity_headers: true\n    allow_any_authenticated_user: true\n"
    sides = []
    for name, count in (("1 session", 1), (f"{n:,} sessions", n)):
        data = tmp / f"sessions-{count}"
        data.mkdir()
        config = _signed_in_base(data) + "routes:\n" + _route(host, upstream, extra)
        print(f"  creating {count:,} sessions ...", file=sys.stderr, flush=True)
        cookies = _make_sessions(config, host, count)
        sides.append(Side(name, config, [(host, "/", c) for c in cookies], warm_all=count > 1))
    return Row(
        "sessions",
        f"{n:,} signed-in sessions in rotation vs 1 (session + policy + assertion)",
        1.5,
        sides[0],
        sides[1],
    )


def row_policy(upstream: int, n: int, tmp: Path) -> Row:
    host = f"app.{SUFFIX}"
    sides = []
    for name, count in (("1 rule", 1), (f"{n} rules", n)):
        data = tmp / f"policy-{count}"
        data.mkdir()
        rules = "".join(
            f"      - allow: {{or: [{{email: {{is: user{i}@example.com}}}}, "
            f"{{groups: {{has: team-{i}}}}}]}}\n"
            for i in range(count - 1, -1, -1)  # the user's own rule comes last
        )
        extra = "    pass_identity_headers: true\n    policy:\n" + rules
        config = _signed_in_base(data) + "routes:\n" + _route(host, upstream, extra)
        cookies = _make_sessions(config, host, 1)
        sides.append(Side(name, config, [(host, "/", cookies[0])]))
    return Row(
        "policy", f"a {n}-rule policy (user matched by the last) vs 1 rule", 1.5, sides[0], sides[1]
    )


#: The route keys of ``proxy_bench.py --scenario authenticated``: a two-criterion policy
#: (the session's user passes both) and a signed assertion per request.
_TWO_CRITERIA = (
    "    pass_identity_headers: true\n"
    "    policy:\n"
    "      - allow:\n"
    "          and:\n"
    "            - email: {is: user0@example.com}\n"
    "            - groups: {has: staff}\n"
)


def row_store(upstream: int, tmp: Path) -> Row:
    """Signed-in requests with the PostgreSQL store vs the SQLite one (1 session each)."""
    host = f"app.{SUFFIX}"
    sides = []
    for name, store in (("SQLite", "sqlite"), ("PostgreSQL", "postgres")):
        data = tmp / f"store-{store}"
        data.mkdir()
        config = _signed_in_base(data, store) + "routes:\n" + _route(host, upstream, _TWO_CRITERIA)
        cookies = _make_sessions(config, host, 1)
        # The PostgreSQL side's transactions show whether requests reach the database.
        sides.append(Side(name, config, [(host, "/", cookies[0])], count_db=store == "postgres"))
    return Row(
        "store",
        "signed-in requests (session + 2-criterion policy + assertion): PostgreSQL store vs SQLite",
        1.15,
        sides[0],
        sides[1],
    )


# --------------------------------------------------------------------------------------------


def _env(src: Path | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    if src is not None:  # None: the installed build of --installed's interpreter
        env["PYTHONPATH"] = str(src)
    return env


#: The interpreter the gatehouse processes run (``--installed`` sets another venv's).
PYTHON = [sys.executable]


def gatehouse_command(*args: str) -> list[str]:
    return [*PYTHON, "-m", "gatehouse", *args]


def start_side(procs: Processes, tmp: Path, side: Side, src: Path | None, tag: str) -> None:
    config = tmp / f"{tag}.yaml"
    config.write_text(side.config)
    proc = procs.start(tag, gatehouse_command("run", "-c", str(config)), tmp, env=_env(src))

    def port_of() -> int | None:
        try:
            match = _LISTENING.search(proc.stderr.read_bytes())
        except OSError:
            return None
        return int(match.group(1)) if match else None

    side.port = wait_answering(proc, port_of, *side.requests[-1])
    side.pid = proc.pid
    side.proc = proc


def wait_answering(
    proc: Proc, port_of: Callable[[], int | None], host: str, path: str, cookie: str
) -> int:
    """Poll until ``proc`` proxies ``GET path`` for ``host`` with the upstream's body."""
    deadline = time.monotonic() + READY_TIMEOUT_S * 4  # 10,000 routes take a while
    headers = {"Host": host, **({"Cookie": cookie} if cookie else {})}
    last = "no port yet"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited: " + "\n".join(proc.stderr_tail()))
        port = port_of()
        if port is not None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200 and body == UPSTREAM_BODY.encode():
                    return port
                last = f"status {resp.status}"
            except OSError as exc:
                last = str(exc)
            finally:
                conn.close()
        time.sleep(READY_POLL_S)
    raise BenchError(f"{proc.name} not answering (last: {last})")


def lua_for(tmp: Path, side: Side, tag: str) -> Path:
    lines = tmp / f"{tag}.requests"
    lines.write_text("".join(f"{h}\t{p}\t{c}\n" for h, p, c in side.requests))
    script = tmp / f"{tag}.lua"
    script.write_text(_LUA.format(path=lines))
    return script


def wrk(port: int, script: Path, args: argparse.Namespace, duration: str) -> str:
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{duration}", "--latency"]
    argv += ["-s", str(script)]
    argv.append(f"http://127.0.0.1:{port}/")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def measure(side: Side, script: Path, args: argparse.Namespace, rnd: int) -> RunResult:
    result = RunResult(side.name, rnd)
    tx0 = postgres_transactions() if side.count_db else 0
    cpu0 = cpu_seconds(side.pid)
    out = wrk(side.port, script, args, args.duration)
    result.proxy_cpu_s = cpu_seconds(side.pid) - cpu0
    if side.count_db:
        side.db_transactions.append(postgres_transactions() - tx0 - 1)  # less our own
    parse_wrk(out, result)
    if result.non_2xx_3xx:
        raise BenchError(f"{side.name}: {result.non_2xx_3xx} responses were not 2xx/3xx")
    result.proxy_cpu_us_per_req = result.proxy_cpu_s / result.requests * 1e6
    return result


def warm_up(side: Side, script: Path, args: argparse.Namespace) -> None:
    """A short run; for rotations, long enough that every request line was sent once."""
    if not side.warm_all:
        wrk(side.port, script, args, "2s")
        return
    sent = 0
    while sent < len(side.requests):
        result = RunResult(side.name, 0)
        parse_wrk(wrk(side.port, script, args, "10s"), result)
        sent += result.requests
        print(f"    warm-up: {sent:,} of {len(side.requests):,}", file=sys.stderr, flush=True)


def run_row(row: Row, procs: Processes, tmp: Path, args: argparse.Namespace) -> float:
    print(f"\n== {row.name}: {row.what}", flush=True)
    scripts = {}
    for tag, side in (("small", row.small), ("large", row.large)):
        start_side(procs, tmp, side, args.src, f"{row.name}-{tag}")
        scripts[tag] = lua_for(tmp, side, f"{row.name}-{tag}")
        warm_up(side, scripts[tag], args)
    order = [("small", row.small), ("large", row.large)]
    for rnd in range(args.rounds):
        for tag, side in order if rnd % 2 == 0 else order[::-1]:
            r = measure(side, scripts[tag], args, rnd)
            side.results.append(r)
            db = ""
            if side.db_transactions:
                tx = side.db_transactions[-1]
                db = f"  {tx} PostgreSQL transactions ({1000 * tx / r.requests:.2f}/1000 req)"
            print(
                f"  round {rnd} {side.name:>16}: {r.rps:9.0f} req/s  "
                f"{r.proxy_cpu_us_per_req:7.1f} us CPU/req  p99 {r.p99_ms:6.2f} ms{db}",
                flush=True,
            )
    small = _median([r.proxy_cpu_us_per_req for r in row.small.results])
    large = _median([r.proxy_cpu_us_per_req for r in row.large.results])
    ratio = large / small
    mark = "ok" if ratio <= row.target else "OVER TARGET"
    print(
        f"  => {row.large.name} / {row.small.name}: {large:.1f} / {small:.1f} us = "
        f"{ratio:.2f}x (target <= {row.target}x: {mark})",
        flush=True,
    )
    if args.profile:
        profile_side(row.large, scripts["large"], procs, tmp, args, row.name)
    return ratio


def profile_side(
    side: Side, script: Path, procs: Processes, tmp: Path, args: argparse.Namespace, tag: str
) -> None:
    """One more wrk run of ``side`` under py-spy (not counted); prints its tables."""
    out = tmp / f"{tag}-profile.pyspy.txt"
    seconds = max(1, int(_ms(args.duration) / 1000))
    recorder = pyspy_start(
        procs, side.pid, seconds, args.profile_rate, args.profile_native, out, tmp
    )
    result = RunResult(side.name, 0)
    parse_wrk(wrk(side.port, script, args, args.duration), result)
    lines = pyspy_finish(procs, recorder, out, seconds, args.profile_top)
    mode = "py-spy --native" if args.profile_native else "py-spy"
    print(f"  profile of {side.name} ({mode}, {result.rps:.0f} req/s while profiled):", flush=True)
    for line in lines:
        print("  " + line, flush=True)


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def startup_row(
    upstream: int, n: int, tmp: Path, args: argparse.Namespace, procs: Processes
) -> None:
    print(f"\n== startup: gatehouse check and run with 1 and {n:,} routes", flush=True)
    for name, row in (
        ("1 route", row_hosts(upstream, 1).small),
        (f"{n:,} routes", row_hosts(upstream, n).large),
    ):
        config = tmp / f"startup-{len(row.requests)}.yaml"
        config.write_text(row.config)
        start = time.monotonic()
        before = os.times()
        subprocess.run(
            gatehouse_command("check", "-c", str(config)),
            env=_env(args.src),
            check=True,
            capture_output=True,
        )
        after = os.times()
        check_wall = time.monotonic() - start
        check_cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system
        )
        start = time.monotonic()
        start_side(procs, tmp, row, args.src, f"startup-{len(row.requests)}")
        run_wall = time.monotonic() - start
        run_cpu = cpu_seconds(row.pid)
        if row.proc is not None:
            procs.stop(row.proc)
        print(
            f"  {name:>14}: check {check_wall:5.2f} s wall ({check_cpu:5.2f} s CPU); "
            f"run until the first proxied answer {run_wall:5.2f} s wall ({run_cpu:5.2f} s CPU)",
            flush=True,
        )


#: ``--reload-*``: the reload row's phases, seconds.
RELOAD_STEADY_S = 3.0
#: After the "config reloaded" line: the collections that scan the new state come later.
RELOAD_AFTER_S = 2.0


class LoadClient:
    """A client in a thread: ``connections`` keep-alive connections sending ``GET /`` for
    ``host``, each as soon as its previous answer is in (``rate`` 0: closed loop, the proxy
    saturated) or at ``rate`` requests/s over all of them. Records (start, end) of every
    request on the monotonic clock, so any window's latencies can be picked; a paced
    request that goes out late (its connection still waiting for the previous answer)
    counts from when it was due, so a stall also delays the requests queued behind it (no
    coordinated omission)."""

    def __init__(self, port: int, host: str, connections: int, rate: float = 0.0) -> None:
        self.request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        self.port, self.connections, self.rate = port, connections, rate
        self.times: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._thread.join(30)

    async def _run(self) -> None:
        await asyncio.gather(*(self._one(i) for i in range(self.connections)))

    async def _one(self, i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        want = UPSTREAM_BODY.encode()
        gap = self.connections / self.rate if self.rate else 0.0
        due = time.monotonic() + gap * i / self.connections
        try:
            while not self._stop:
                start = time.monotonic()
                if gap:
                    if due > start:  # on time: the client's own timer lateness not counted
                        await asyncio.sleep(due - start)
                        start = time.monotonic()
                    else:  # late: the proxy kept this one waiting since it was due
                        start = due
                    due += gap
                writer.write(self.request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                self.times.append((start, time.monotonic()))
                if not head.startswith(b"HTTP/1.1 200") or body != want:
                    self.failures.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
                    return
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.failures.append(repr(exc))
        finally:
            writer.close()

    def latencies_ms(self, windows: list[tuple[float, float]]) -> list[float]:
        """Latencies of the requests that overlap any of ``windows``."""
        return [
            (end - start) * 1000
            for start, end in self.times
            if any(start < w_end and end > w_start for w_start, w_end in windows)
        ]


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _reload_lines(proc: Proc) -> list[dict[str, object]]:
    try:
        text = proc.stderr.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        if '"config reloaded"' in line or '"config reload failed' in line:
            out.append(json.loads(line))
    return out


def reload_row(
    upstream: int, n: int, tmp: Path, args: argparse.Namespace, procs: Processes
) -> float:
    """Reload a config of ``n`` routes, changing one route each time, under steady load.

    Returns p99 during the reload windows / p99 of the steady windows (same run).
    """
    print(
        f"\n== reload: {n:,} routes, one route changed per reload, under load "
        f"({args.reload_connections} connections on one route, "
        f"{f'{args.reload_rate:.0f} requests/s' if args.reload_rate else 'closed loop'}), "
        f"{args.reloads} reloads",
        flush=True,
    )
    side = row_hosts(upstream, n).large
    side.requests = [side.requests[0]]
    start_side(procs, tmp, side, args.src, "reload")
    proc = side.proc
    if proc is None:
        raise BenchError("reload: gatehouse did not start")
    config = tmp / "reload.yaml"
    client = LoadClient(side.port, side.requests[0][0], args.reload_connections, args.reload_rate)
    client.start()
    steady: list[tuple[float, float]] = []
    during: list[tuple[float, float]] = []
    walls: list[float] = []
    cpu0 = cpu_seconds(proc.pid)
    try:
        time.sleep(1.0)  # warm-up, not counted
        for r in range(args.reloads):
            t0 = time.monotonic()
            time.sleep(RELOAD_STEADY_S)
            steady.append((t0, time.monotonic()))
            old = f"http://h{n // 2 + r}.{SUFFIX}\n"
            text = config.read_text()
            if old not in text:
                raise BenchError(f"reload: route {old.strip()} not in the config")
            staged = tmp / "reload.yaml.new"
            staged.write_text(text.replace(old, f"http://changed{r}.{SUFFIX}\n", 1))
            os.replace(staged, config)
            seen = len(_reload_lines(proc))
            hup = time.monotonic()
            os.kill(proc.pid, signal.SIGHUP)
            deadline = hup + 60
            while len(lines := _reload_lines(proc)) == seen:
                if time.monotonic() > deadline or not proc.alive():
                    raise BenchError("reload: no 'config reloaded' line within 60 s")
                time.sleep(0.005)
            done = time.monotonic()
            line = lines[-1]
            if line.get("message") != "config reloaded":
                raise BenchError(f"reload failed: {line}")
            walls.append(done - hup)
            time.sleep(RELOAD_AFTER_S)
            during.append((hup, time.monotonic()))
            win = client.latencies_ms([during[-1]])
            busy = client.latencies_ms([(hup, done)]) or [float("nan")]
            after = client.latencies_ms([(done, during[-1][1])])
            print(
                f"  reload {r}: {done - hup:5.3f} s SIGHUP to 'config reloaded' "
                f"(load_s {line.get('load_s')}, build_s {line.get('build_s')}, "
                f"compiled {line.get('compiled')}); window p99 {_p(win, 0.99):6.2f} ms, "
                f"max {max(win):6.2f} ms (while reloading: p99 {_p(busy, 0.99):.2f}, max "
                f"{max(busy):.2f}; after: p99 {_p(after, 0.99):.2f}, max {max(after):.2f})",
                flush=True,
            )
        t0 = time.monotonic()
        time.sleep(RELOAD_STEADY_S)
        steady.append((t0, time.monotonic()))
    finally:
        client.stop()
    cpu = cpu_seconds(proc.pid) - cpu0
    procs.stop(proc)
    if client.failures:
        raise BenchError(f"reload: requests failed: {client.failures[:3]}")
    s_lat, d_lat = client.latencies_ms(steady), client.latencies_ms(during)
    ratio = _p(d_lat, 0.99) / _p(s_lat, 0.99)
    mark = "ok" if ratio <= 1.5 else "OVER TARGET"
    print(
        f"  steady: {len(s_lat):,} requests, p50 {_p(s_lat, 0.5):.2f} ms, "
        f"p99 {_p(s_lat, 0.99):.2f} ms, max {max(s_lat):.2f} ms\n"
        f"  reload windows (SIGHUP to {RELOAD_AFTER_S:.0f} s after the log line): "
        f"{len(d_lat):,} requests, p50 {_p(d_lat, 0.5):.2f} ms, p99 {_p(d_lat, 0.99):.2f} ms, "
        f"max {max(d_lat):.2f} ms\n"
        f"  reload wall (SIGHUP to 'config reloaded'): median {_median(walls):.3f} s, "
        f"max {max(walls):.3f} s (target <= 1 s); proxy CPU over the row {cpu:.2f} s\n"
        f"  => reload p99 / steady p99: {ratio:.2f}x (target <= 1.5x: {mark})",
        flush=True,
    )
    return ratio


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--rows", default="hosts,paths,sessions,policy,store,startup,reload")
    p.add_argument("--reloads", type=int, default=3, help="reloads of the reload row")
    p.add_argument(
        "--reload-connections", type=int, default=4, help="the reload row's client connections"
    )
    p.add_argument(
        "--reload-rate",
        type=float,
        default=2000.0,
        help="the reload row's requests/s over all connections (0: closed loop, saturating)",
    )
    p.add_argument("-c", "--connections", type=int, default=20)
    p.add_argument("-d", "--duration", default="5s")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--routes", type=int, default=10_000)
    p.add_argument("--sessions", type=int, default=100_000)
    p.add_argument("--rules", type=int, default=200)
    p.add_argument("--src", type=Path, default=ROOT / "src", help="gatehouse source tree to run")
    p.add_argument(
        "--installed",
        type=Path,
        metavar="VENV",
        help="run the gatehouse installed in VENV (e.g. the compiled wheel) instead of --src",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after each row's rounds, one more run of its large side under py-spy",
    )
    p.add_argument(
        "--profile-native",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy --native (C frames, compiled functions by their Python names); "
        "default: on when the gatehouse run is a compiled build",
    )
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument(
        "--profile-top", type=int, default=20, help="functions shown per profile listing"
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        help="a config line for the signed-in rows, e.g. 'session_cache_max_age: 60s'",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.src = args.src.resolve()
    if args.installed is not None:
        PYTHON[:] = [str(args.installed / "bin" / "python")]
        args.src = None
    EXTRA.extend(args.extra)
    sys.path.insert(0, str(ROOT / "src"))  # this checkout's modules make the sessions
    ensure_tools(need_pyspy=args.profile)
    build, where = gatehouse_build(PYTHON[0], _env(args.src))
    if args.profile_native is None:
        # Compiled code is invisible to py-spy without --native.
        args.profile_native = build == "compiled"
    rows = args.rows.split(",")
    procs = Processes()
    ratios: dict[str, float] = {}
    # A profile's raw stacks are kept for flame graphs; otherwise nothing is.
    kept = tempfile.mkdtemp(prefix="gatehouse-scaling-") if args.profile else None
    with (
        contextlib.nullcontext(kept)
        if kept
        else tempfile.TemporaryDirectory(prefix="gatehouse-scaling-") as t
    ):
        tmp = Path(t)
        try:
            _, upstream = start_nginx(
                procs,
                tmp,
                "upstream",
                _UPSTREAM_BODY,
                expect_body=UPSTREAM_BODY.encode(),
                text=UPSTREAM_BODY.replace("\n", "\\n"),
            )
            print(
                f"gatehouse from {args.installed or args.src} ({build}: {where}); "
                f"wrk -t1 -c{args.connections} "
                f"-d{args.duration}, {args.rounds} rounds",
                flush=True,
            )
            builders: dict[str, Callable[[], Row]] = {
                "hosts": lambda: row_hosts(upstream, args.routes),
                "paths": lambda: row_paths(upstream, args.routes),
                "sessions": lambda: row_sessions(upstream, args.sessions, tmp),
                "policy": lambda: row_policy(upstream, args.rules, tmp),
                "store": lambda: row_store(upstream, tmp),
            }
            for name in rows:
                if name == "startup":
                    startup_row(upstream, args.routes, tmp, args, procs)
                    continue
                if name == "reload":
                    ratios[name] = reload_row(upstream, args.routes, tmp, args, procs)
                    continue
                row = builders[name]()
                try:
                    ratios[name] = run_row(row, procs, tmp, args)
                finally:
                    for side in (row.small, row.large):
                        if side.proc is not None:
                            procs.stop(side.proc)
        finally:
            procs.stop_all()
            run_cleanups()  # e.g. the store row's PostgreSQL schemas
    print(
        "\nsummary (CPU per request large / small; reload: p99 during reloads / steady): "
        + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
