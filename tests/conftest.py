"""Shared fixtures: a background event loop for test servers, upstream factories, gatehouse processes.

These are generic: any test may ask for ``loop_thread``, ``make_upstream``, ``ws_echo``
or ``start_gatehouse`` (see :mod:`support`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.gatehouse import GatehouseProcess
from support.loop import LoopThread
from support.upstream import Action, Upstream, WebSocketEcho


def pytest_configure(config: pytest.Config) -> None:
    # gatehouse processes run in their own directories: a relative PYTHONPATH=src (running
    # the source tree, not the installed build) must reach them too.
    if os.environ.get("PYTHONPATH"):
        os.environ["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p
        )
    config.addinivalue_line(
        "markers", "slow: streams a lot of data (1 GiB); deselect with -m 'not slow'"
    )


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def make_upstream(loop_thread: LoopThread) -> Iterator[Callable[..., Upstream]]:
    """Factory: ``make_upstream(name="a", action=Respond(...))``; closed after the test."""
    made: list[Upstream] = []

    def make(name: str = "upstream", action: Action | None = None) -> Upstream:
        up = Upstream(loop_thread, name, action)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


@pytest.fixture
def upstream(make_upstream: Callable[..., Upstream]) -> Upstream:
    return make_upstream()


@pytest.fixture
def ws_echo(loop_thread: LoopThread) -> Iterator[WebSocketEcho]:
    server = WebSocketEcho(loop_thread)
    yield server
    server.close()


@pytest.fixture
def start_gatehouse(tmp_path: Path) -> Iterator[Callable[..., GatehouseProcess]]:
    """Factory: ``start_gatehouse(config_dict_or_text, env=None)``; each is stopped with
    SIGTERM after the test and must exit 0."""
    procs: list[GatehouseProcess] = []

    def start(config: dict[str, Any] | str, env: dict[str, str] | None = None) -> GatehouseProcess:
        workdir = tmp_path / f"gh{len(procs)}"
        workdir.mkdir()
        gh = GatehouseProcess(config, workdir, env=env)
        procs.append(gh)
        return gh.start()

    yield start
    codes = [(gh, gh.stop()) for gh in procs]
    for gh, code in codes:
        assert code == 0, f"gatehouse exited {code}:\n{gh.stderr_text()}"
