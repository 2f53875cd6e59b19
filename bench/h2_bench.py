#!/usr/bin/env python3
"""Benchmark: gatehouse against nginx as HTTP/2 reverse proxies, in front of the same upstream.

One run (issue 18, "bench/"):

1. installs ``nginx`` and ``h2load`` (Debian ``nghttp2-client``) when missing;
2. starts a fast HTTP/1.1 upstream (an nginx ``return 200``), nginx as an HTTP/2 reverse
   proxy (``http2`` listener, keep-alive upstream pool) and gatehouse (``codec_type: auto``,
   ``workers: 1``), each on its own port, waiting on each with a real request;
3. for each mode (``h2c``: prior knowledge, and ``tls``: ALPN ``h2`` with a self-signed
   certificate) and each number of concurrent streams on one connection (1, 10, 100),
   drives nginx and gatehouse with ``h2load -c 1 -m STREAMS -D SECONDS`` in ABBA order and
   computes requests/s and the p50/p99 of the per-request times h2load logs
   (``--log-file``: h2load itself prints no percentiles);
4. prints a table with the medians and the gatehouse/nginx ratios (target: >= 0.35x
   nginx's requests/s).

Fairness: one worker each; both write one access-log line per request to a buffered file;
both send the same X-Forwarded-* headers upstream; HTTP/1.1 keep-alive to the upstream.
Every process started here is stopped at exit (by pid).

Which gatehouse: by default the one this interpreter imports. ``--gatehouse
LABEL=PYTHON[:PYTHONPATH]`` (repeatable) runs another build instead, e.g. the compiled
wheel installed in a test venv, or two builds side by side in one run (before/after:
each point then runs nginx, A, B, B, A, nginx). Each build's line says whether its
request path is compiled (mypyc) or interpreted: users run the compiled one.

Usage: ``python bench/h2_bench.py [--mode h2c|tls|both] [--streams 1,10,100] [-D 5]
       [--rounds 1] [--gatehouse LABEL=PYTHON[:PYTHONPATH]]... [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_bench import (
    _NGINX_COMMON,
    _UPSTREAM_BODY,
    BENCH_HOST,
    UPSTREAM_BODY,
    BenchError,
    Processes,
    _nofile,
    _worker_connections,
    cpu_seconds,
    free_port,
    nginx_binary,
    nginx_worker,
    start_nginx,
    workspace,
)

_H2_PROXY_BODY = """\
    log_format bench escape=json
        '{{"time":"$time_iso8601","method":"$request_method","host":"$host",'
        '"path":"$uri","status":$status,"bytes":$body_bytes_sent,"duration":$request_time,'
        '"upstream_duration":"$upstream_response_time","client":"$remote_addr"}}';
    access_log {tmp}/nginx-h2.access.log bench buffer=64k flush=200ms;
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} {ssl} http2 backlog=4096;
        {certs}
        http2_max_concurrent_streams 128;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
"""

_GATEHOUSE = """\
address: 127.0.0.1:{port}
insecure_server: {insecure}
{certs}codec_type: auto
workers: 1
access_log: true
routes:
  - from: {scheme}://{host}
    to: http://127.0.0.1:{upstream_port}
    allow_public_unauthenticated_access: true
"""

_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")


@dataclass(frozen=True)
class Build:
    """A gatehouse build to measure: an interpreter and an optional PYTHONPATH."""

    label: str
    python: str
    pythonpath: str = ""

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        return env

    def describe(self) -> str:
        """Where this build's gatehouse comes from, and whether it is compiled."""
        probe = (
            "import gatehouse, gatehouse.http.h2.stream as s; "
            "print(gatehouse.__file__, 'compiled' if s.__file__.endswith('.so') "
            "else 'interpreted')"
        )
        got = subprocess.run(
            [self.python, "-c", probe], capture_output=True, text=True, env=self.env()
        )
        return got.stdout.strip() or got.stderr.strip()[-200:]


def parse_build(spec: str) -> Build:
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError("expected LABEL=PYTHON[:PYTHONPATH]")
    python, _, pythonpath = rest.partition(":")
    return Build(label, python, pythonpath)


