"""``pip install .`` on a fresh machine: the wheel builds from a clean copy of the tree in
pip's isolated build environment (nothing from the machine's own site-packages), compiled
with mypyc where there is a C compiler, pure Python with a warning where there is none."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _build_wheel_module() -> ModuleType:
    path = REPO / "scripts" / "build_wheel.py"
    spec = importlib.util.spec_from_file_location("build_wheel", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compiled_modules() -> list[str]:
    text = (REPO / "setup.py").read_text()
    return re.findall(r'"src/(gatehouse/[\w/]+)\.py"', text)


def _build(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Build like a user's ``pip wheel .``: a clean copy, an isolated build environment."""
    build_wheel = _build_wheel_module()
    copy = build_wheel.clean_copy(out / "tree")
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--disable-pip-version-check",
         "-w", str(out / "dist"), str(copy)],
        capture_output=True, text=True, timeout=600, env=env,
    )


def _import_from(target: Path) -> str:
    """What the wheel installed into ``target`` says about itself (``--version``)."""
    result = subprocess.run(
        [sys.executable, "-c",
         "import gatehouse, gatehouse.http.server as s, sys; "
         "print(gatehouse.__file__); print(s.__file__); "
         "from gatehouse.cli import main; sys.exit(main(['--version']))"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _install(wheel: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", "--target", str(target), str(wheel)],
        check=True, timeout=120,
    )


def test_the_build_copies_only_what_it_reads(tmp_path: Path) -> None:
    """No stale ``.so``, ``build/`` or egg-info of an in-place build reaches the wheel."""
    build_wheel = _build_wheel_module()
    files = {str(p) for p in build_wheel.source_files()}
    assert {"pyproject.toml", "setup.py", "build_backend.py"} <= files
    assert "src/gatehouse/http/server.py" in files
    assert not [f for f in files if f.endswith((".so", ".pyc")) or "egg-info" in f]


@pytest.mark.skipif(
    os.environ.get("GATEHOUSE_PURE_PYTHON", "") not in ("", "0"),
    reason="GATEHOUSE_PURE_PYTHON=1 asks for the pure-Python build",
)
@pytest.mark.timeout(900)  # the compile takes a minute or two, more on a busy machine
def test_wheel_builds_in_isolation_and_is_compiled(tmp_path: Path) -> None:
    result = _build(tmp_path, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (wheel,) = (tmp_path / "dist").glob("gatehouse-*.whl")
    assert "-cp311-" in wheel.name or "-cp3" in wheel.name  # a platform wheel
    names = zipfile.ZipFile(wheel).namelist()
    for module in _compiled_modules():
        assert any(n.startswith(module) and n.endswith(".so") for n in names), module
    target = tmp_path / "site"
    _install(wheel, target)
    out = _import_from(target)
    assert str(target) in out.splitlines()[0]
    assert out.splitlines()[1].endswith(".so")
    assert "(compiled)" in out


def test_without_a_compiler_the_build_is_pure_python_with_a_warning(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GATEHOUSE_PURE_PYTHON")}
    env["CC"] = str(tmp_path / "no-such-compiler")
    result = _build(tmp_path, env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "no C compiler found" in result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("gatehouse-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    target = tmp_path / "site"
    _install(wheel, target)
    assert "(pure Python)" in _import_from(target)
