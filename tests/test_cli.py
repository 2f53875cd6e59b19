"""The ``gatehouse`` command: --version, --help, check exit codes, graceful SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import gatehouse
from support import wait_until
from support.gatehouse import GatehouseProcess, clean_env, config_text, public, run_cli
from support.upstream import Respond, SlowHead, Upstream


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert gatehouse.__version__ in result.stdout


def test_the_request_path_is_compiled_unless_asked_not_to() -> None:
    """./scripts/test installs the mypyc build: the tests (and the benchmark) exercise the
    code users run. GATEHOUSE_PURE_PYTHON=1 at install time is the documented way out."""
    import os

    source_tree = Path(__file__).resolve().parents[1] / "src"
    if Path(gatehouse.__file__).resolve().is_relative_to(source_tree):
        pytest.skip("gatehouse is imported from the source tree (PYTHONPATH=src), not installed")
    kind = (
        "pure Python"
        if os.environ.get("GATEHOUSE_PURE_PYTHON") not in (None, "", "0")
        else ("compiled")
    )
    assert f"({kind})" in run_cli("--version").stdout


@pytest.mark.parametrize("command", [[], ["run"], ["check"], ["keygen"], ["reference"]])
def test_help_on_every_command(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout.lower()


def test_check_valid(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        config_text({"routes": public([{"from": "http://a.test", "to": "http://127.0.0.1:1"}])})
    )
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "insecure_server: true\ntimout_idle: 1s\nroutes:\n  - from: http://a.test\n    to: ftp://x\n"
    )
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}:2:" in result.stderr and "did you mean 'timeout_idle'" in result.stderr
    assert f"{path}:5:" in result.stderr and "routes[0].to" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_missing_file(tmp_path: Path) -> None:
    result = run_cli("check", "-c", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


_CHECK_THEN_COUNT = (
    "import gc, sys\n"
    "from gatehouse.cli import main\n"
    "status = main(['check', '-c', sys.argv[1]])\n"
    "print(status, gc.get_freeze_count(), len(gc.get_objects()))\n"
)


@pytest.mark.parametrize("valid", [True, False])
def test_check_leaves_its_objects_out_of_the_exit_collection(tmp_path: Path, valid: bool) -> None:
    """What check built is frozen before the interpreter's final collection (which would
    scan every route again after the verdict); the verdict and exit status are unchanged."""
    routes = [
        {"from": f"http://h{i}.test", "to": "http://127.0.0.1:1" if valid else "ftp://x"}
        for i in range(300)
    ]
    path = tmp_path / "routes.yaml"
    path.write_text(config_text({"routes": public(routes)}))
    done = subprocess.run(
        [sys.executable, "-c", _CHECK_THEN_COUNT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    status, frozen, tracked = (int(v) for v in done.stdout.splitlines()[-1].split())
    if valid:
        assert status == 0 and "OK (300 routes)" in done.stdout, done.stderr
    else:
        assert status == 1 and "routes[299].to" in done.stderr
        assert "Traceback" not in done.stderr
    assert frozen > 300 * 20 > tracked


def test_run_with_invalid_config_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("insecure_server: true\naddress: 127.0.0.1:0\nbogus_key: 1\n")
    result = run_cli("run", "-c", str(path))
    assert result.returncode == 1
    assert "bogus_key" in result.stderr


def test_sigterm_drains_an_in_flight_request(
    tmp_path: Path, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream("slow", SlowHead(delay=1.0, then=Respond(body=b"hello from slow")))
    gh = GatehouseProcess(
        {"shutdown_timeout": "10s", "routes": public([{"from": "http://slow.test", "to": up.url}])},
        tmp_path,
    ).start()
    result: dict[str, object] = {}

    def call() -> None:
        try:
            with httpx.Client(base_url=gh.base_url, timeout=10) as c:
                r = c.get("/", headers={"Host": "slow.test"})
                result["status"], result["body"] = r.status_code, r.text
        except Exception as exc:  # reported below
            result["error"] = repr(exc)

    t = threading.Thread(target=call)
    t.start()
    wait_until(lambda: up.requests, 5, what="the request to reach the upstream")
    started = time.monotonic()
    assert gh.proc is not None
    gh.proc.send_signal(signal.SIGTERM)
    code = gh.proc.wait(15)
    t.join(5)
    assert code == 0, gh.stderr_text()
    assert result.get("status") == 200, result
    assert result.get("body") == "hello from slow"
    assert time.monotonic() - started < 5
    # New connections are refused once draining has finished.
    with pytest.raises(httpx.HTTPError):
        httpx.get(gh.base_url + "/ping", timeout=2)
    gh.stop()


def test_sigterm_idle_exits_quickly(start_gatehouse: Callable[..., GatehouseProcess]) -> None:
    gh = start_gatehouse({"routes": []})
    started = time.monotonic()
    assert gh.stop() == 0
    assert time.monotonic() - started < 3
