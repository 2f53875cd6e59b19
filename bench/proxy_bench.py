#!/usr/bin/env python3
"""Benchmark: gatehouse against nginx as a plain reverse proxy, in front of the same upstream.

One run does everything (issue 2, "Speed"):

1. installs ``nginx`` and ``wrk`` from Debian's packages when missing;
2. starts a fast upstream (an nginx ``return 200``), nginx as a plain keep-alive reverse proxy
   and gatehouse (``workers: 1``), each in a private temporary directory, and waits on each
   by polling a real request through it (never a fixed sleep);
3. warms each up, then drives each with ``wrk --latency`` at a fixed concurrency, interleaving
   the runs in ABBA order (nginx, gatehouse, gatehouse, nginx, ...) so slow drift on the shared
   machine hits both alike;
4. prints requests/s, p50 and p99 latency per run and the medians, the ratios gatehouse/nginx,
   the CPU time per request of each proxy process (``/proc/PID/stat`` utime+stime deltas over
   the run) and their peak RSS (``VmHWM``), and anything odd (non-2xx, socket errors, error
   lines or crashes in gatehouse's stderr, statuses found in both access logs);
5. with ``--profile``, runs one more wrk round against gatehouse under ``py-spy record``
   (``--native`` on a compiled build, its mypyc functions named by their Python names) or
   ``cProfile``, and prints the top functions, self and inclusive;
6. with ``--json FILE``, writes every figure to FILE.

Nothing is pinned to a CPU: upstream, both proxies and wrk share the machine's cores, as the
issue's target (>= 0.45x nginx's requests/s, p99 <= 3x nginx's) is stated for that set-up.
Every process started here is stopped at exit, also on Ctrl-C and on errors.

Fairness choices (both proxies do the same work where it can be configured):
  * one worker process each; HTTP/1.1 keep-alive on both sides; nginx keeps as many idle
    upstream connections as gatehouse's pool does (``keepalive`` =
    ``POOL_MAX_IDLE_PER_ENDPOINT``, ``proxy_set_header Connection ""``);
  * both can hold every connection a run needs: the open-files limit is raised to its hard
    limit for every process started here, and nginx's ``worker_connections`` covers the
    client connections plus as many upstream ones (with too few, nginx drops connections
    mid-request: wrk's "read" errors at -c5000);
  * both write one JSON access-log line per request to a file, buffered (gatehouse: 64 KiB or
    0.2 s; nginx: ``buffer=64k flush=200ms``);
  * nginx sets the same X-Forwarded-* request headers gatehouse sets;
  * ``keepalive_requests`` is raised on nginx so neither proxy closes wrk's connections mid-run.

Usage: ``python bench/proxy_bench.py [-c 50] [-t 1] [-d 10s] [--rounds 2] [--profile]
       [--json out.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

#: Host header every benchmark request carries; gatehouse routes it, nginx ignores it.
BENCH_HOST = "bench.localhost"
#: Body of the upstream's fixed response (small: we measure proxy overhead, not bandwidth).
UPSTREAM_BODY = "hello from the gatehouse bench upstream\n"
#: How long to wait for a process to serve its first request, seconds.
READY_TIMEOUT_S = 30.0
#: Interval between readiness polls, seconds (a poll interval, not a readiness guess).
READY_POLL_S = 0.05
#: How long a process gets to exit after SIGTERM before SIGKILL, seconds.
STOP_TIMEOUT_S = 10.0
#: Upstream CPU use above this share of one core during a run means it may be the bottleneck.
UPSTREAM_BUSY_WARN = 0.80
#: Lines of gatehouse stderr shown when something looks wrong.
STDERR_EXCERPT_LINES = 15

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True, slots=True)
class Scenario:
    """What a benchmark scenario adds to the gatehouse route and to every wrk request.

    ``prepare`` runs once before anything else starts (it may start helper processes
    with the :class:`Processes` it is given); it may return extra route keys (YAML text,
    indented under the route) and extra wrk headers.
    """

    name: str
    description: str
    prepare: Callable[[Path, Processes], tuple[str, list[str]]]
    #: The issue's throughput target for this scenario, as a fraction of plain nginx.
    target_ratio: float = 0.45


def _prepare_plain(_tmp: Path, _procs: Processes) -> tuple[str, list[str]]:
    # Pomerium's key for "no sign-in, no policy": without it the route needs a session.
    return "    allow_public_unauthenticated_access: true\n", []


def _authenticated(tmp: Path, store: str) -> tuple[str, list[str]]:
    """A signed-in session made directly in the store, a policy, and identity assertions.

    The session is created with gatehouse's own ``SessionManager`` (no browser dance), in
    the same store gatehouse will read (SQLite in the run's data dir, the Redis on
    127.0.0.1:6379, or a schema of its own in PostgreSQL: :func:`postgres_bench_url`);
    its cookie goes into every wrk request. The IdP is never contacted:
    the session has no refresh token, so it is never refreshed.
    """
    import asyncio
    import base64
    import secrets as pysecrets

    from gatehouse.config import load_text
    from gatehouse.sessions.manager import build_session_manager

    data_dir = tmp / "data"
    global_keys = (
        "authenticate_service_url: http://authenticate.localhost\n"
        "idp_provider: oidc\n"
        "idp_provider_url: http://127.0.0.1:9\n"
        "idp_client_id: bench\n"
        "idp_client_secret: bench-client-secret-0123456789\n"
        f"shared_secret: {base64.b64encode(pysecrets.token_bytes(32)).decode()}\n"
        f"cookie_secret: {base64.b64encode(pysecrets.token_bytes(32)).decode()}\n"
        f"data_dir: {data_dir}\n"
        f"databroker_storage_type: {store}\n"
    )
    if store == "redis":
        global_keys += "databroker_storage_connection_string: redis://127.0.0.1:6379/0\n"
    elif store == "postgres":
        url = json.dumps(postgres_bench_url())  # a JSON string is a YAML string
        global_keys += f"databroker_storage_connection_string: {url}\n"
    options = load_text("insecure_server: true\n" + global_keys, "<bench>", env={}).options

    async def make_cookie() -> str:
        manager = build_session_manager(options)
        await manager.start()
        try:
            session = await manager.create(
                user_id="bench-user",
                email="bench@example.com",
                name="Bench User",
                groups=["staff", "bench"],
            )
            return manager.cookie_value(session, BENCH_HOST)
        finally:
            await manager.close()

    cookie = asyncio.run(make_cookie())
    route_keys = (
        "    pass_identity_headers: true\n"
        "    policy:\n"
        "      - allow:\n"
        "          and:\n"
        "            - email: {is: bench@example.com}\n"
        "            - groups: {has: staff}\n"
    )
    return route_keys + global_keys, [f"Cookie: _gatehouse={cookie}"]


def _prepare_authenticated(tmp: Path, _procs: Processes) -> tuple[str, list[str]]:
    return _authenticated(tmp, "sqlite")


def _prepare_authenticated_redis(tmp: Path, _procs: Processes) -> tuple[str, list[str]]:
    return _authenticated(tmp, "redis")


def _prepare_authenticated_postgres(tmp: Path, _procs: Processes) -> tuple[str, list[str]]:
    return _authenticated(tmp, "postgres")


#: The PostgreSQL server the postgres scenarios use (the tests' one: trust auth, on
#: loopback); only its host, port and user are taken: the bench works in its own database.
POSTGRES_URL = os.environ.get(
    "GATEHOUSE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
#: The bench's own database, created when missing (the tests' database is left alone).
POSTGRES_BENCH_DB = "gatehouse_bench"
#: What to undo at exit, newest first (``main`` runs these after stopping every process).
CLEANUPS: list[Callable[[], None]] = []


def run_cleanups() -> None:
    while CLEANUPS:
        try:
            CLEANUPS.pop()()
        except Exception as exc:  # one failed clean-up must not skip the others
            print(f"  ! clean-up failed: {exc}", file=sys.stderr)


def drop_orphan_schemas(conn: Any) -> list[str]:
    """Drop the ``run_<pid>_<time>`` schemas of bench processes that are gone (killed
    before their clean-up ran), so that :data:`POSTGRES_BENCH_DB` does not fill up."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname ~ '^run_[0-9]+_[0-9]+$'"
    ).fetchall()
    dropped = []
    for (name,) in rows:
        pid = int(name.split("_")[1])
        try:
            os.kill(pid, 0)
            continue  # that run is still going
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        dropped.append(name)
    return dropped


