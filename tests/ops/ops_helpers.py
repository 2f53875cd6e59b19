"""Helpers for the operations tests: restartable dependencies, metrics scraping, worker pids.

* :class:`RestartableProvider` runs panva's oidc-provider (the fixture under
  ``tests/authenticate/oidc_provider``) so it can be stopped and started again on the
  *same* port, hence the same issuer URL (the preload ``fixed_port.mjs`` pins the port);
* :class:`RedisServer` is a private ``redis-server`` on a free loopback port that a test
  may kill and restart (the shared Redis on 6379 is never touched);
* :func:`scrape` reads a Prometheus text page into ``{(name, labels): value}``;
* :func:`children_of` lists the worker processes of a supervisor from ``/proc``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from authenticate.conftest import _read_port  # the provider prints its port
from support import wait_until
from support.upstream import closed_port

HERE = Path(__file__).resolve().parent
PROVIDER_DIR = HERE.parent / "authenticate" / "oidc_provider"
PRELOAD = HERE / "fixed_port.mjs"
STARTUP_TIMEOUT_S = 30.0


@dataclass
class RestartableProvider:
    """The OIDC provider as a process that can be stopped and restarted at one issuer."""

    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen[str] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RestartableProvider:
        node = shutil.which("node")
        if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            pytest.skip("node or the oidc-provider fixture is not installed")
        env = {**os.environ, **self.env, "NODE_ENV": "test", "FIXED_PORT": str(self.port)}
        self.proc = subprocess.Popen(
            [node, "--import", PRELOAD.as_uri(), "server.js"],
            cwd=PROVIDER_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.port = _read_port(self.proc)
        wait_until(
            self._discovery_ok, STARTUP_TIMEOUT_S, interval=0.05, what="oidc-provider discovery"
        )
        return self

    def _discovery_ok(self) -> bool:
        try:
            return (
                httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=2).status_code
                == 200
            )
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class RedisServer:
    """A private redis-server on 127.0.0.1 (no persistence), restartable on its port."""

    port: int = field(default_factory=closed_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ping, 10, interval=0.02, what="redis-server to answer PING")
        return self

    def _ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the store vanishes as in a crash."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on the metrics page at ``127.0.0.1:port``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from ``/proc/*/stat``)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(entry))
    return sorted(kids)


def metrics_port(gh) -> int:  # type: ignore[no-untyped-def]
    """The port of gatehouse's metrics listener (from its ``metrics listening`` log line)."""
    line = gh.wait_log(lambda r: r.get("message") == "metrics listening", timeout=10)
    return int(str(line["address"]).rpartition(":")[2])


def csrf_of(page_html: str) -> str:
    return page_html.split('name="csrf" value="')[1].split('"')[0]


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the TCP socket 127.0.0.1:local_port ↔ 127.0.0.1:remote_port (server side)."""
    want_local = f"0100007F:{local_port:04X}"
    want_remote = f"0100007F:{remote_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[1] == want_local and parts[2] == want_remote:
            return parts[9]
    return None


def owner_of_connection(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the accepted side of the client's connection (from /proc)."""
    inode = _socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None
