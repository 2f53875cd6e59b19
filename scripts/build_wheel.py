"""Build gatehouse's wheel the way a user's ``pip install .`` does, cached by its sources.

The wheel is built from a clean copy of the tree (only the files the build reads: no
``.so`` left by an in-place build, no ``build/`` or egg-info) in pip's isolated build
environment, so it needs nothing that the machine happens to have installed. The result
is cached under ``.cache/wheels/<hash>/``, keyed by those files and by the build kind
(compiled or pure Python): an unchanged tree is not compiled twice.

Usage: ``python scripts/build_wheel.py`` prints the wheel's path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Files at the top of the tree that the build reads.
TOP_FILES = ("pyproject.toml", "setup.py", "build_backend.py", "MANIFEST.in", "README.md")
#: Old cache entries kept beside the newest.
KEEP = 3


def source_files(repo: Path = REPO) -> list[Path]:
    """The build's inputs, relative to ``repo``, sorted."""
    files = [Path(name) for name in TOP_FILES if (repo / name).is_file()]
    for path in sorted((repo / "src").rglob("*")):
        rel = path.relative_to(repo)
        if path.is_dir() or "__pycache__" in rel.parts or ".egg-info" in str(rel):
            continue
        if path.suffix in (".so", ".pyc", ".pyd", ".c", ".o"):
            continue
        files.append(rel)
    return files


def build_kind() -> str:
    sys.path.insert(0, str(REPO))
    try:
        from build_backend import will_compile
    finally:
        sys.path.pop(0)
    return "compiled" if will_compile() else "pure"


def source_hash(repo: Path = REPO) -> str:
    digest = hashlib.sha256(build_kind().encode())
    for rel in source_files(repo):
        digest.update(str(rel).encode() + b"\0" + (repo / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def clean_copy(dest: Path, repo: Path = REPO) -> Path:
    """Copy the build's inputs to ``dest`` (a tree as a fresh checkout has it)."""
    for rel in source_files(repo):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest / rel)
    return dest


def build(out_dir: Path, repo: Path = REPO) -> Path:
    """Build the wheel from a clean copy into ``out_dir``; returns its path."""
    with tempfile.TemporaryDirectory(prefix="gatehouse-src-") as tmp:
        tree = clean_copy(Path(tmp) / "gatehouse", repo)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
             "--disable-pip-version-check", "-w", str(out_dir), str(tree)],
            check=True,
        )
    (wheel,) = out_dir.glob("gatehouse-*.whl")
    return wheel


def cached_build(cache: Path = REPO / ".cache" / "wheels") -> Path:
    """The wheel for the current sources: from the cache, or built and cached."""
    entry = cache / source_hash()
    found = sorted(entry.glob("gatehouse-*.whl")) if entry.is_dir() else []
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache))
    wheel = build(partial)
    shutil.rmtree(entry, ignore_errors=True)
    os.replace(partial, entry)
    old = sorted(
        (p for p in cache.iterdir() if p.is_dir() and p != entry),
        key=lambda p: p.stat().st_mtime,
    )
    for stale in old[:-KEEP] if len(old) > KEEP else []:
        shutil.rmtree(stale, ignore_errors=True)
    return entry / wheel.name


if __name__ == "__main__":
    print(cached_build())
