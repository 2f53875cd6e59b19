"""What ``bench/proxy_bench.py`` prints from a py-spy profile, and the PostgreSQL state
its ``authenticated-postgres`` scenario (and ``scaling_bench.py``'s store row) leaves.

The profile tables are read from py-spy's raw stacks as ``--native`` writes them for a
compiled build (the frames below are copied from a real profile): a user must see the
compiled functions by their Python names, not mypyc's C symbols, and threads that only
wait must not take a share.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent
SO = "a2142bbc737177bc3eee__mypyc.cpython-311-x86_64-linux-gnu.so"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_proxy", REPO / "bench" / "proxy_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


_LOOP = (
    "_run_module_as_main (<frozen runpy>:198);<module> (gatehouse/__main__.py:7);"
    "run (gatehouse/serve.py:440);Runner.run (asyncio/runners.py:118);uv_run (core.c:464);"
    "uv__io_poll (linux.c:1546)"
)
_RAW = f"""\
{_LOOP};CPyDef_server___DownstreamProtocol___data_received ({SO});\
CPyDef_pipeline_____call___3_Pipeline_gen_____mypyc_generator_helper__ ({SO});\
CPyDef_pipeline___Pipeline____authorize ({SO});CPyDef_policy___Policy___evaluate ({SO}) 30
{_LOOP};CPyDef_server___DownstreamProtocol___data_received ({SO});\
CPyDef_pipeline_____call___3_Pipeline_gen_____mypyc_generator_helper__ ({SO});\
CPyPy_headers___upstream_request_head ({SO}) 10
{_LOOP};CPyDef_server___DownstreamProtocol___write ({SO});write (libc.so.6) 60
{_LOOP};epoll_pwait (libc.so.6) 500
thread_run (libpython3.11.so.1.0);Thread._bootstrap (threading.py:1002);\
_worker (concurrent/futures/thread.py:81);pthread_cond_timedwait (libc.so.6);\
0x7fea0e4a3f16 (libc.so.6) 400
"""


def _tables(bench: ModuleType, tmp_path: Path, raw: str) -> str:
    path = tmp_path / "stacks.txt"
    path.write_text(raw)
    return "\n".join(bench._collapsed_top(path, 10))


def test_compiled_functions_are_shown_by_their_python_names(
    bench: ModuleType, tmp_path: Path
) -> None:
    text = _tables(bench, tmp_path, _RAW)
    assert "CPyDef_" not in text and "CPyPy_" not in text and SO not in text
    ours = text[text.index("gatehouse's functions by INCLUSIVE") :]
    ours = ours[: ours.index("every function")]
    # The coroutine body (mypyc's generator helper) is named after its function.
    assert "40.0  pipeline.Pipeline.__call__ (compiled)" in ours
    assert "30.0  pipeline.Pipeline._authorize (compiled)" in ours
    assert "30.0  policy.Policy.evaluate (compiled)" in ours
    assert "10.0  headers.upstream_request_head (compiled)" in ours
    assert "100.0  server.DownstreamProtocol" not in ours  # data_received 40, write 60
    assert "serve.py" not in ours and "__main__" not in ours  # start-up is on every stack


def test_idle_samples_take_no_share(bench: ModuleType, tmp_path: Path) -> None:
    text = _tables(bench, tmp_path, _RAW)
    assert "100 busy samples (900 idle ones left out" in text
    self_part = text[text.index("by SELF time") :]
    assert "60.0  write (libc.so.6)" in self_part
    assert "epoll_pwait" not in text and "pthread_cond_timedwait" not in text


def test_a_pure_python_profile_names_python_functions(bench: ModuleType, tmp_path: Path) -> None:
    raw = (
        "Runner.run (asyncio/runners.py:118);_authorize (gatehouse/proxy/pipeline.py:310) 7\n"
        "Runner.run (asyncio/runners.py:118);_authorize (gatehouse/proxy/pipeline.py:311) 3\n"
    )
    text = _tables(bench, tmp_path, raw)
    assert "100.0  _authorize (gatehouse/proxy/pipeline.py)" in text  # per function
    assert "70.0  _authorize (gatehouse/proxy/pipeline.py:310)" in text  # per line
    assert "compiled" not in text.split("\n\n", 1)[1]


def test_mypyc_symbols_that_are_not_functions_are_left_alone(bench: ModuleType) -> None:
    assert bench.mypyc_name("CPy_AddTraceback") is None
    assert bench.mypyc_name("write") is None
    assert bench.mypyc_name("pipeline_____call___3_Pipeline_gen_dealloc") == (
        "pipeline.Pipeline.__call__ [dealloc]"
    )
    assert bench.mypyc_name("CPyDef_pipeline___Pipeline_____init__") == (
        "pipeline.Pipeline.__init__"
    )


def test_postgres_scenario_works_in_its_own_schema_and_drops_it(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = os.environ.get("GATEHOUSE_TEST_POSTGRES_URL", bench.POSTGRES_URL)
    monkeypatch.setattr(bench, "POSTGRES_URL", server)  # the tests' server
    url = bench.postgres_bench_url()
    try:
        assert f"/{bench.POSTGRES_BENCH_DB}?" in url
        with psycopg.connect(url, autocommit=True) as conn:
            schema = conn.execute("SELECT current_schema()").fetchone()
            assert schema is not None and schema[0].startswith("run_")
            conn.execute("CREATE TABLE gatehouse_sessions_v1 (id text)")
    finally:
        bench.run_cleanups()
    with psycopg.connect(url, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema[0],)
        ).fetchone()
    assert left == (0,)
    assert bench.CLEANUPS == []


def test_schemas_of_killed_runs_are_dropped_by_the_next_run(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed before its clean-up leaves its schema; the next run drops it, and
    never the schema of a run that is still going."""
    server = os.environ.get("GATEHOUSE_TEST_POSTGRES_URL", bench.POSTGRES_URL)
    monkeypatch.setattr(bench, "POSTGRES_URL", server)
    url = bench.postgres_bench_url()  # makes the database; this run's schema
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = f"run_{gone.stdout.strip()}_1"
    alive = f"run_{os.getpid()}_1"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for name in (orphan, alive):
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
            conn.execute(f"CREATE TABLE {orphan}.gatehouse_sessions_v1 (id text)")
            dropped = bench.drop_orphan_schemas(conn)
            left = {
                row[0]
                for row in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname IN (%s, %s)", (orphan, alive)
                )
            }
        assert orphan in dropped
        assert left == {alive}
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {alive} CASCADE")
        bench.run_cleanups()
