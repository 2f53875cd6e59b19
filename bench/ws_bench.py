#!/usr/bin/env python3
"""Benchmark: WebSocket echo round trips through gatehouse and through nginx (issue 15).

One run:

1. builds ``bench/ws_echo.c`` (one small epoll C program: the echo upstream and the load
   client) with ``cc -O2 ... -lcrypto`` into the run's temporary directory, installing
   ``nginx-light``, ``gcc`` and ``libssl-dev`` from Debian's packages when missing;
2. starts, each in a private temporary directory: the echo upstream (``ws_echo server``),
   nginx as a WebSocket reverse proxy (1 worker, ``proxy_http_version 1.1``, ``Upgrade`` and
   ``Connection`` passed on, the same JSON access log as ``proxy_bench.py``) and gatehouse
   (``workers: 1``, a route with ``allow_websockets: true``), waiting on each with a real
   request;
3. for each number of concurrent connections (``--connections``, default ``1,50``), runs
   ``ws_echo client`` against each proxy in ABBA order (nginx, gatehouse, gatehouse, nginx,
   ...): every connection upgrades once, then does sequential round trips of one
   ``--size``-byte binary message (send, wait for the echo, check it, send the next); the
   first ``--warmup`` seconds are not counted;
4. prints per run and the medians: messages/s, p50/p99/p99.9/max round-trip latency, the
   proxy's CPU time per message (``/proc/PID/stat`` utime+stime read by the client at the
   start and end of its measured window; for nginx its worker), the CPU shares of proxy,
   upstream and client, of every other process on the machine (``other%``) and steal; then
   the ratios gatehouse/nginx against the target (p99 <= 1.5x nginx's).

Scenarios (``--scenario``): ``plain`` (a public route) and ``authenticated`` (the upgrade
request carries a signed-in session's cookie; the route has a two-criterion policy and
``pass_identity_headers``, so the upgrade pays for a session, a policy decision and an
assertion, once per connection; the messages afterwards are the tunnel's alone).

Every process started here is stopped at exit (by pid), also on Ctrl-C and on errors.
Hold the machine-wide bench lock: ``flock /tmp/gatehouse-bench.lock python bench/ws_bench.py``.

Usage: ``python bench/ws_bench.py [--connections 1,50] [-d 8] [--warmup 2] [--rounds 2]
       [--size 32] [--scenario plain|authenticated] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_bench import (
    BENCH_HOST,
    SCENARIOS,
    UPSTREAM_BODY,
    BenchError,
    Proc,
    Processes,
    _raise_interrupt,
    environment,
    free_port,
    median,
    nginx_worker,
    others_cpu_s,
    start_gatehouse,
    start_nginx,
    stderr_problems,
    steal_s,
    wait_ready,
    workspace,
)

HERE = Path(__file__).resolve().parent
#: The issue's target: gatehouse's p99 round trip at most this many times nginx's.
P99_TARGET_RATIO = 1.5
#: Extra seconds the client may take beyond warm-up + duration before it is called stuck.
CLIENT_GRACE_S = 30.0

_WS_PROXY_BODY = """\
    log_format bench escape=json
        '{{"time":"$time_iso8601","method":"$request_method","host":"$host",'
        '"path":"$uri","status":$status,"bytes":$body_bytes_sent,"duration":$request_time,'
        '"upstream_duration":"$upstream_response_time","client":"$remote_addr"}}';
    access_log {tmp}/nginx-proxy.access.log bench buffer=64k flush=200ms;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