def postgres_bench_url() -> str:
    """A connection string for a new, empty schema in :data:`POSTGRES_BENCH_DB`.

    The schema (``run_<random>``) is the first of the connection's ``search_path``, so
    gatehouse creates its tables there and names its LISTEN channel after it: each run
    starts from empty tables and hears only its own notifications. It is dropped at exit
    (:func:`run_cleanups`).
    """
    from urllib.parse import quote, urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(POSTGRES_URL)
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as admin:
            found = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (POSTGRES_BENCH_DB,)
            ).fetchone()
            if found is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    admin.execute(f'CREATE DATABASE "{POSTGRES_BENCH_DB}"')
        bench_url = urlunsplit(parts._replace(path=f"/{POSTGRES_BENCH_DB}", query=""))
        schema = f"run_{os.getpid()}_{int(time.time())}"
        with psycopg.connect(bench_url, autocommit=True, connect_timeout=5) as conn:
            drop_orphan_schemas(conn)
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL at {parts.hostname}:{parts.port}: {exc}") from exc

    def drop() -> None:
        with psycopg.connect(bench_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    CLEANUPS.append(drop)
    return f"{bench_url}?options={quote(f'-csearch_path={schema}')}"


def postgres_transactions() -> int:
    """Transactions run so far in :data:`POSTGRES_BENCH_DB` (``pg_stat_database``; each
    backend reports its own within about a second, so count over runs of seconds)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    url = urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{POSTGRES_BENCH_DB}", query=""))
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (POSTGRES_BENCH_DB,),
        ).fetchone()
    return int(row[0]) if row else 0


#: The OpenID provider the tests run (panva's oidc-provider; its ID tokens live 300 s).
OIDC_PROVIDER_DIR = Path(__file__).resolve().parent.parent / "tests/authenticate/oidc_provider"
_BEARER_CLIENT = ("bench", "bench-client-secret-0123456789abcdef-0123456789")
_BEARER_CALLBACK = "http://authenticate.localhost/oauth2/callback"


def _prepare_bearer(tmp: Path, procs: Processes) -> tuple[str, list[str]]:
    """A real ID token in every request's ``Authorization: Bearer`` (no cookie).

    Starts the tests' OpenID provider (``ID_TOKEN_CLAIMS=1``: claims in the ID token),
    runs one code flow with PKCE for alice, and gives gatehouse the route
    ``bearer_token_format: idp_identity_token`` with the ``authenticated`` scenario's
    policy and assertion. The token is verified once (JWKS signature) and then served
    from gatehouse's token cache: the figure is the cost of a cached bearer request.
    """
    import base64
    import hashlib
    import secrets as pysecrets

    import httpx

    node = shutil.which("node")
    if node is None or not (OIDC_PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        raise BenchError(f"needs node and `npm ci` in {OIDC_PROVIDER_DIR} (the tests run it)")
    client_id, client_secret = _BEARER_CLIENT
    env = {
        **os.environ,
        "CLIENT_ID": client_id,
        "CLIENT_SECRET": client_secret,
        "REDIRECT_URIS": _BEARER_CALLBACK,
        "ID_TOKEN_CLAIMS": "1",
    }
    proc = procs.start("oidc-provider", [node, str(OIDC_PROVIDER_DIR / "server.js")], tmp, env)
    deadline = time.monotonic() + READY_TIMEOUT_S
    port = None
    while port is None:
        found = re.search(r"^PORT (\d+)$", proc.stdout.read_text(), re.MULTILINE)
        if found:
            port = int(found.group(1))
        elif not proc.alive() or time.monotonic() > deadline:
            raise BenchError("the OpenID provider did not start: " + " ".join(proc.stderr_tail()))
        else:
            time.sleep(READY_POLL_S)
    issuer = f"http://127.0.0.1:{port}"
    verifier = pysecrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    with httpx.Client(timeout=10) as http:
        meta = http.get(f"{issuer}/.well-known/openid-configuration").json()
        url = str(
            httpx.URL(meta["authorization_endpoint"]).copy_merge_params(
                {
                    "client_id": client_id,
                    "response_type": "code",
                    "redirect_uri": _BEARER_CALLBACK,
                    "scope": "openid email profile groups",
                    "state": "bench",
                    "nonce": "bench",
                    "login_hint": "alice",
                    "prompt": "consent",
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                }
            )
        )
        for _ in range(20):  # the browser's part: follow the provider to the callback
            location = http.get(url).headers.get("location")
            if location is None:
                raise BenchError("the OpenID provider did not redirect during sign-in")
            url = str(httpx.URL(url).join(location))
            if url.startswith(_BEARER_CALLBACK):
                break
        answer = http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": httpx.URL(url).params["code"],
                "redirect_uri": _BEARER_CALLBACK,
                "code_verifier": verifier,
            },
            auth=(client_id, client_secret),
        )
    if answer.status_code != 200:
        raise BenchError(f"token request failed: {answer.status_code} {answer.text[:200]}")
    id_token = answer.json()["id_token"]
    global_keys = (
        "authenticate_service_url: http://authenticate.localhost\n"
        "idp_provider: oidc\n"
        f"idp_provider_url: {issuer}\n"
        f"idp_client_id: {client_id}\n"
        f"idp_client_secret: {client_secret}\n"
        f"shared_secret: {base64.b64encode(pysecrets.token_bytes(32)).decode()}\n"
        f"cookie_secret: {base64.b64encode(pysecrets.token_bytes(32)).decode()}\n"
        f"data_dir: {tmp / 'data'}\n"
    )
    route_keys = (
        "    bearer_token_format: idp_identity_token\n"
        "    pass_identity_headers: true\n"
        "    policy:\n"
        "      - allow:\n"
        "          and:\n"
        "            - email: {is: alice@example.com}\n"
        "            - groups: {has: staff}\n"
    )
    return route_keys + global_keys, [f"Authorization: Bearer {id_token}"]


SCENARIOS = {
    "plain": Scenario("plain", "plain proxying: no session, no policy", _prepare_plain),
    "authenticated": Scenario(
        "authenticated",
        "signed-in session (SQLite store) + 2-criterion policy + signed assertion",
        _prepare_authenticated,
        0.35,
    ),
    "authenticated-redis": Scenario(
        "authenticated-redis",
        "as authenticated, with the Redis session store on 127.0.0.1:6379",
        _prepare_authenticated_redis,
        0.35,
    ),
    "authenticated-postgres": Scenario(
        "authenticated-postgres",
        "as authenticated, with the PostgreSQL session store (a schema of its own in "
        f"database {POSTGRES_BENCH_DB})",
        _prepare_authenticated_postgres,
        0.35,
    ),
    "bearer": Scenario(
        "bearer",
        "IdP ID token as Authorization: Bearer (cached after one verification) + policy "
        "+ signed assertion",
        _prepare_bearer,
        0.35,
    ),
}


# --------------------------------------------------------------------------------------------
# Processes


class BenchError(RuntimeError):
    """The benchmark cannot go on (a process did not start, a tool is missing...)."""


@dataclass
class Proc:
    """A process this script started, with where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_tail(self, lines: int = STDERR_EXCERPT_LINES) -> list[str]:
        try:
            text = self.stderr.read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


class Processes:
    """Starts processes in their own session and stops every one of them, by pid, at exit."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(
        self, name: str, argv: list[str], tmp: Path, env: dict[str, str] | None = None
    ) -> Proc:
        stdout = tmp / f"{name}.stdout"
        stderr = tmp / f"{name}.stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            # Own session: a Ctrl-C in the terminal reaches only this script, which then
            # stops its children in order (and after collecting what it needs).
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        proc = Proc(name, popen, stdout, stderr)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, sig: int = signal.SIGTERM) -> int | None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(sig)
            try:
                proc.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(
                    f"  ! {proc.name} (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT_S}s; "
                    "killing",
                    file=sys.stderr,
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait()
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.popen.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------------------------
# Tools and readiness


def ensure_tools(need_pyspy: bool) -> None:
    """Install nginx and wrk from Debian's packages when missing; py-spy from PyPI if asked."""
    missing = [
        pkg
        for tool, pkg in (("nginx", "nginx-light"), ("wrk", "wrk"))
        if shutil.which(tool) is None
    ]
    if missing:
        print(f"installing {' '.join(missing)} from Debian packages ...", file=sys.stderr)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = [*sudo, "apt-get", "install", "-y", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env).returncode != 0:
            subprocess.run([*sudo, "apt-get", "update"], env=env, check=True)
            subprocess.run(cmd, env=env, check=True)
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise BenchError(f"{tool} is not installed and could not be installed")
    if need_pyspy and pyspy_binary() is None:
        print("installing py-spy from PyPI ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    """A port free right now (nginx cannot report a port-0 bind back; a clash is retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(
    port: int, host: str = BENCH_HOST, timeout_s: float = 2.0, headers: list[str] | None = None
) -> tuple[int, bytes]:
    """One GET / through ``port`` (with the scenario's headers); returns (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    extra = dict(h.split(": ", 1) for h in headers or [])
    try:
        conn.request("GET", "/", headers={"Host": host, **extra})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(
    proc: Proc,
    port_of: Callable[[], int | None],
    expect_body: bytes | None,
    headers: list[str] | None = None,
) -> int:
    """Poll until ``proc`` answers 200 (with ``expect_body`` when given); returns its port."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no port yet"
    while time.monotonic() < deadline:
        if not proc.alive():
            tail = "\n    ".join(proc.stderr_tail())
            raise BenchError(
                f"{proc.name} exited with {proc.popen.returncode} before ready:\n    {tail}"
            )
        port = port_of()
        if port is not None:
            try:
                status, body = probe(port, headers=headers)
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200 and (expect_body is None or body == expect_body):
                    return port
                last = f"status {status}, body {body[:80]!r}"
        time.sleep(READY_POLL_S)
    raise BenchError(f"{proc.name} not ready after {READY_TIMEOUT_S}s (last: {last})")


# --------------------------------------------------------------------------------------------
# nginx (upstream and reverse proxy)

_NGINX_COMMON = """\
daemon off;
master_process on;
worker_processes {workers};
{user}
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {worker_connections}; }}
http {{
    client_body_temp_path {tmp}/{name}-tmp/client;
    proxy_temp_path {tmp}/{name}-tmp/proxy;
    fastcgi_temp_path {tmp}/{name}-tmp/fastcgi;
    uwsgi_temp_path {tmp}/{name}-tmp/uwsgi;
    scgi_temp_path {tmp}/{name}-tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
{body}
}}
"""

_UPSTREAM_BODY = """\
    access_log off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "{text}";
        }}
    }}
"""

_PROXY_BODY = """\
    log_format bench escape=json
        '{{"time":"$time_iso8601","method":"$request_method","host":"$host",'
        '"path":"$uri","status":$status,"bytes":$body_bytes_sent,"duration":$request_time,'
        '"upstream_duration":"$upstream_response_time","client":"$remote_addr"}}';
    access_log {tmp}/nginx-proxy.access.log bench buffer=64k flush=200ms;
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive {keepalive};
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
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


#: Client connections of the run (set by ``main``), for nginx's connection limits.
_RUN_CONNECTIONS = [50]
#: Descriptors an nginx worker or gatehouse needs beyond two per client connection.
SPARE_FDS = 1024


def _worker_connections() -> int:
    # Each client connection may hold an upstream one while its request is in flight.
    return max(8192, 2 * _RUN_CONNECTIONS[0] + SPARE_FDS)


def _gatehouse_pool_idle() -> int:
    """Idle upstream connections gatehouse keeps per endpoint (nginx gets the same)."""
    from gatehouse.http.upstream import POOL_MAX_IDLE_PER_ENDPOINT

    return POOL_MAX_IDLE_PER_ENDPOINT


def _nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_nofile_limit(connections: int) -> None:
    """Raise this process's open-files limit (inherited by everything started here) to the
    hard limit, and fail early when even that cannot hold a run of ``connections``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = 2 * connections + SPARE_FDS
    if hard != resource.RLIM_INFINITY and hard < need:
        raise BenchError(
            f"-c{connections} needs about {need} open files per proxy; the hard limit is "
            f"{hard} (raise it with ulimit -Hn or limits.conf)"
        )


def _const(port: int) -> Callable[[], int | None]:
    return lambda: port


def start_nginx(
    procs: Processes,
    tmp: Path,
    name: str,
    body: str,
    workers: int = 1,
    expect_body: bytes | None = None,
    **fmt: Any,
) -> tuple[Proc, int]:
    """Start one nginx (``daemon off``, private prefix); retries if its port got taken."""
    for _attempt in range(5):
        port = free_port()
        (tmp / f"{name}-tmp").mkdir(exist_ok=True)
        # As root, nginx's workers would switch to "nobody" and could not write in our tmp dir.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = _NGINX_COMMON.format(
            worker_connections=_worker_connections(),
            nofile=_nofile(),
            workers=workers,
            user=user,
            tmp=tmp,
            name=name,
            body=body.format(port=port, tmp=tmp, **fmt),
        )
        conf_path = tmp / f"{name}.conf"
        conf_path.write_text(conf)
        argv = [
            nginx_binary(),
            "-p",
            str(tmp),
            "-c",
            str(conf_path),
            "-e",
            str(tmp / f"{name}.error.log"),
        ]
        proc = procs.start(name, argv, tmp)
        try:
            return proc, wait_ready(proc, _const(port), expect_body)
        except BenchError as exc:
            procs.stop(proc)
            if "Address already in use" not in str(exc) + (tmp / f"{name}.error.log").read_text(
                errors="replace"
            ):
                raise
    raise BenchError(f"{name}: no free port after 5 attempts")


# --------------------------------------------------------------------------------------------
# gatehouse

_GATEHOUSE_CONFIG = """\
address: 127.0.0.1:0
insecure_server: true
workers: 1
access_log: true
routes:
  - from: http://{host}
    to: http://127.0.0.1:{upstream_port}
{route_extra}"""

_LISTENING = re.compile(rb'"message":\s*"listening".*?"address":\s*"[^"]*:(\d+)"')


def gatehouse_argv(
    config: Path, profiler: str | None, prof_out: Path, python: str | None = None
) -> list[str]:
    base = ["-m", "gatehouse", "run", "-c", str(config)]
    python = python or sys.executable
    if profiler == "cprofile":
        return [python, "-m", "cProfile", "-o", str(prof_out), *base]
    return [python, *base]


def start_gatehouse(
    procs: Processes,
    tmp: Path,
    upstream_port: int,
    route_extra: str,
    name: str = "gatehouse",
    profiler: str | None = None,
    headers: list[str] | None = None,
    python: str | None = None,
    env_extra: dict[str, str] | None = None,
) -> tuple[Proc, int]:
    """Start ``gatehouse run`` (by default with this interpreter and environment; another
    ``python`` and ``env_extra``, e.g. ``PYTHONPATH``, run another build beside it)."""
    config = tmp / f"{name}.yaml"
    config.write_text(
        _GATEHOUSE_CONFIG.format(
            host=BENCH_HOST, upstream_port=upstream_port, route_extra=route_extra
        )
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    argv = gatehouse_argv(config, profiler, tmp / f"{name}.cprofile", python)
    proc = procs.start(name, argv, tmp, env=env)

    def port_of() -> int | None:
        with contextlib.suppress(OSError):
            match = _LISTENING.search(proc.stderr.read_bytes())
            if match:
                return int(match.group(1))
        return None

    return proc, wait_ready(proc, port_of, UPSTREAM_BODY.encode(), headers)


# --------------------------------------------------------------------------------------------
# /proc readings


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of proc(5)


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def nginx_worker(master_pid: int) -> int:
    """The (single) worker of an nginx master: where nginx's per-request CPU is spent."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(READY_POLL_S)
    raise BenchError(f"nginx {master_pid} has no worker")


# --------------------------------------------------------------------------------------------
# wrk


@dataclass
class RunResult:
    target: str
    round: int
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p75_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    #: Connections the kernel dropped from full accept queues during the run (machine-wide
    #: TcpExt ListenOverflows): each costs its client a 1-3 s SYN retransmission.
    listen_overflows: int = 0
    proxy_cpu_s: float = 0.0
    proxy_cpu_us_per_req: float = 0.0
    proxy_cpu_share: float = 0.0
    upstream_cpu_share: float = 0.0
    wrk_cpu_share: float = 0.0
    others_cpu_share: float = 0.0
    steal_share: float = 0.0
    wrk_output: str = ""


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if not match:
        raise BenchError(f"cannot read wrk time {value!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(text: str, result: RunResult) -> None:
    if m := re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M):
        result.requests = int(m.group(1))
        result.duration_s = _ms(m.group(2) + m.group(3)) / 1000
    if m := re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M):
        result.rps = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        if m := re.search(rf"^\s*{pct}%\s+(\S+)", text, re.M):
            setattr(result, f"p{pct}_ms", _ms(m.group(1)))
    if m := re.search(r"^\s*Latency\s+\S+\s+\S+\s+(\S+)", text, re.M):
        result.latency_max_ms = _ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text):
        result.non_2xx_3xx = int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        result.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    if not result.requests or not result.rps:
        raise BenchError(f"cannot read wrk's output:\n{text}")


def run_wrk(port: int, args: argparse.Namespace, duration: str, headers: list[str]) -> str:
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration}",
        "--latency",
        "-H",
        f"Host: {BENCH_HOST}",
    ]
    for header in headers:
        argv += ["-H", header]
    argv.append(f"http://127.0.0.1:{port}/")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=_ms(duration) / 1000 + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


@dataclass
class Target:
    name: str
    port: int
    proc: Proc
    cpu_pid: int  # the process whose CPU time is the proxy's work


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0


def somaxconn() -> int:
    """``net.core.somaxconn``: the kernel's cap on a listener's accept queue."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    return 0


def steal_s() -> float:
    """CPU seconds the hypervisor took from this machine so far (``/proc/stat`` steal)."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8]) / CLK_TCK


def others_cpu_s(exclude: set[int]) -> dict[int, float]:
    """CPU seconds so far of every process except ``exclude`` (our own), by pid."""
    out: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) not in exclude:
            with contextlib.suppress(OSError, ValueError, IndexError):
                out[int(entry.name)] = cpu_seconds(int(entry.name))
    return out


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured_run(
    target: Target,
    upstream_cpu_pid: int,
    args: argparse.Namespace,
    rnd: int,
    headers: list[str],
    ours: set[int],
) -> RunResult:
    result = RunResult(target.name, rnd)
    cpu0, up0 = cpu_seconds(target.cpu_pid), cpu_seconds(upstream_cpu_pid)
    exclude = {os.getpid(), upstream_cpu_pid, target.cpu_pid, *ours}
    others0, steal0 = others_cpu_s(exclude), steal_s()
    wrk0, t0, overflows0 = children_cpu_s(), time.monotonic(), listen_overflows()
    out = run_wrk(target.port, args, args.duration, headers)
    result.listen_overflows = listen_overflows() - overflows0
    cpu1, up1 = cpu_seconds(target.cpu_pid), cpu_seconds(upstream_cpu_pid)
    wrk1, t1 = children_cpu_s(), time.monotonic()
    others1, steal1 = others_cpu_s(exclude), steal_s()
    wall = t1 - t0
    result.wrk_output = out
    parse_wrk(out, result)
    result.proxy_cpu_s = cpu1 - cpu0
    result.proxy_cpu_us_per_req = result.proxy_cpu_s / result.requests * 1e6
    result.proxy_cpu_share = result.proxy_cpu_s / wall
    result.upstream_cpu_share = (up1 - up0) / wall
    result.wrk_cpu_share = (wrk1 - wrk0) / wall
    # What the rest of the machine (other sessions, kernel threads) took during the run, and
    # what the hypervisor took away (steal): the noise that the interleaving tries to spread.
    # (Processes that started or ended within the run are missed: an underestimate.)
    others = sum(others1[pid] - cpu for pid, cpu in others0.items() if pid in others1)
    result.others_cpu_share = max(0.0, others) / wall
    result.steal_share = (steal1 - steal0) / wall
    return result


# --------------------------------------------------------------------------------------------
# Profiling


_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
#: Symbol prefixes of the C functions mypyc writes per Python function: the native body
#: (``CPyDef_``) and the wrapper Python calls go through (``CPyPy_``).
_MYPYC_PREFIXES = ("CPyDef_", "CPyPy_")
#: A coroutine compiled by mypyc runs in methods of a generator class named
#: ``<function>_<Class>_gen`` (``<function>_gen`` at module level; ``_env`` holds its
#: locals), plus mypyc's own per-class helpers.
_MYPYC_GEN = re.compile(
    r"^(?P<fn>.+?)(?:_(?P<cls>[A-Z][A-Za-z0-9]*))?_(?:gen|env)"
    r"(?:_(?P<helper>dealloc|traverse|clear|clear_on_completion|setup))?$"
)
#: Functions where a thread waits instead of running: a sample with one of them among its
#: last frames is idle (py-spy ``--native`` records waiting threads too).
_WAITS = frozenset(
    {
        "epoll_wait",
        "epoll_pwait",
        "poll",
        "select",
        "pthread_cond_wait",
        "pthread_cond_timedwait",
        "PyThread_acquire_lock_timed",
        "take_gil",
        "sem_wait",
        "sem_timedwait",
        "sem_clockwait",
        "nanosleep",
        "clock_nanosleep",
    }
)
#: Frames below the event loop (start-up and the loop itself): on every stack, not news.
_ENTRY_FILES = ("<frozen runpy>", "gatehouse/__main__.py", "gatehouse/cli.py", "gatehouse/serve.py")


def mypyc_name(symbol: str) -> str | None:
    """The Python name of a mypyc-compiled function's C symbol, or ``None`` if it is not one.

    ``CPyDef_pipeline___Pipeline____authorize`` -> ``pipeline.Pipeline._authorize``;
    a coroutine's body, ``CPyDef_pipeline_____call___3_Pipeline_gen_____mypyc_generator_helper__``
    -> ``pipeline.Pipeline.__call__``. The module is the shortest suffix of its dotted name
    that is unique among the compiled modules (``cache`` or ``sessions.cache``).
    """
    body = next((symbol[len(p) :] for p in _MYPYC_PREFIXES if symbol.startswith(p)), None)
    if body is None:
        if symbol.startswith("CPy") or "___" not in symbol:
            return None  # mypyc's runtime library (CPy_AddTraceback...) or not mypyc's
        body = symbol  # static helpers: <module>___<generator class>_dealloc
    # mypyc joins the parts of a name with "___" and writes a "___" inside one as "___3_".
    parts = [p.replace("\0", "___") for p in body.replace("___3_", "\0").split("___")]
    if len(parts) < 2 or not all(parts):
        return None
    for i, part in enumerate(parts[1:], 1):
        gen = _MYPYC_GEN.match(part)
        if gen is not None:
            name = f"{gen['cls']}.{gen['fn']}" if gen["cls"] else gen["fn"]
            suffix = f" [{gen['helper']}]" if gen["helper"] else ""
            # What follows (``__mypyc_generator_helper__``, ``send``...) is the coroutine
            # protocol: all of it is that function's body running.
            return ".".join([*parts[:i], name]) + suffix
    return ".".join(parts)


def _readable(frame: str) -> str:
    """A py-spy frame, with a compiled gatehouse function's C symbol as its Python name."""
    match = _FRAME.match(frame)
    if match is None or not match["file"].endswith(".so"):
        return frame
    name = mypyc_name(match["fn"])
    return frame if name is None else f"{name} (compiled)"


def _frame_function(frame: str) -> str:
    """``fn (path/file.py:123)`` -> ``fn (path/file.py)``: one row per function, not per line."""
    match = _FRAME.match(frame)
    return f"{match['fn']} ({match['file']})" if match else frame


def _idle(frames: list[str]) -> bool:
    return any(f.split(" (", 1)[0] in _WAITS for f in frames[-4:])


def _ours(function: str) -> bool:
    """Whether a function row is gatehouse's own code past start-up (compiled or Python)."""
    if function.endswith(" (compiled)"):
        return True
    match = _FRAME.match(function)
    return bool(match and "gatehouse/" in match["file"] and match["file"] not in _ENTRY_FILES)


def _collapsed_top(path: Path, top: int) -> list[str]:
    """Self and inclusive sample shares per function and hottest lines, from py-spy raw
    stacks; compiled functions by their Python names, idle samples left out."""
    self_fn: Counter[str] = Counter()
    self_line: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    total = idle = compiled = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        # Leading frames may name the process or thread; they are not functions.
        frames = [
            _readable(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        if _idle(frames):
            idle += count
            continue
        total += count
        self_line[frames[-1]] += count
        self_fn[_frame_function(frames[-1])] += count
        functions = {_frame_function(f) for f in frames}
        compiled += count if any(f.endswith(" (compiled)") for f in functions) else 0
        for fn in functions:
            incl_fn[fn] += count
    if not total:
        return ["  (no samples)"]

    def block(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"  {100 * n / total:6.1f}  {name}" for name, n in counts.most_common(top)]
        return ["", f"  {title}", f"  {'%':>6}  function (file[:line])", *rows]

    ours = Counter({fn: n for fn, n in incl_fn.items() if _ours(fn)})
    if compiled:
        how = [
            f"  {total} busy samples ({idle} idle ones left out: threads waiting in epoll, on",
            "  a lock or the GIL). Native frames shown: C (syscalls, uvloop, httptools) and",
            "  gatehouse's compiled functions, named '... (compiled)' "
            f"({100 * compiled / total:.0f} % of busy samples pass through one).",
        ]
    else:
        how = [
            f"  {total} busy samples ({idle} idle ones left out). Time in C (socket syscalls,",
            "  uvloop, httptools, and compiled gatehouse code unless profiled with --native) is",
            "  charged to the Python line that called it; self time of 'Runner.run",
            "  (asyncio/runners.py)' is uvloop's own loop in C.",
        ]
    # Compiled frames have no line numbers: per line would repeat per function.
    lines = [] if compiled else block("by SELF time, per line (hottest lines):", self_line)
    return [
        *how,
        *block("by SELF time, per function (where the CPU is):", self_fn),
        *lines,
        *block("gatehouse's functions by INCLUSIVE time (on the stack):", ours),
        *block("every function by INCLUSIVE time:", incl_fn),
    ]


def gatehouse_build(python: str, env: dict[str, str]) -> tuple[str, str]:
    """(``"compiled"`` or ``"pure Python"``, where it is imported from) for the gatehouse
    that ``python`` runs with ``env``."""
    probe = "import gatehouse; print(gatehouse.build_kind()); print(gatehouse.__file__)"
    done = subprocess.run(
        [python, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # as gatehouse runs: no ./gatehouse shadows the build
    )
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) < 2:
        raise BenchError(f"cannot import gatehouse with {python}: {done.stderr.strip()[-300:]}")
    return " ".join(lines[:-1]), lines[-1]


def pyspy_binary() -> str | None:
    """py-spy on PATH, or beside this interpreter (``pip install py-spy`` into the venv
    that runs the bench puts it in the venv's bin, which need not be on PATH)."""
    found = shutil.which("py-spy")
    if found is None:
        beside = Path(sys.executable).parent / "py-spy"
        found = str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None
    return found


def pyspy_start(
    procs: Processes, pid: int, seconds: int, rate: int, native: bool, out: Path, tmp: Path
) -> Proc:
    """``py-spy record`` of ``pid`` for ``seconds`` into ``out`` (raw collapsed stacks)."""
    # --native (C frames, so compiled code too) must pause the process at each sample;
    # without it, --nonblocking samples without pausing, perturbing gatehouse less.
    mode = ["--native"] if native else ["--nonblocking"]
    argv = [pyspy_binary() or "py-spy", "record", "--pid", str(pid), "--duration", str(seconds)]
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(out), *mode]
    return procs.start(f"py-spy-{out.stem}", argv, tmp)


def pyspy_finish(procs: Processes, recorder: Proc, out: Path, seconds: int, top: int) -> list[str]:
    """Wait for ``recorder`` and read its stacks into the printed tables."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        recorder.popen.wait(seconds + 30)
    code = procs.stop(recorder)
    if code != 0 or not out.exists():
        raise BenchError(f"py-spy failed ({code}): " + " | ".join(recorder.stderr_tail()))
    lines = [f"  raw collapsed stacks: {out}  (view: flamegraph.pl or speedscope.app)"]
    return lines + _collapsed_top(out, top)


def profile_pyspy(
    procs: Processes, target: Target, args: argparse.Namespace, tmp: Path, headers: list[str]
) -> tuple[str, list[str]]:
    out = tmp / "gatehouse.pyspy.txt"
    seconds = max(1, int(_ms(args.duration) / 1000))
    recorder = pyspy_start(
        procs, target.proc.pid, seconds, args.profile_rate, args.profile_native, out, tmp
    )
    wrk_out = run_wrk(target.port, args, args.duration, headers)
    return wrk_out, pyspy_finish(procs, recorder, out, seconds, args.profile_top)


def profile_cprofile(
    procs: Processes,
    tmp: Path,
    upstream_port: int,
    route_extra: str,
    args: argparse.Namespace,
    headers: list[str],
) -> tuple[str, list[str]]:
    import pstats

    proc, port = start_gatehouse(
        procs,
        tmp,
        upstream_port,
        route_extra,
        name="gatehouse-cprofile",
        profiler="cprofile",
        headers=headers,
    )
    wrk_out = run_wrk(port, args, args.duration, headers)
    procs.stop(proc)  # SIGTERM: gatehouse drains and exits, cProfile writes its file
    prof = tmp / "gatehouse-cprofile.cprofile"
    if not prof.exists():
        raise BenchError("cProfile wrote no profile (did gatehouse exit cleanly?)")
    lines = [f"  profile: {prof}  (cProfile inflates Python call costs; compare shares, not times)"]
    for key, title in (("tottime", "SELF"), ("cumulative", "INCLUSIVE")):
        buf = _StringSink()
        stats = pstats.Stats(str(prof), stream=buf)  # type: ignore[arg-type]
        stats.sort_stats(key).print_stats(args.profile_top)
        body = buf.text()
        start = body.find("ncalls")
        lines += ["", f"  functions by {title} time:"] + [
            "  " + ln for ln in body[start:].splitlines() if ln.strip()
        ]
    return wrk_out, lines


class _StringSink:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def text(self) -> str:
        return "".join(self.parts)


# --------------------------------------------------------------------------------------------
# Reporting


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


#: Columns of the results table: (heading, width, format, field of RunResult / summary, scale).
_COLUMNS = (
    ("req/s", 9, ".0f", "rps", 1.0),
    ("p50 ms", 7, ".2f", "p50_ms", 1.0),
    ("p99 ms", 7, ".2f", "p99_ms", 1.0),
    ("max ms", 7, ".1f", "latency_max_ms", 1.0),
    ("CPU us/req", 10, ".1f", "proxy_cpu_us_per_req", 1.0),
    ("proxy%", 6, ".0f", "proxy_cpu_share", 100.0),
    ("upstr%", 6, ".0f", "upstream_cpu_share", 100.0),
    ("wrk%", 5, ".0f", "wrk_cpu_share", 100.0),
    ("other%", 6, ".0f", "others_cpu_share", 100.0),
    ("steal%", 6, ".0f", "steal_share", 100.0),
    ("non2xx", 6, ".0f", "non_2xx_3xx", 1.0),
    ("sockerr", 7, ".0f", "socket_errors_total", 1.0),
)


def _row_values(r: RunResult) -> dict[str, float]:
    values: dict[str, float] = {c[3]: float(getattr(r, c[3], 0.0)) for c in _COLUMNS[:-1]}
    values["socket_errors_total"] = float(sum(r.socket_errors.values()))
    return values


def summarize(results: list[RunResult], target: str) -> dict[str, float]:
    """Medians over the rounds of one target (error counts are summed)."""
    rows = [_row_values(r) for r in results if r.target == target]
    summary = {key: median([row[key] for row in rows]) for key in rows[0]} if rows else {}
    for key in ("non_2xx_3xx", "socket_errors_total"):
        summary[key] = sum(row[key] for row in rows)
    return summary


def print_table(results: list[RunResult], summary: dict[str, dict[str, float]]) -> list[str]:
    head = f"{'target':<10} {'round':>5} " + " ".join(f"{c[0]:>{c[1]}}" for c in _COLUMNS)

    def row(name: str, rnd: str, values: dict[str, float]) -> str:
        cells = " ".join(f"{values[c[3]] * c[4]:>{c[1]}{c[2]}}" for c in _COLUMNS)
        return f"{name:<10} {rnd:>5} {cells}"

    out = [head, "-" * len(head)]
    out += [row(r.target, str(r.round), _row_values(r)) for r in results]
    out.append("-" * len(head))
    out += [row(name, "med", s) for name, s in summary.items()]
    out += [
        "proxy%/upstr%/wrk%: CPU of the proxy process (nginx: its worker), of the upstream's",
        "worker and of wrk, in % of one core; other%: every other process on the machine (other",
        f"sessions); steal%: taken by the hypervisor. Cores: {os.cpu_count()}. High other%: noisy.",
    ]
    return out


def access_statuses(path: Path) -> dict[str, int]:
    """Count of each status in a JSON-lines access log (both proxies write ``"status"``)."""
    counts: Counter[str] = Counter()
    unreadable = 0
    with contextlib.suppress(OSError), path.open("rb") as f:
        for line in f:
            try:
                counts[str(json.loads(line).get("status"))] += 1
            except (ValueError, AttributeError):
                unreadable += 1
    if unreadable:
        counts["unreadable-lines"] = unreadable
    return dict(sorted(counts.items()))


def _message(line: str) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(line).get("message"))
    return line


def stderr_problems(path: Path) -> list[str]:
    """Lines of gatehouse's stderr that are errors or tracebacks (warnings are listed apart)."""
    problems = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if line.strip():
                    problems.append(line)  # not JSON: a traceback or a print
                continue
            if isinstance(record, dict) and record.get("level") not in ("info", "debug", "warning"):
                problems.append(line)
    return problems


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-c", "--connections", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument(
        "-d", "--duration", default="10s", help="wrk duration per measured run (default 10s)"
    )
    p.add_argument(
        "--warmup", default="3s", help="wrk warm-up per target, not measured (default 3s)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="measured runs per target, interleaved ABBA (default 2)",
    )
    p.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="plain",
        help="plain (default), authenticated (SQLite sessions), authenticated-redis, "
        "authenticated-postgres or bearer",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after the measured runs, profile gatehouse during one more wrk run",
    )
    p.add_argument(
        "--profiler",
        choices=("auto", "py-spy", "cprofile"),
        default="auto",
        help="py-spy (sampling, low overhead; default when it works) or cProfile",
    )
    p.add_argument(
        "--profile-top", type=int, default=25, help="functions shown per profile listing"
    )
    p.add_argument(
        "--profile-native",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy --native: C frames too (uvloop, httptools, gatehouse's compiled code, "
        "named by their Python names); pauses gatehouse per sample. Default: on when the "
        "gatehouse run is a compiled build",
    )
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    p.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary directory (configs, logs)"
    )
    p.add_argument("--show-wrk", action="store_true", help="print wrk's raw output of every run")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.connections < 1 or args.threads < 1:
        p.error("--rounds, --connections and --threads must be positive")
    if args.connections < args.threads:
        p.error("wrk needs at least one connection per thread")
    for name in ("duration", "warmup"):
        try:
            _ms(getattr(args, name))
        except BenchError:
            p.error(f"--{name}: use a wrk duration such as 10s or 1m")
    return args


def environment() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        return "?"

    return {
        "gatehouse": first_line([sys.executable, "-m", "gatehouse", "--version"]),
        "git": first_line(
            ["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty"]
        ),
        "nginx": first_line([nginx_binary(), "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "kernel": platform.release(),
        "loadavg_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    try:
        yield tmp
    finally:
        if keep:
            print(f"temporary files kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    # Explicitly: a shell starting us in the background may have set SIGINT to "ignore".
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    procs = Processes()
    keep = args.keep_tmp or args.profile
    try:
        with workspace(keep) as tmp:
            try:
                return _bench(args, scenario, procs, tmp)
            finally:
                procs.stop_all()
                run_cleanups()
    except KeyboardInterrupt:
        print("\ninterrupted; every process started here was stopped", file=sys.stderr)
        return 130
    except (BenchError, NotImplementedError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


def _bench(args: argparse.Namespace, scenario: Scenario, procs: Processes, tmp: Path) -> int:
    ensure_tools(args.profile and args.profiler != "cprofile")
    env = environment()
    print(f"gatehouse bench: scenario={scenario.name} ({scenario.description})")
    print(
        f"  wrk -t{args.threads} -c{args.connections} -d{args.duration} --latency, "
        f"{args.rounds} round(s) per target, warm-up {args.warmup}; "
        f"nothing pinned, {env['cpus']} CPUs"
    )
    print("  " + ", ".join(f"{k}: {v}" for k, v in env.items()))
    build, where = gatehouse_build(sys.executable, {**os.environ})
    print(f"  gatehouse build: {build} ({where})")
    if args.profile_native is None:
        # Compiled code is invisible to py-spy without --native: only asyncio.run and
        # uvloop's frames would show, charged with everything the pipeline does.
        args.profile_native = build == "compiled"
    print(f"  workdir: {tmp}")

    _RUN_CONNECTIONS[0] = args.connections
    raise_nofile_limit(args.connections)
    if 0 < somaxconn() < args.connections:
        print(
            f"  note: {args.connections} clients connect at once, more than net.core.somaxconn "
            f"({somaxconn()}) can queue: some handshakes are dropped at each wrk start and "
            "those clients wait 1-3 s (wrk timeouts, counted per run as accept-queue "
            "overflows); sysctl -w net.core.somaxconn=65535 for clean tail figures"
        )
    # First, so that a scenario that cannot run fails before anything starts.
    route_extra, headers = scenario.prepare(tmp, procs)
    upstream, upstream_port = start_nginx(
        procs,
        tmp,
        "upstream",
        _UPSTREAM_BODY,
        expect_body=UPSTREAM_BODY.encode(),
        text=UPSTREAM_BODY.replace("\n", "\\n"),
    )
    upstream_worker = nginx_worker(upstream.pid)
    nginx, nginx_port = start_nginx(
        procs,
        tmp,
        "nginx-proxy",
        _PROXY_BODY,
        expect_body=UPSTREAM_BODY.encode(),
        upstream_port=upstream_port,
        keepalive=_gatehouse_pool_idle(),
    )
    gate, gate_port = start_gatehouse(procs, tmp, upstream_port, route_extra, headers=headers)
    targets = {
        "nginx": Target("nginx", nginx_port, nginx, nginx_worker(nginx.pid)),
        "gatehouse": Target("gatehouse", gate_port, gate, gate.pid),
    }
    print(
        f"  upstream :{upstream_port} (nginx pid {upstream.pid}), nginx proxy :{nginx_port} "
        f"(pid {nginx.pid}), gatehouse :{gate_port} (pid {gate.pid})"
    )

    # Warm-up: the upstream alone first (its ceiling shows whether it could be the bottleneck),
    # then each proxy (pools filled, code paths hot, allocator grown).
    warm = RunResult("upstream", 0)
    parse_wrk(run_wrk(upstream_port, args, args.warmup, headers), warm)
    print(f"  upstream alone (warm-up): {warm.rps:.0f} req/s, p99 {warm.p99_ms:.2f} ms")
    for target in targets.values():
        out = run_wrk(target.port, args, args.warmup, headers)
        w = RunResult(target.name, 0)
        parse_wrk(out, w)
        print(
            f"  warm-up {target.name}: {w.rps:.0f} req/s, non-2xx {w.non_2xx_3xx}, "
            f"socket errors {sum(w.socket_errors.values())}"
        )

    results: list[RunResult] = []
    order = ["nginx", "gatehouse"]
    for rnd in range(1, args.rounds + 1):
        # ABBA: a drift in machine load over the run falls on both targets alike.
        for name in order if rnd % 2 else order[::-1]:
            target = targets[name]
            if not target.proc.alive():
                raise BenchError(
                    f"{name} died (exit {target.proc.popen.returncode}): "
                    + "\n    ".join(target.proc.stderr_tail())
                )
            ours = {p.pid for p in procs.procs} | {t.cpu_pid for t in targets.values()}
            r = measured_run(target, upstream_worker, args, rnd, headers, ours)
            results.append(r)
            print(
                f"  round {rnd} {name:<9}: {r.rps:>8.0f} req/s  p50 {r.p50_ms:.2f} ms  "
                f"p99 {r.p99_ms:.2f} ms"
                f"  CPU {r.proxy_cpu_us_per_req:.1f} us/req"
            )
            if args.show_wrk:
                print("    " + r.wrk_output.replace("\n", "\n    "))

    profile_lines: list[str] = []
    profile_rps = 0.0
    profiler_used = ""
    if args.profile:
        profiler_used, profile_rps, profile_lines = _profile(
            args, procs, tmp, targets["gatehouse"], upstream_port, route_extra, headers
        )

    alive = {name: t.proc.alive() for name, t in targets.items()}
    peaks = {name: peak_rss_kib(t.cpu_pid) if t.proc.alive() else 0 for name, t in targets.items()}
    # Stop the proxies now so their access logs are flushed before they are read.
    gate_exit = procs.stop(gate)
    procs.stop(nginx)
    statuses = {
        "gatehouse": access_statuses(gate.stdout),
        "nginx": access_statuses(tmp / "nginx-proxy.access.log"),
    }
    problems = stderr_problems(gate.stderr)
    warnings = sorted(
        {
            _message(line)
            for line in gate.stderr.read_text(errors="replace").splitlines()
            if '"level": "warning"' in line
        }
    )

    summary = {name: summarize(results, name) for name in targets}
    g, n = summary["gatehouse"], summary["nginx"]
    ratio_rps = g["rps"] / n["rps"] if n["rps"] else 0.0
    ratio_p99 = g["p99_ms"] / n["p99_ms"] if n["p99_ms"] else 0.0
    ratio_cpu = (
        g["proxy_cpu_us_per_req"] / n["proxy_cpu_us_per_req"] if n["proxy_cpu_us_per_req"] else 0.0
    )

    print()
    for line in print_table(results, summary):
        print(line)
    print()
    print(
        f"gatehouse/nginx  throughput: {ratio_rps:.2f}x  (target >= {scenario.target_ratio}x: "
        f"{'MET' if ratio_rps >= scenario.target_ratio else 'NOT MET'})"
    )
    print(
        f"gatehouse/nginx  p99:        {ratio_p99:.2f}x  (target <= 3x:    "
        f"{'MET' if ratio_p99 <= 3 else 'NOT MET'})"
    )
    print(
        f"gatehouse/nginx  CPU/req:    {ratio_cpu:.2f}x  "
        f"({g['proxy_cpu_us_per_req']:.1f} vs {n['proxy_cpu_us_per_req']:.1f} us per request)"
    )
    print(
        f"peak RSS: gatehouse {peaks['gatehouse'] / 1024:.1f} MiB, "
        f"nginx worker {peaks['nginx'] / 1024:.1f} MiB"
    )
    print(f"access-log statuses: gatehouse {statuses['gatehouse']}, nginx {statuses['nginx']}")
    print(
        f"gatehouse exit status on SIGTERM: {gate_exit} "
        f"({'clean' if gate_exit == 0 else 'NOT clean'})"
    )
    if max(summary[t]["upstream_cpu_share"] for t in summary) > UPSTREAM_BUSY_WARN:
        print(
            f"! upstream used > {UPSTREAM_BUSY_WARN:.0%} of a core in a run: "
            "it may be the bottleneck"
        )
    anomalies = [
        f"{r.target} round {r.round}: {r.non_2xx_3xx} non-2xx/3xx, socket errors {r.socket_errors}"
        + (f", accept-queue overflows {r.listen_overflows}" if r.listen_overflows else "")
        for r in results
        if r.non_2xx_3xx or any(r.socket_errors.values()) or r.listen_overflows
    ]
    if not all(alive.values()):
        anomalies.append(f"a proxy died during the runs: {alive}")
    if problems:
        anomalies.append(
            f"gatehouse stderr has {len(problems)} error/non-JSON line(s); first ones:"
        )
        anomalies += ["    " + p[:400] for p in problems[:STDERR_EXCERPT_LINES]]
    for warning in warnings:
        print(f"gatehouse warning: {warning[:300]}")
    print("anomalies: " + ("none" if not anomalies else ""))
    for a in anomalies:
        print("  " + a)
    if profile_lines:
        print()
        print(
            f"profile of gatehouse ({profiler_used}) during one more wrk run "
            f"({profile_rps:.0f} req/s while profiled):"
        )
        for line in profile_lines:
            print(line)

    if args.json:
        doc = {
            "scenario": scenario.name,
            "wrk": {
                "threads": args.threads,
                "connections": args.connections,
                "duration": args.duration,
                "warmup": args.warmup,
                "rounds": args.rounds,
            },
            "environment": env,
            "fairness": {
                "access_log": "both to a file, JSON lines, buffered 64 KiB / 0.2 s",
                "workers": 1,
                "upstream_keepalive": 64,
                "pinned": False,
            },
            "upstream_alone_rps": warm.rps,
            "runs": [{k: v for k, v in asdict(r).items() if k != "wrk_output"} for r in results],
            "summary": summary,
            "ratios": {"rps": ratio_rps, "p99": ratio_p99, "cpu_per_request": ratio_cpu},
            "targets_met": {
                "rps_ratio": scenario.target_ratio,
                "rps_ratio_met": ratio_rps >= scenario.target_ratio,
                "p99_le_3": ratio_p99 <= 3,
            },
            "peak_rss_kib": peaks,
            "access_log_statuses": statuses,
            "gatehouse_exit_status": gate_exit,
            "gatehouse_stderr_problems": problems[:100],
            "profile": {
                "profiler": profiler_used,
                "rps_while_profiled": profile_rps,
                "top": profile_lines,
            },
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


def _profile(
    args: argparse.Namespace,
    procs: Processes,
    tmp: Path,
    target: Target,
    upstream_port: int,
    route_extra: str,
    headers: list[str],
) -> tuple[str, float, list[str]]:
    profiler = args.profiler
    if profiler in ("auto", "py-spy"):
        if pyspy_binary() is None:
            if profiler == "py-spy":
                raise BenchError("py-spy is not installed (pip install py-spy)")
            profiler = "cprofile"
        else:
            try:
                wrk_out, lines = profile_pyspy(procs, target, args, tmp, headers)
                r = RunResult("gatehouse", 0)
                parse_wrk(wrk_out, r)
                return "py-spy --native" if args.profile_native else "py-spy", r.rps, lines
            except BenchError as exc:
                if profiler == "py-spy":
                    raise
                print(f"  ! py-spy did not work ({exc}); falling back to cProfile", file=sys.stderr)
    wrk_out, lines = profile_cprofile(procs, tmp, upstream_port, route_extra, args, headers)
    r = RunResult("gatehouse", 0)
    parse_wrk(wrk_out, r)
    return "cprofile", r.rps, lines


if __name__ == "__main__":
    sys.exit(main())
