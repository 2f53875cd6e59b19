#!/usr/bin/env python3
"""Soak test: mixed load through gatehouse for a long time while faults are injected.

Two modes:

* **soak** (default): starts a private ``redis-server`` (session store), a scripted upstream
  and a WebSocket echo server (in this process), and ``gatehouse run`` with ``workers: 2``,
  the built-in identity provider and one user per virtual user. Each virtual user (a
  thread) signs in once through the built-in IdP's form, then loops over a weighted mix:
  authenticated page loads, API calls without a session (401 expected), 1 MiB uploads,
  4 MiB downloads, WebSocket round trips, sign-out + sign-in, and requests that hit an
  upstream fault (reset mid-response, slow head → 504). On a schedule it also rewrites
  the config (valid change), kills one worker with SIGKILL, and restarts Redis (graceful:
  ``SHUTDOWN SAVE``, so sessions survive; the store is down for about a second).
  It reports requests served, errors by kind with whether each was expected (an
  injected fault explains it), p50/p99 latency per operation, gatehouse's RSS (supervisor
  + workers, from /proc) over time, and three checks: zero unexpected errors, no identity
  leaked across users (the upstream echoes the email in each request's assertion, which
  must be the virtual user's own), and memory flat over the last half of the run.
* **connections** (``--connections 500``): gatehouse (``workers: 2``) in front of an nginx
  upstream, ``wrk -c500 --latency`` on a public route; reports p99 (target < 50 ms).

Usage::

    python bench/soak.py                        # 10 minutes
    python bench/soak.py --duration 120s --users 8
    python bench/soak.py --connections 500 --duration 20s
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from html import unescape
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import yaml

APP = "http://app.localhost"
AUTH = "http://authenticate.localhost"
UPLOAD_BYTES = 1 << 20
DOWNLOAD_BYTES = 4 << 20
#: After a fault, errors of the matching kinds are expected for this long, seconds.
FAULT_WINDOW_S = 4.0

# -- helpers -------------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    kids.append(int(entry))
    return sorted(kids)


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# -- the upstream: identity echo, uploads, downloads, faults ----------------------------------


class Upstream:
    """An asyncio HTTP/1.1 upstream in a thread (keep-alive, Content-Length bodies)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.ws_port = 0
        ready = threading.Event()
        threading.Thread(target=self._main, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            server = await asyncio.start_server(
                self._serve, "127.0.0.1", 0, limit=1 << 20, backlog=1024
            )
            self.port = server.sockets[0].getsockname()[1]
            from websockets.asyncio.server import serve

            async def echo(ws: Any) -> None:
                with contextlib.suppress(Exception):
                    async for message in ws:
                        await ws.send(message)

            ws_server = await serve(echo, "127.0.0.1", 0)
            self.ws_port = ws_server.sockets[0].getsockname()[1]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                received = 0
                while received < length:
                    chunk = await reader.read(min(1 << 18, length - received))
                    if not chunk:
                        return
                    received += len(chunk)
                email = _assertion_email(headers.get("x-pomerium-jwt-assertion", ""))
                extra = [("X-Echo-Email", email), ("X-Received", str(received))]
                if target.startswith("/fault/reset"):
                    writer.write(_head(200, [("Content-Length", "100000")]) + b"partial")
                    await writer.drain()
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    writer.transport.abort()
                    return
                if target.startswith("/fault/slow"):
                    await asyncio.sleep(3.0)
                if target.startswith("/download"):
                    writer.write(_head(200, [*extra, ("Content-Length", str(DOWNLOAD_BYTES))]))
                    block = b"d" * (1 << 18)
                    for _ in range(DOWNLOAD_BYTES // len(block)):
                        writer.write(block)
                        await writer.drain()
                    continue
                body = b"ok " + email.encode()
                writer.write(_head(200, [*extra, ("Content-Length", str(len(body)))]) + body)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    return (
        f"HTTP/1.1 {status} OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    ).encode()


def _assertion_email(token: str) -> str:
    if token.count(".") != 2:
        return "-"
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return "?"
    return str(claims.get("email", "-"))


# -- Redis and gatehouse processes ------------------------------------------------------------


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self._ping, 10, "redis")

    def _ping(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), 1) as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def restart(self) -> None:
        """Graceful restart that keeps the data (``SHUTDOWN SAVE``)."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), 2) as s,
        ):
            s.sendall(b"SHUTDOWN SAVE\r\n")
            s.recv(16)
        if self.proc is not None:
            self.proc.wait(10)
        time.sleep(1.0)  # a deliberate outage of about a second
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Gatehouse:
    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = config
        self.path = workdir / "gatehouse.yaml"
        self.path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.stderr_path = workdir / "gatehouse.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        env = {
            k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG")
        }
        env.update(PATH=os.environ.get("PATH", ""), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gatehouse", "run", "-c", str(self.path)],
            stdout=open(self.workdir / "access.log", "wb"),
            stderr=open(self.stderr_path, "wb"),
            env=env,
            cwd=self.workdir,
        )

        def listening() -> int | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("gatehouse exited:\n" + self.stderr_path.read_text()[-3000:])
            for line in self.stderr_path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if rec.get("message") == "listening":
                        return int(str(rec["address"]).rpartition(":")[2])
            return None

        self.port = wait_for(listening, 30, "gatehouse to listen")

    def rewrite(self, marker: str) -> None:
        config = dict(self.config)
        config["routes"] = [dict(r) for r in config["routes"]]
        config["routes"][0]["set_response_headers"] = {"X-Config": marker}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.path)

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *children_of(self.proc.pid)]

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out


# -- virtual users --------------------------------------------------------------------------


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: Counter[str] = field(default_factory=Counter)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: (time, op, kind, expected)
    errors: list[tuple[float, str, str, bool]] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    lost_sessions: int = 0
    requests: int = 0
    #: (kind, start, end) of injected faults
    faults: list[tuple[str, float, float]] = field(default_factory=list)
    #: completion times of successful operations (to show what was served during faults)
    ok_times: list[float] = field(default_factory=list)

    def fault_explains(self, op: str, kind: str, at: float) -> bool:
        """Whether an injected fault explains this error.

        A worker kill: connections to that worker drop (for a few seconds). A Redis
        restart: while Redis is down, operations that must write the store (sign-in,
        sign-out) get 503. Signed-in users are served from the session cache of the worker
        that answers, but only for sessions *that worker* has read before the outage (the
        caches are per process): a 503 during the outage for a session the worker never
        saw is the documented behaviour, and is counted separately ("store outage,
        session not cached by that worker") rather than silently. Any 503 once Redis is
        back (more than 0.5 s after the restart) is *not* expected.
        """
        for name, start, end in list(self.faults):
            if (
                name == "worker_kill"
                and kind == "connection"
                and start - 0.5 <= at <= end + FAULT_WINDOW_S
            ):
                return True
            if name == "redis_restart" and "503" in kind and start - 0.5 <= at <= end + 0.5:
                return True
        return False


class VirtualUser:
    def __init__(
        self,
        n: int,
        port: int,
        password: str,
        stats: Stats,
        deadline: float,
        budget: list[int],
        rng: random.Random,
    ) -> None:
        self.n = n
        self.email = f"user{n}@example.com"
        self.username = f"user{n}"
        self.password = password
        self.port = port
        self.stats = stats
        self.deadline = deadline
        self.budget = budget
        self.rng = rng
        #: The last sign-in (or re-sign) failed: no session until the next sign-in.
        self.signed_out = False
        self.cookies: dict[str, dict[str, str]] = {}
        self.client = httpx.Client(timeout=30, follow_redirects=False)

    # A tiny browser: Host header per *.localhost URL, cookies per host.
    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        parts = urlsplit(url)
        host = parts.hostname or ""
        headers = {"Host": parts.netloc, "Accept": "text/html", **kw.pop("headers", {})}
        jar = self.cookies.get(host)
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        target = f"http://127.0.0.1:{self.port}{parts.path or '/'}" + (
            f"?{parts.query}" if parts.query else ""
        )
        with self.stats.lock:
            self.stats.requests += 1
            self.budget[0] -= 1
        r = self.client.request(method, target, headers=headers, **kw)
        self.client.cookies.clear()  # cookies are kept per virtual host above, not by httpx
        for header in r.headers.get_list("set-cookie"):
            c: SimpleCookie = SimpleCookie()
            c.load(header)
            for name, morsel in c.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.setdefault(host, {}).pop(name, None)
                else:
                    self.cookies.setdefault(host, {})[name] = morsel.value
        return r

    def follow(self, url: str, method: str = "GET", **kw: Any) -> httpx.Response:
        r = self.request(method, url, **kw)
        for _ in range(15):
            if r.status_code in (301, 302, 303, 307, 308):
                url = urljoin(url, r.headers["location"])
                r = self.request("GET", url)
                continue
            if r.status_code == 200 and 'name="tx"' in r.text and 'name="password"' in r.text:
                form = {
                    m.group(1): unescape(m.group(2))
                    for m in re.finditer(
                        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', r.text
                    )
                }
                action = unescape(
                    re.search(r'<form method="post" action="([^"]*)"', r.text).group(1)
                )  # type: ignore[union-attr]
                form.update(username=self.username, password=self.password)
                url = urljoin(url, action)
                r = self.request("POST", url, data=form)
                continue
            return r
        raise RuntimeError("too many hops")

    def sign_in(self) -> httpx.Response:
        return self.follow(f"{APP}/home")

    def sign_out(self) -> httpx.Response:
        page = self.request("GET", f"{APP}/.pomerium/")
        m = re.search(r'name="csrf" value="([^"]+)"', page.text)
        if page.status_code != 200 or m is None:
            return page
        return self.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": m.group(1)})

    def record(
        self, op: str, started: float, ok: bool, kind: str = "", expected: bool = False
    ) -> None:
        now = time.monotonic()
        with self.stats.lock:
            self.stats.ops[op] += 1
            if ok:
                self.stats.latency[op].append(now - started)
                self.stats.ok_times.append(now)
            else:
                expected = expected or self.stats.fault_explains(op, kind, now)
                self.stats.errors.append((now, op, kind, expected))

    def check_identity(self, r: httpx.Response, op: str) -> None:
        echoed = r.headers.get("x-echo-email")
        if echoed is not None and echoed != self.email:
            with self.stats.lock:
                self.stats.leaks.append(f"{op}: {self.email} saw {echoed}")

    def run(self) -> None:
        weights = {
            "page": 60,
            "api_no_session": 10,
            "upload": 5,
            "download": 5,
            "websocket": 5,
            "resign": 2,
            "fault_reset": 1,
            "fault_slow": 1,
        }
        ops, w = list(weights), list(weights.values())
        self.do("sign_in")
        while time.monotonic() < self.deadline and self.budget[0] > 0:
            if self.signed_out:
                # A sign-in (or the sign-in half of a re-sign) failed, e.g. its connection
                # died with a killed worker: this user holds no session now, so a 401 on
                # the next page would be our doing, not a lost session. Sign in first,
                # after a pause, as a person would (not a tight loop during an outage).
                time.sleep(0.2)
                self.do("sign_in")
                continue
            self.do(self.rng.choices(ops, w)[0])
        self.client.close()

    def do(self, op: str) -> None:
        started = time.monotonic()
        ok = False
        try:
            ok, kind, expected = getattr(self, "op_" + op)()
        except (httpx.TransportError, OSError) as exc:
            ok, kind, expected = False, "connection", False
            if op == "fault_reset":
                expected = True
            del exc
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            kind = f"status {status}" if status else f"exception {type(exc).__name__}"
            ok, expected = False, False
        if op in ("sign_in", "resign"):
            self.signed_out = not ok
        self.record(op, started, ok, kind, expected)

    def _status(self, r: httpx.Response, want: int) -> tuple[bool, str, bool]:
        return (r.status_code == want, f"status {r.status_code}", False)

    def op_sign_in(self) -> tuple[bool, str, bool]:
        r = self.sign_in()
        self.check_identity(r, "sign_in")
        return self._status(r, 200)

    def op_page(self) -> tuple[bool, str, bool]:
        r = self.request(
            "GET", f"{APP}/page/{self.rng.randrange(1000)}", headers={"Accept": "application/json"}
        )
        if r.status_code == 401:
            with self.stats.lock:
                self.stats.lost_sessions += 1
            self.do("sign_in")
            return False, "session lost (401)", False
        self.check_identity(r, "page")
        return self._status(r, 200)

    def op_api_no_session(self) -> tuple[bool, str, bool]:
        r = self.client.get(
            f"http://127.0.0.1:{self.port}/api/data",
            headers={"Host": "app.localhost", "Accept": "application/json"},
        )
        self.client.cookies.clear()
        with self.stats.lock:
            self.stats.requests += 1
        return self._status(r, 401)

    def op_upload(self) -> tuple[bool, str, bool]:
        r = self.request(
            "POST",
            f"{APP}/upload",
            content=os.urandom(16) * (UPLOAD_BYTES // 16),
            headers={"Accept": "application/json"},
        )
        self.check_identity(r, "upload")
        if r.status_code == 200 and r.headers.get("x-received") != str(UPLOAD_BYTES):
            return False, "upload size mismatch", False
        return self._status(r, 200)

    def op_download(self) -> tuple[bool, str, bool]:
        r = self.request("GET", f"{APP}/download", headers={"Accept": "application/json"})
        self.check_identity(r, "download")
        if r.status_code == 200 and len(r.content) != DOWNLOAD_BYTES:
            return False, "truncated download", False
        return self._status(r, 200)

    def op_websocket(self) -> tuple[bool, str, bool]:
        from websockets.sync.client import connect

        cookie = self.cookies.get("app.localhost", {}).get("_gatehouse", "")
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        with self.stats.lock:
            self.stats.requests += 1
        with connect(
            "ws://app.localhost/ws",
            sock=sock,
            open_timeout=10,
            close_timeout=5,
            additional_headers={"Cookie": f"_gatehouse={cookie}"},
        ) as ws:
            for i in range(3):
                ws.send(f"{self.n}-{i}")
                if ws.recv(timeout=10) != f"{self.n}-{i}":
                    return False, "websocket echo mismatch", False
        return True, "", False

    def op_resign(self) -> tuple[bool, str, bool]:
        out = self.sign_out()
        if out.status_code != 303:
            return False, f"sign-out status {out.status_code}", False
        return self.op_sign_in()

    def op_fault_reset(self) -> tuple[bool, str, bool]:
        try:
            r = self.request("GET", f"{APP}/fault/reset")
        except httpx.RemoteProtocolError:
            return True, "", False  # cut: the right outcome for a reset mid-response
        return False, f"reset answered {r.status_code} {len(r.content)}B", False

    def op_fault_slow(self) -> tuple[bool, str, bool]:
        r = self.request("GET", f"{APP}/fault/slow", headers={"Accept": "application/json"})
        return self._status(r, 504)


# -- the soak ---------------------------------------------------------------------------------


def soak(args: argparse.Namespace) -> int:
    from gatehouse.idp.passwords import hash_password

    tmp = Path(tempfile.mkdtemp(prefix="gatehouse-soak-"))
    redis = Redis(tmp)
    gh: Gatehouse | None = None
    stats = Stats()
    try:
        redis.start()
        up = Upstream()
        password = "soak-" + os.urandom(6).hex()
        phash = hash_password(password)
        users = [
            {
                "username": f"user{i}",
                "password_hash": phash,
                "email": f"user{i}@example.com",
                "name": f"User {i}",
            }
            for i in range(args.users)
        ]
        config = {
            "address": "127.0.0.1:0",
            "insecure_server": True,
            "workers": 2,
            "shutdown_timeout": "10s",
            "authenticate_service_url": AUTH,
            "idp_provider": "builtin",
            "idp_users": users,
            "shared_secret": base64.b64encode(os.urandom(32)).decode(),
            "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
            "databroker_storage_type": "redis",
            "databroker_storage_connection_string": f"redis://127.0.0.1:{redis.port}/0",
            "data_dir": str(tmp / "data"),
            "routes": [
                {
                    "from": APP,
                    "to": f"http://127.0.0.1:{up.port}",
                    "pass_identity_headers": True,
                    "allow_any_authenticated_user": True,
                    "timeout": "1s",
                    "idle_timeout": "10s",
                    "prefix": "/",
                    "allow_websockets": False,
                    "name": "app",
                },
            ],
        }
        # WebSockets go to the echo server (a path-matched route, listed first).
        config["routes"].insert(
            0,
            {
                "from": APP,
                "prefix": "/ws",
                "to": f"http://127.0.0.1:{up.ws_port}",
                "allow_websockets": True,
                "allow_any_authenticated_user": True,
                "name": "ws",
            },
        )
        config["routes"][1].pop("prefix")
        gh = Gatehouse(tmp, config)
        gh.start()
        print(
            f"gatehouse on :{gh.port}, redis on :{redis.port}, upstream :{up.port}, "
            f"{args.users} virtual users, {args.duration:.0f}s, at most {args.max_requests} requests",
            flush=True,
        )
        start = time.monotonic()
        deadline = start + args.duration
        budget = [args.max_requests]
        rss: list[tuple[float, int]] = []
        vus = [
            VirtualUser(i, gh.port, password, stats, deadline, budget, random.Random(i))
            for i in range(args.users)
        ]
        threads = [threading.Thread(target=vu.run, daemon=True) for vu in vus]
        for t in threads:
            t.start()
        schedule = [
            (0.15, "config_reload"),
            (0.25, "worker_kill"),
            (0.35, "redis_restart"),
            (0.45, "config_reload"),
            (0.55, "config_reload"),
            (0.8, "config_reload"),
        ]
        next_sample = start
        reloads = 0
        while any(t.is_alive() for t in threads):
            now = time.monotonic()
            if now >= next_sample:
                rss.append((now - start, sum(rss_kb(p) for p in gh.pids())))
                next_sample += args.sample_interval
            while schedule and now - start >= schedule[0][0] * args.duration:
                _, fault = schedule.pop(0)
                t0 = time.monotonic()
                if fault == "config_reload":
                    reloads += 1
                    gh.rewrite(f"v{reloads}")
                elif fault == "worker_kill":
                    victim = children_of(gh.proc.pid)[0]  # type: ignore[union-attr]
                    os.kill(victim, signal.SIGKILL)
                elif fault == "redis_restart":
                    redis.restart()
                stats.faults.append((fault, t0, time.monotonic()))
                print(f"  t={t0 - start:6.1f}s injected {fault}", flush=True)
            time.sleep(0.2)
        elapsed = time.monotonic() - start
        code = gh.stop()
        return report(args, stats, rss, elapsed, code, gh, start)
    finally:
        if gh is not None:
            gh.stop()
        redis.stop()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


def report(
    args: argparse.Namespace,
    stats: Stats,
    rss: list[tuple[float, int]],
    elapsed: float,
    exit_code: int,
    gh: Gatehouse,
    start: float,
) -> int:
    print(
        f"\n== soak: {elapsed:.0f}s, {stats.requests} HTTP requests "
        f"({stats.requests / elapsed:.0f}/s), {sum(stats.ops.values())} operations"
    )
    print(f"{'operation':16} {'count':>7} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}")
    errors_by_op = Counter(op for _, op, _, _ in stats.errors)
    for op, n in sorted(stats.ops.items()):
        lat = stats.latency.get(op, [])
        print(
            f"{op:16} {n:7d} {errors_by_op[op]:7d} {percentile(lat, 50) * 1000:8.1f} "
            f"{percentile(lat, 99) * 1000:8.1f}"
        )
    all_lat = [v for op, vs in stats.latency.items() if op not in ("fault_slow",) for v in vs]
    print(
        f"all (no fault ops)        p50 {percentile(all_lat, 50) * 1000:.1f} ms   "
        f"p99 {percentile(all_lat, 99) * 1000:.1f} ms"
    )
    # Faults are recorded when they end: judge every error again now that all are known.
    stats.errors = [
        (t, op, kind, expected or stats.fault_explains(op, kind, t))
        for t, op, kind, expected in stats.errors
    ]
    print("\nerrors by kind:")
    kinds = Counter((op, kind, expected) for _, op, kind, expected in stats.errors)
    for (op, kind, expected), n in sorted(kinds.items()):
        print(
            f"  {n:6d}  {op:16} {kind:28} {'expected (injected fault)' if expected else 'UNEXPECTED'}"
        )
    if not kinds:
        print("  none")
    unexpected = [t - start for t, _, _, expected in stats.errors if not expected]
    if unexpected:
        buckets = Counter(int(t // 10) * 10 for t in unexpected)
        print("unexpected errors by time (10 s buckets):")
        print("  " + "  ".join(f"{b}s:{n}" for b, n in sorted(buckets.items())))
    for name, f_start, f_end in stats.faults:
        if name != "redis_restart":
            continue
        lo, hi = f_start - 0.5, f_end + 0.5
        served = sum(1 for t in stats.ok_times if lo <= t <= hi)
        refused = sum(1 for t, _, kind, _ in stats.errors if lo <= t <= hi and "503" in kind)
        print(
            f"during the Redis outage at {f_start - start:.0f}s ({hi - lo:.1f} s): {served} "
            f"operations served (cached sessions), {refused} answered 503 (store writes, or "
            "sessions that worker had not cached)"
        )
    print(
        "\nfaults injected:", ", ".join(f"{name}@{s - start:.0f}s" for name, s, _ in stats.faults)
    )
    print("\nRSS of gatehouse (supervisor + workers), MiB:")
    step = max(1, len(rss) // 20)
    print("  " + "  ".join(f"{t:.0f}s:{kb / 1024:.0f}" for t, kb in rss[::step]))
    half = [kb for t, kb in rss if t >= elapsed / 2]
    growth_ok = True
    if len(half) >= 4:
        q = max(1, len(half) // 4)
        first, last = statistics.median(half[:q]), statistics.median(half[-q:])
        growth = (last - first) / first
        growth_ok = last - first <= max(0.05 * first, 8 * 1024)
        print(f"  last half: {first / 1024:.1f} → {last / 1024:.1f} MiB ({growth * 100:+.1f}%)")
    unexpected = [e for e in stats.errors if not e[3]]
    crashes = [r for r in gh.log_lines() if "worker exited unexpectedly" in str(r.get("message"))]
    tracebacks = [r for r in gh.log_lines() if "Traceback" in str(r) and "exception" in r]
    print(
        f"\nworker restarts logged: {len(crashes)} (injected kills: "
        f"{sum(1 for f in stats.faults if f[0] == 'worker_kill')}); logged exceptions: {len(tracebacks)}"
    )
    print(f"sessions lost (401 on a signed-in user): {stats.lost_sessions}")
    checks = {
        "zero unexpected errors": not unexpected,
        "no identity leaked across users": not stats.leaks,
        "no session lost": stats.lost_sessions == 0,
        "memory flat in the last half": growth_ok,
        "exit 0 on SIGTERM": exit_code == 0,
    }
    for leak in stats.leaks[:5]:
        print("  LEAK:", leak)
    print()
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "elapsed_s": elapsed,
                    "requests": stats.requests,
                    "ops": stats.ops,
                    "errors": [list(k) + [n] for k, n in kinds.items()],
                    "rss_kb": rss,
                    "checks": checks,
                    "p50_ms": percentile(all_lat, 50) * 1000,
                    "p99_ms": percentile(all_lat, 99) * 1000,
                },
                indent=1,
            )
        )
    return 0 if all(checks.values()) else 1


# -- 500 keep-alive connections -------------------------------------------------------------


def connections(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="gatehouse-c500-"))
    nginx_port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp}; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{nginx_port}; location / {{ return 200 "hello from upstream\\n"; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp)], stderr=subprocess.DEVNULL)
    gh = Gatehouse(
        tmp,
        {
            "address": "127.0.0.1:0",
            "insecure_server": True,
            "workers": args.workers,
            "access_log": False,
            "data_dir": str(tmp / "data"),
            "routes": [
                {
                    "from": "http://bench.localhost",
                    "to": f"http://127.0.0.1:{nginx_port}",
                    "allow_public_unauthenticated_access": True,
                }
            ],
        },
    )
    try:
        wait_for(lambda: _get_ok(nginx_port, "x"), 10, "nginx")
        gh.start()
        wait_for(lambda: _get_ok(gh.port, "bench.localhost"), 10, "gatehouse")
        url = f"http://127.0.0.1:{gh.port}/"
        base = ["wrk", "-t2", f"-c{args.connections}", "--latency", "-H", "Host: bench.localhost"]
        subprocess.run([*base, "-d5s", url], capture_output=True, check=False)  # warm-up
        out = subprocess.run(
            [*base, f"-d{int(args.duration)}s", url], capture_output=True, text=True, check=False
        ).stdout
        print(out)
        p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        errors = re.search(r"Socket errors:.*", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if p99 is None:
            print("could not parse wrk output")
            return 1
        ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
        print(
            f"== {args.connections} keep-alive connections, workers: {args.workers}: "
            f"p99 {ms:.1f} ms (target < 50 ms), {rps.group(1) if rps else '?'} req/s, "
            f"{errors.group(0) if errors else 'no socket errors'}, non-2xx: {non2xx.group(1) if non2xx else 0}"
        )
        return 0 if ms < 50 and not non2xx else 1
    finally:
        gh.stop()
        nginx.terminate()
        nginx.wait(10)
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _get_ok(port: int, host: str) -> bool:
    try:
        return (
            httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": host}, timeout=2).status_code
            == 200
        )
    except httpx.HTTPError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration",
        type=parse_duration,
        default=None,
        help="how long (default 10m for the soak, 20s for --connections)",
    )
    parser.add_argument(
        "--max-requests", type=int, default=2_000_000, help="stop after this many requests"
    )
    parser.add_argument("--users", type=int, default=8, help="virtual users (threads)")
    parser.add_argument(
        "--sample-interval", type=float, default=2.0, help="RSS sampling period, seconds"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=0,
        help="instead of the soak: wrk with this many keep-alive connections",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="gatehouse workers for --connections"
    )
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args()
    if args.connections:
        args.duration = args.duration or 20.0
        return connections(args)
    args.duration = args.duration or 600.0
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