"""


def ensure_tools() -> None:
    """nginx, a C compiler and OpenSSL's headers (SHA-1 and base64 for the handshake)."""
    need = []
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        need.append("nginx-light")
    if shutil.which("cc") is None:
        need.append("gcc")
    if not Path("/usr/include/openssl/sha.h").exists():
        need.append("libssl-dev")
    if not need:
        return
    print(f"installing {' '.join(need)} from Debian packages ...", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = [*sudo, "apt-get", "install", "-y", "--no-install-recommends", *need]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


def build_ws_echo(tmp: Path) -> Path:
    out = tmp / "ws_echo"
    cmd = ["cc", "-O2", "-Wall", "-o", str(out), str(HERE / "ws_echo.c"), "-lcrypto"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"building ws_echo failed: {done.stderr.strip()}")
    return out


def start_upstream(procs: Processes, tmp: Path, binary: Path) -> tuple[Proc, int]:
    for _attempt in range(5):
        port = free_port()
        proc = procs.start("upstream", [str(binary), "server", str(port)], tmp)
        try:
            return proc, wait_ready(proc, lambda p=port: p, UPSTREAM_BODY.encode())
        except BenchError:
            procs.stop(proc)
    raise BenchError("the echo upstream did not start (5 attempts)")


@dataclass
class Target:
    name: str
    port: int
    proc: Proc
    cpu_pid: int


@dataclass
class RunResult:
    target: str
    connections: int
    round: int
    messages: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    msgs_per_s: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    p999_us: float = 0.0
    max_us: float = 0.0
    proxy_cpu_us_per_msg: float = 0.0
    proxy_cpu_share: float = 0.0
    upstream_cpu_share: float = 0.0
    client_cpu_share: float = 0.0
    others_cpu_share: float = 0.0
    steal_share: float = 0.0
    raw: dict[str, object] = field(default_factory=dict)


def run_client(
    binary: Path,
    target: Target,
    upstream_pid: int,
    conns: int,
    rnd: int,
    args: argparse.Namespace,
    cookie: str,
    ours: set[int],
) -> RunResult:
    argv = [
        str(binary),
        "client",
        str(target.port),
        BENCH_HOST,
        cookie or "-",
        str(conns),
        str(args.warmup),
        str(args.duration),
        str(args.size),
        str(target.cpu_pid),
        str(upstream_pid),
    ]
    exclude = {os.getpid(), upstream_pid, target.cpu_pid, *ours}
    others0, steal0, t0 = others_cpu_s(exclude), steal_s(), time.monotonic()
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=args.warmup + args.duration + CLIENT_GRACE_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"ws_echo client against {target.name} stuck") from exc
    wall = time.monotonic() - t0
    others1, steal1 = others_cpu_s(exclude), steal_s()
    if done.returncode != 0:
        raise BenchError(
            f"ws_echo client against {target.name} failed ({done.returncode}): "
            f"{done.stderr.strip()[:400]}"
        )
    raw = json.loads(done.stdout)
    r = RunResult(target.name, conns, rnd, raw=raw)
    r.messages, r.errors, r.elapsed_s = raw["messages"], raw["errors"], raw["elapsed_s"]
    r.msgs_per_s = r.messages / r.elapsed_s if r.elapsed_s else 0.0
    r.p50_us, r.p99_us, r.p999_us, r.max_us = (
        raw["p50_us"],
        raw["p99_us"],
        raw["p999_us"],
        raw["max_us"],
    )
    cpu = raw["cpu_s"]
    proxy_s, up_s = cpu[str(target.cpu_pid)], cpu[str(upstream_pid)]
    r.proxy_cpu_us_per_msg = proxy_s / r.messages * 1e6 if r.messages else 0.0
    r.proxy_cpu_share = proxy_s / r.elapsed_s
    r.upstream_cpu_share = up_s / r.elapsed_s
    r.client_cpu_share = raw["client_cpu_s"] / r.elapsed_s
    # Over the whole client invocation (warm-up included): the machine's background noise.
    others = sum(others1[pid] - c for pid, c in others0.items() if pid in others1)
    r.others_cpu_share = max(0.0, others) / wall
    r.steal_share = (steal1 - steal0) / wall
    return r


_COLUMNS = (
    ("msgs/s", "msgs_per_s", "{:>8.0f}"),
    ("p50 us", "p50_us", "{:>7.0f}"),
    ("p99 us", "p99_us", "{:>7.0f}"),
    ("p99.9", "p999_us", "{:>7.0f}"),
    ("max us", "max_us", "{:>7.0f}"),
    ("us/msg", "proxy_cpu_us_per_msg", "{:>6.1f}"),
    ("proxy%", "proxy_cpu_share", "{:>6.0%}"),
    ("upstr%", "upstream_cpu_share", "{:>6.0%}"),
    ("client%", "client_cpu_share", "{:>7.0%}"),
    ("other%", "others_cpu_share", "{:>6.0%}"),
    ("steal%", "steal_share", "{:>6.0%}"),
)


def summarize(results: list[RunResult]) -> dict[str, float]:
    return {key: median([getattr(r, key) for r in results]) for _, key, _ in _COLUMNS}


