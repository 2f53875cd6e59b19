"""A real ``gatehouse run`` process for tests: started from a config dict or text, port 0.

:class:`GatehouseProcess` writes the config into a directory, starts
``python -m gatehouse run -c FILE`` with an environment cleaned of option overrides,
collects stdout (access log) and stderr (JSON process log) in background threads, waits
for the ``"listening"`` line and reads the bound address from it. :meth:`stop` sends
SIGTERM and returns the exit status (callers assert 0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from . import wait_until

#: Defaults every test config gets unless it sets them.
BASE_CONFIG: dict[str, Any] = {
    "address": "127.0.0.1:0",
    "insecure_server": True,
    "workers": 1,
    "shutdown_timeout": "5s",
}


def _option_env_names() -> set[str]:
    from gatehouse.config.options import Options

    return {(f.alias or n).upper() for n, f in Options.model_fields.items()}


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without variables that would override config keys."""
    drop = _option_env_names()
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m gatehouse ARGS`` with a clean environment, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gatehouse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )


_POLICY_KEYS = (
    "policy",
    "allowed_users",
    "allowed_domains",
    "allowed_idp_claims",
    "allow_public_unauthenticated_access",
    "allow_any_authenticated_user",
)


def public(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark routes without any policy key as public (no sign-in), for data-plane tests."""
    return [
        r
        if any(k in r for k in _POLICY_KEYS)
        else {**r, "allow_public_unauthenticated_access": True}
        for r in routes
    ]


def config_text(config: Mapping[str, Any] | str, defaults: bool = True) -> str:
    """YAML text for ``config`` (a dict gets :data:`BASE_CONFIG` under it)."""
    if isinstance(config, str):
        return config
    data = {**BASE_CONFIG, **config} if defaults else dict(config)
    return yaml.safe_dump(data, sort_keys=False)


class GatehouseProcess:
    """One gatehouse process; use as a context manager or call :meth:`start`/:meth:`stop`."""

    def __init__(
        self,
        config: Mapping[str, Any] | str,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
        python_args: list[str] | None = None,
        python: str | None = None,
    ) -> None:
        """``args`` follow ``gatehouse run -c <config>``; ``python_args`` go before
        ``-m gatehouse`` (``["-m", "cProfile", "-o", path]`` profiles the run); ``python``
        is the interpreter (default: this one), e.g. another venv's with another build."""
        self.workdir = workdir
        self.config_path = workdir / "gatehouse.yaml"
        if not isinstance(config, str) and "data_dir" not in config:
            # Keep generated keys and session stores out of the user's home directory.
            config = {**config, "data_dir": str(workdir / "data")}
        self._data_dir = str(workdir / "data")
        self.config_path.write_text(config_text(config))
        self.env = clean_env(env)
        self.args = args
        self.python_args = python_args or []
        self.python = python or sys.executable
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.address = ""
        self.port = 0
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> GatehouseProcess:
        cmd = [
            self.python,
            *self.python_args,
            "-m",
            "gatehouse",
            "run",
            "-c",
            str(self.config_path),
            *(self.args or []),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, cwd=self.workdir
        )
        for stream, sink in (
            (self.proc.stdout, self.stdout_lines),
            (self.proc.stderr, self.stderr_lines),
        ):
            t = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            t.start()
            self._threads.append(t)

        def listening() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"gatehouse exited {self.proc.returncode}:\n" + "\n".join(self.stderr_lines)
                )
            return self.find_log(lambda r: r.get("message") == "listening")

        line = wait_until(listening, timeout, what="gatehouse to listen")
        self.address = str(line["address"])
        self.port = int(self.address.rpartition(":")[2])
        return self

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, return the exit status (None-safe: kills after ``timeout``)."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise AssertionError("gatehouse did not exit after SIGTERM") from None
        for t in self._threads:
            t.join(5)
        return proc.returncode

    def __enter__(self) -> GatehouseProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        if exc[0] is None:
            assert code == 0, f"gatehouse exited {code}:\n" + self.stderr_text()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- config -------------------------------------------------------------------------

    def write_config(self, config: Mapping[str, Any] | str) -> None:
        """Replace the config file (for hot-reload tests); the size or mtime changes."""
        if not isinstance(config, str) and "data_dir" not in config:
            config = {**config, "data_dir": self._data_dir}
        text = config_text(config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    # -- logs ---------------------------------------------------------------------------

    def logs(self) -> list[dict[str, Any]]:
        """The stderr process log, one dict per JSON line (other lines as ``{"raw": ...}``)."""
        return [_json_or_raw(line) for line in list(self.stderr_lines)]

    def access_log(self) -> list[dict[str, Any]]:
        return [_json_or_raw(line) for line in list(self.stdout_lines)]

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_lines)

    def find_log(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((r for r in self.logs() if pred(r)), None)

    def wait_log(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        return wait_until(lambda: self.find_log(pred), timeout, what="a log line")

    def wait_access(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        return wait_until(
            lambda: next((r for r in self.access_log() if pred(r)), None),
            timeout,
            what="an access-log line",
        )

    # -- resources ----------------------------------------------------------------------

    def status_kb(self, field: str) -> int:
        """A ``/proc/PID/status`` field in kB (``VmHWM`` is the peak RSS, ``VmRSS`` the current)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    # -- clients ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    def client(self, **kw: Any) -> httpx.Client:
        """An httpx client for this gatehouse (set ``headers={"Host": ...}`` per request)."""
        kw.setdefault("timeout", 10.0)
        return httpx.Client(base_url=self.base_url, **kw)

    def get(self, path: str, host: str, **kw: Any) -> httpx.Response:
        """One request with ``Host: host`` on a fresh connection."""
        method = kw.pop("method", "GET")
        headers = {"Host": host, **kw.pop("headers", {})}
        with self.client() as c:
            return c.request(method, path, headers=headers, **kw)


def _pump(stream: Any, sink: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
    stream.close()


def _json_or_raw(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {"raw": line}
    return value if isinstance(value, dict) else {"raw": line}


def started(config: Mapping[str, Any] | str, workdir: Path, **kw: Any) -> GatehouseProcess:
    """Start a gatehouse process (convenience for fixtures)."""
    return GatehouseProcess(config, workdir, **kw).start()


__all__ = ["BASE_CONFIG", "GatehouseProcess", "clean_env", "config_text", "public", "started"]
