"""PEP 517 build backend: setuptools, plus what the mypyc compile needs to type-check.

mypyc type-checks the modules it compiles (``setup.py``), and those import the runtime
dependencies (``cryptography``, ``httpx``, ``pydantic`` …). pip builds in an isolated
environment that holds only the build requirements, so a compiling build asks for mypy,
the stubs it needs and the project's own ``dependencies``, read from ``pyproject.toml`` so
that the two lists cannot drift. A build that will not compile (no C compiler, or
``GATEHOUSE_PURE_PYTHON=1``) asks for none of them.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

from setuptools.build_meta import (  # noqa: F401  (re-exported hooks)
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

#: What the type-check of the compiled modules needs beyond the runtime dependencies.
COMPILE_REQUIRES = ["mypy>=1.10", "types-PyYAML"]


def will_compile() -> bool:
    """Whether this build compiles the request path: a C compiler, and not opted out."""
    if os.environ.get("GATEHOUSE_PURE_PYTHON", "") not in ("", "0"):
        return False
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    return bool(cc) and shutil.which(cc[0]) is not None


def compile_requires() -> list[str]:
    """mypy, its stubs, and the runtime dependencies that the compiled modules import."""
    pyproject = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text())
    return [*COMPILE_REQUIRES, *pyproject["project"]["dependencies"]]


# setuptools' own hooks would run setup.py to find ``setup_requires`` (we have none), and
# setup.py imports mypyc, which is what these hooks are about to ask for.
def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return compile_requires() if will_compile() else []


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*get_requires_for_build_wheel(config_settings), "wheel"]
