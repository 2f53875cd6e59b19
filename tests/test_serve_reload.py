"""A worker's reload, sliced on its event loop (serve.Worker._watch).

In process, with the worker's real loader and state builder and stand-ins for the
pipeline and server: a config that fails part-way through its sliced load (bad YAML near
the end) or build (a policy that does not compile, late in the routes) keeps the running
state, logs one line and leaves the collector on; the next good edit reloads, compiling
only the route that changed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatehouse.config.loader import load_file
from gatehouse.proxy.compile_cache import RouteCompiler
from gatehouse.proxy.state import ProxyState, Services, build_state
from gatehouse.serve import Worker

#: Enough routes that loading and building take many slices.
ROUTES = 3_000
RELOADED = "config reloaded"
FAILED = "config reload failed; keeping the running config"


def config(changed: int | None = None, policy_at: int | None = None, tail: str = "") -> str:
    lines = ["insecure_server: true", "routes:"]
    for i in range(ROUTES):
        host = f"changed{i}" if i == changed else f"h{i}"
        lines += [f"  - from: http://{host}.example.test", "    to: http://127.0.0.1:9"]
        if i == policy_at:
            lines += ["    policy:", "      - allow: {or: [{bogus_criterion: 1}]}"]
        else:
            lines.append("    allow_public_unauthenticated_access: true")
    return "\n".join(lines) + "\n" + tail


class Pipeline:
    """What the watcher needs of the pipeline."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self.swaps = 0

    def swap_state(self, state: ProxyState) -> None:
        self.state = state
        self.swaps += 1


class Server:
    def update_settings(self, settings: object) -> None:
        self.settings = settings


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def outcomes(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() in (RELOADED, FAILED)]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("gatehouse")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Reloads:
    """A worker watching ``path``, and edits made to it one at a time."""

    def __init__(self, path: Path, records: Records) -> None:
        path.write_text(config())
        self.path, self.records = path, records
        self.worker = Worker(str(path), load_file(path))
        self.worker.services = Services(route_compiler=RouteCompiler())
        self.first = build_state(self.worker.loaded, self.worker.services)
        self.pipeline = Pipeline(self.first)

    async def edit(self, text: str) -> logging.LogRecord:
        """Write ``text``, ask for a reload and return its outcome's log record."""
        seen = len(self.records.outcomes())
        self.path.write_text(text)
        self.worker.reload_now.set()
        for _ in range(3000):
            await asyncio.sleep(0.01)
            outcomes = self.records.outcomes()
            if len(outcomes) > seen:
                await asyncio.sleep(0.05)  # a second line would be a bug: give it time
                outcomes = self.records.outcomes()
                assert len(outcomes) == seen + 1, [r.getMessage() for r in outcomes]
                return outcomes[-1]
        raise AssertionError("no reload outcome logged")

    def run(self, scenario: Any) -> None:
        async def main() -> None:
            watcher = asyncio.create_task(self.worker._watch(self.pipeline, Server()))  # type: ignore[arg-type]
            try:
                await scenario(self)
            finally:
                watcher.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await watcher

        asyncio.run(main())


def test_bad_yaml_late_in_a_sliced_load_keeps_the_running_config(
    tmp_path: Path, records: Records
) -> None:
    reloads = Reloads(tmp_path / "gatehouse.yaml", records)

    async def scenario(r: Reloads) -> None:
        line = await r.edit(config(tail="routes: [unclosed\n"))
        assert line.getMessage() == FAILED
        problems: list[str] = line.problems  # type: ignore[attr-defined]
        assert any("invalid YAML" in p for p in problems), problems
        assert r.pipeline.swaps == 0 and r.pipeline.state is r.first
        assert gc.isenabled()
        line = await r.edit(config(changed=7))
        assert line.getMessage() == RELOADED
        assert r.pipeline.state.router.match("changed7.example.test", None, "/") is not None
        assert line.compiled == 1  # type: ignore[attr-defined]

    reloads.run(scenario)


def test_a_config_error_late_in_a_sliced_build_keeps_the_running_config(
    tmp_path: Path, records: Records
) -> None:
    reloads = Reloads(tmp_path / "gatehouse.yaml", records)

    async def scenario(r: Reloads) -> None:
        line = await r.edit(config(policy_at=ROUTES - 10))
        assert line.getMessage() == FAILED
        problems: list[str] = line.problems  # type: ignore[attr-defined]
        assert any(f"routes[{ROUTES - 10}]" in p and "bogus_criterion" in p for p in problems)
        assert r.pipeline.swaps == 0 and r.pipeline.state is r.first
        assert r.pipeline.state.router.match("h1.example.test", None, "/") is not None
        assert gc.isenabled()
        # The failed build kept the compiled routes of the running config.
        line = await r.edit(config(changed=5))
        assert line.getMessage() == RELOADED
        assert line.compiled == 1  # type: ignore[attr-defined]
        assert r.pipeline.swaps == 1

    reloads.run(scenario)


def test_a_reload_logs_its_slices_and_collector_costs(tmp_path: Path, records: Records) -> None:
    reloads = Reloads(tmp_path / "gatehouse.yaml", records)

    async def scenario(r: Reloads) -> None:
        line = await r.edit(config(changed=ROUTES // 2))
        assert line.getMessage() == RELOADED
        fields = line.__dict__
        assert fields["routes"] == ROUTES
        assert fields["slices"] > 1  # many slices, not one stretch
        for key in ("freeze_ms", "collect_ms", "longest_slice_ms", "release_s"):
            assert fields[key] >= 0, key
        assert r.pipeline.state.router.match("h0.example.test", None, "/") is not None
        assert r.pipeline.state.router.match(f"h{ROUTES // 2}.example.test", None, "/") is None
        assert gc.isenabled()

    reloads.run(scenario)