@dataclass
class Run:
    proxy: str
    mode: str
    streams: int
    rps: float
    p50_ms: float
    p99_ms: float
    succeeded: int
    failed: int
    cpu_us_per_req: float


def ensure_tools() -> None:
    missing = [
        pkg
        for tool, pkg in (("nginx", "nginx-light"), ("h2load", "nghttp2-client"))
        if shutil.which(tool) is None and not (tool == "nginx" and Path(nginx_binary()).exists())
    ]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={BENCH_HOST}",
            "-addext",
            f"subjectAltName=DNS:{BENCH_HOST}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def h2load(port: int, mode: str, streams: int, seconds: int, log: Path) -> tuple[str, list[float]]:
    scheme = "https" if mode == "tls" else "http"
    out = subprocess.run(
        [
            "h2load",
            "-c",
            "1",
            "-t",
            "1",
            "-m",
            str(streams),
            "-D",
            str(seconds),
            "--warm-up-time",
            "1",
            "--log-file",
            str(log),
            "-H",
            f":authority: {BENCH_HOST}",
            f"{scheme}://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    times = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] == "200":
            times.append(int(parts[2]) / 1000.0)
    return out, times


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_h2(port: int, mode: str) -> None:
    deadline = time.monotonic() + 20
    scheme = "https" if mode == "tls" else "http"
    flag = "--http2" if mode == "tls" else "--http2-prior-knowledge"
    while time.monotonic() < deadline:
        got = subprocess.run(
            [
                "curl",
                "-sk",
                flag,
                "--max-time",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                "-H",
                f"Host: {BENCH_HOST}",
                f"{scheme}://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
        ).stdout
        if got == "2 200":
            return
        time.sleep(0.1)
    raise BenchError(f"no HTTP/2 200 from port {port} ({mode})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mode", choices=["h2c", "tls", "both"], default="both")
    ap.add_argument("--streams", default="1,10,100")
    ap.add_argument("-D", "--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="ABBA pairs per point")
    ap.add_argument(
        "--gatehouse",
        type=parse_build,
        action="append",
        metavar="LABEL=PYTHON[:PYTHONPATH]",
        help="a gatehouse build to measure (repeatable; default: this interpreter's)",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    ensure_tools()
    builds: list[Build] = args.gatehouse or [Build("gatehouse", sys.executable)]
    if len({b.label for b in builds} | {"nginx"}) != len(builds) + 1:
        ap.error("--gatehouse labels must be distinct and not 'nginx'")
    for b in builds:
        print(f"{b.label}: {b.describe()}", flush=True)
    modes = ["h2c", "tls"] if args.mode == "both" else [args.mode]
    streams = [int(s) for s in args.streams.split(",")]
    procs = Processes()
    runs: list[Run] = []
    try:
        with workspace(args.keep) as tmp:
            cert, key = make_cert(tmp)
            _, upstream_port = start_nginx(
                procs,
                tmp,
                "upstream",
                _UPSTREAM_BODY,
                expect_body=UPSTREAM_BODY.encode(),
                text=UPSTREAM_BODY.replace("\n", "\\n"),
            )
            for mode in modes:
                tls = mode == "tls"
                nginx_port = free_port()
                body = _H2_PROXY_BODY.format(
                    port=nginx_port,
                    tmp=tmp,
                    upstream_port=upstream_port,
                    ssl="ssl" if tls else "",
                    certs=f"ssl_certificate {cert}; ssl_certificate_key {key};" if tls else "",
                )
                (tmp / f"nginx-{mode}-tmp").mkdir(exist_ok=True)
                conf = tmp / f"nginx-{mode}.conf"
                conf.write_text(
                    _NGINX_COMMON.format(
                        workers=1,
                        nofile=_nofile(),
                        worker_connections=_worker_connections(),
                        user="user root;" if os.geteuid() == 0 else "",
                        tmp=tmp,
                        name=f"nginx-{mode}",
                        body=body,
                    )
                )
                nginx = procs.start(
                    f"nginx-{mode}",
                    [
                        nginx_binary(),
                        "-p",
                        str(tmp),
                        "-c",
                        str(conf),
                        "-e",
                        str(tmp / f"nginx-{mode}.error.log"),
                    ],
                    tmp,
                )
                wait_h2(nginx_port, mode)
                targets = {"nginx": (nginx_port, nginx_worker(nginx.pid))}
                started = []
                for b in builds:
                    gh_port = free_port()
                    gh_conf = tmp / f"{b.label}-{mode}.yaml"
                    gh_conf.write_text(
                        _GATEHOUSE.format(
                            port=gh_port,
                            insecure="false" if tls else "true",
                            certs=f"certificate_file: {cert}\ncertificate_key_file: {key}\n"
                            if tls
                            else "",
                            scheme="https" if tls else "http",
                            host=BENCH_HOST,
                            upstream_port=upstream_port,
                        )
                    )
                    gh = procs.start(
                        f"{b.label}-{mode}",
                        [b.python, "-m", "gatehouse", "run", "-c", str(gh_conf)],
                        tmp,
                        env=b.env(),
                    )
                    wait_h2(gh_port, mode)
                    targets[b.label] = (gh_port, gh.pid)
                    started.append(gh)
                for n in streams:
                    labels = ["nginx", *(b.label for b in builds)]
                    order = (labels + labels[::-1]) * args.rounds
                    for i, name in enumerate(order):
                        port, pid = targets[name]
                        cpu0 = cpu_seconds(pid)
                        out, times = h2load(
                            port, mode, n, args.seconds, tmp / f"{name}-{mode}-{n}-{i}.log"
                        )
                        cpu = cpu_seconds(pid) - cpu0
                        fin = _FINISHED.search(out)
                        req = _REQUESTS.search(out)
                        if fin is None or req is None:
                            raise BenchError(f"h2load output not understood:\n{out}")
                        done, ok = int(req.group(3)), int(req.group(4))
                        run = Run(
                            name,
                            mode,
                            n,
                            float(fin.group(3)),
                            percentile(times, 0.5),
                            percentile(times, 0.99),
                            ok,
                            done - ok,
                            cpu / max(1, done) * 1e6,
                        )
                        runs.append(run)
                        print(
                            f"  {mode:4} m={n:<3} {name:10} {run.rps:9.0f} req/s"
                            f"  p50 {run.p50_ms:7.2f} ms"
                            f"  p99 {run.p99_ms:7.2f} ms  cpu {run.cpu_us_per_req:6.1f} us/req"
                            f"  ok {ok} failed {done - ok}",
                            flush=True,
                        )
                for gh in started:
                    procs.stop(gh)
                procs.stop(nginx)
    finally:
        procs.stop_all()
    print("\nmedians (one connection, h2load -c 1 -m STREAMS):")
    print(
        f"{'mode':5} {'streams':>7} {'build':>10} {'req/s':>9} {'x nginx':>7} {'p99':>9} "
        f"{'cpu us/req':>10}"
    )
    summary = []
    for mode in modes:
        for n in streams:
            here = [r for r in runs if r.mode == mode and r.streams == n]
            nginx_rps = statistics.median(r.rps for r in here if r.proxy == "nginx")
            for label in ["nginx", *(b.label for b in builds)]:
                mine = [r for r in here if r.proxy == label]
                rps = statistics.median(r.rps for r in mine)
                p99 = statistics.median(r.p99_ms for r in mine)
                cpu = statistics.median(r.cpu_us_per_req for r in mine)
                ratio = rps / nginx_rps if nginx_rps else 0.0
                summary.append(
                    {
                        "mode": mode,
                        "streams": n,
                        "proxy": label,
                        "rps": rps,
                        "ratio": ratio,
                        "p99_ms": p99,
                        "cpu_us_per_req": cpu,
                    }
                )
                print(
                    f"{mode:5} {n:>7} {label:>10} {rps:>9.0f} {ratio:>7.2f} {p99:>7.2f}ms "
                    f"{cpu:>10.1f}"
                )
    if args.json:
        args.json.write_text(
            json.dumps({"runs": [asdict(r) for r in runs], "summary": summary}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