def table(
    results: list[RunResult], summaries: dict[tuple[int, str], dict[str, float]]
) -> list[str]:
    head = f"{'conns':>5} {'target':<10}{'round':>6} " + " ".join(
        f"{title:>{len(fmt.format(0))}}" for title, _, fmt in _COLUMNS
    )
    lines = [head]

    def row(conns: int, name: str, rnd: str, values: dict[str, float]) -> str:
        return f"{conns:>5} {name:<10}{rnd:>6} " + " ".join(
            fmt.format(values[key]) for _, key, fmt in _COLUMNS
        )

    for r in results:
        lines.append(row(r.connections, r.target, str(r.round), asdict(r)))
    for (conns, name), values in summaries.items():
        lines.append(row(conns, name, "median", values))
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "-c",
        "--connections",
        default="1,50",
        help="comma-separated numbers of concurrent connections (default 1,50)",
    )
    p.add_argument("-d", "--duration", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds first, per run")
    p.add_argument("--rounds", type=int, default=2, help="rounds per target (ABBA), default 2")
    p.add_argument("--size", type=int, default=32, help="message payload bytes (default 32)")
    p.add_argument("--scenario", choices=("plain", "authenticated"), default="plain")
    p.add_argument(
        "--baseline-python",
        help="also measure a second gatehouse run by this interpreter (e.g. the venv of "
        "an older build), as target 'baseline', interleaved with the others",
    )
    p.add_argument(
        "--baseline-pythonpath",
        help="PYTHONPATH for the baseline gatehouse (e.g. an older checkout's src)",
    )
    p.add_argument("--json", help="write every figure to this file")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    try:
        args.conns_list = [int(c) for c in args.connections.split(",") if c]
    except ValueError:
        p.error("--connections takes numbers, e.g. 1,50")
    if not args.conns_list or min(args.conns_list) < 1:
        p.error("--connections needs at least one positive number")
    if not 1 <= args.size <= 60000:
        p.error("--size must be 1..60000 bytes")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    procs = Processes()
    try:
        with workspace(args.keep_tmp) as tmp:
            try:
                return _bench(args, procs, tmp)
            finally:
                procs.stop_all()
    except KeyboardInterrupt:
        print("\ninterrupted; every process started here was stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


def _bench(args: argparse.Namespace, procs: Processes, tmp: Path) -> int:
    ensure_tools()
    env = environment()
    env.pop("wrk", None)
    scenario = SCENARIOS[args.scenario]
    print(f"gatehouse ws bench: scenario={scenario.name} ({scenario.description})")
    print(
        f"  connections {args.conns_list}, {args.size}-byte messages, {args.rounds} round(s) "
        f"per target, {args.warmup:g}s warm-up + {args.duration:g}s measured per run; "
        f"nothing pinned, {env['cpus']} CPUs"
    )
    print("  " + ", ".join(f"{k}: {v}" for k, v in env.items()))

    route_extra, headers = scenario.prepare(tmp, procs)
    route_extra = "    allow_websockets: true\n" + route_extra
    cookie = "; ".join(h.split(": ", 1)[1] for h in headers if h.startswith("Cookie: "))
    binary = build_ws_echo(tmp)
    upstream, upstream_port = start_upstream(procs, tmp, binary)
    nginx, nginx_port = start_nginx(
        procs,
        tmp,
        "nginx-proxy",
        _WS_PROXY_BODY,
        expect_body=UPSTREAM_BODY.encode(),
        upstream_port=upstream_port,
    )
    gate, gate_port = start_gatehouse(procs, tmp, upstream_port, route_extra, headers=headers)
    targets = {
        "nginx": Target("nginx", nginx_port, nginx, nginx_worker(nginx.pid)),
        "gatehouse": Target("gatehouse", gate_port, gate, gate.pid),
    }
    base: Proc | None = None
    if args.baseline_python or args.baseline_pythonpath:
        extra = {"PYTHONPATH": args.baseline_pythonpath} if args.baseline_pythonpath else {}
        base, base_port = start_gatehouse(
            procs,
            tmp,
            upstream_port,
            route_extra,
            name="baseline",
            headers=headers,
            python=args.baseline_python,
            env_extra=extra,
        )
        targets["baseline"] = Target("baseline", base_port, base, base.pid)
    print(
        f"  echo upstream :{upstream_port} (pid {upstream.pid}), nginx :{nginx_port} "
        f"(worker {targets['nginx'].cpu_pid}), gatehouse :{gate_port} (pid {gate.pid})"
    )

    if base is not None:
        print(f"  baseline gatehouse :{targets['baseline'].port} (pid {base.pid})")

    results: list[RunResult] = []
    order = list(targets)
    ours = {p.pid for p in procs.procs} | {t.cpu_pid for t in targets.values()}
    for conns in args.conns_list:
        for rnd in range(1, args.rounds + 1):
            # ABBA: a drift in machine load over the run falls on both targets alike.
            for name in order if rnd % 2 else order[::-1]:
                target = targets[name]
                if not target.proc.alive():
                    raise BenchError(f"{name} died (exit {target.proc.popen.returncode})")
                r = run_client(binary, target, upstream.pid, conns, rnd, args, cookie, ours)
                results.append(r)
                print(
                    f"  c={conns:<3} round {rnd} {name:<9}: {r.msgs_per_s:>8.0f} msg/s  "
                    f"p50 {r.p50_us:.0f} us  p99 {r.p99_us:.0f} us  "
                    f"CPU {r.proxy_cpu_us_per_msg:.1f} us/msg  errors {r.errors}"
                )

    summaries = {
        (conns, name): summarize(
            [r for r in results if r.connections == conns and r.target == name]
        )
        for conns in args.conns_list
        for name in order
    }
    gate_exit = procs.stop(gate)
    problems = stderr_problems(gate.stderr)
    if base is not None:
        procs.stop(base)
    print()
    for line in table(results, summaries):
        print(line)
    print()
    ratios: dict[str, dict[str, float | bool]] = {}
    for conns in args.conns_list:
        g, n = summaries[(conns, "gatehouse")], summaries[(conns, "nginx")]
        p99 = g["p99_us"] / n["p99_us"] if n["p99_us"] else 0.0
        rate = g["msgs_per_s"] / n["msgs_per_s"] if n["msgs_per_s"] else 0.0
        cpu = (
            g["proxy_cpu_us_per_msg"] / n["proxy_cpu_us_per_msg"]
            if n["proxy_cpu_us_per_msg"]
            else 0.0
        )
        met = 0 < p99 <= P99_TARGET_RATIO
        ratios[str(conns)] = {"p99": p99, "msgs_per_s": rate, "cpu_per_msg": cpu, "p99_met": met}
        print(
            f"c={conns}: gatehouse/nginx p99 {p99:.2f}x (target <= {P99_TARGET_RATIO}x: "
            f"{'MET' if met else 'NOT MET'}), msgs/s {rate:.2f}x, CPU/msg {cpu:.2f}x "
            f"({g['proxy_cpu_us_per_msg']:.1f} vs {n['proxy_cpu_us_per_msg']:.1f} us)"
        )
        if base is not None:
            b = summaries[(conns, "baseline")]
            print(
                f"c={conns}: baseline/nginx p99 "
                f"{b['p99_us'] / n['p99_us'] if n['p99_us'] else 0.0:.2f}x, "
                f"gatehouse/baseline p99 {g['p99_us'] / b['p99_us'] if b['p99_us'] else 0.0:.2f}x, "
                f"CPU/msg {b['proxy_cpu_us_per_msg']:.1f} (baseline) vs "
                f"{g['proxy_cpu_us_per_msg']:.1f} us"
            )
    errors = sum(r.errors for r in results)
    anomalies = [f"{errors} echoed message(s) did not match what was sent"] if errors else []
    if gate_exit != 0:
        anomalies.append(f"gatehouse exit status on SIGTERM: {gate_exit}")
    if problems:
        anomalies.append(f"gatehouse stderr has {len(problems)} error/non-JSON line(s):")
        anomalies += ["    " + line[:300] for line in problems[:10]]
    print("anomalies: " + ("none" if not anomalies else ""))
    for a in anomalies:
        print("  " + a)
    if args.json:
        doc = {
            "scenario": scenario.name,
            "settings": {
                "connections": args.conns_list,
                "size": args.size,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
            },
            "environment": env,
            "runs": [asdict(r) for r in results],
            "summary": {f"{c}/{n}": v for (c, n), v in summaries.items()},
            "ratios": ratios,
            "p99_target_ratio": P99_TARGET_RATIO,
            "gatehouse_exit_status": gate_exit,
            "gatehouse_stderr_problems": problems[:100],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0 if not anomalies else 1


if __name__ == "__main__":
    sys.exit(main())
