"""The loader as a generator (a reload sliced on the event loop) reads, parses and digests
a config exactly as the one-go load does, whatever falls on a pause."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gatehouse.config import loader
from gatehouse.config.loader import load_file, load_file_steps, load_text
from gatehouse.errors import ConfigError
from gatehouse.timeslice import drive


def _config(routes: int) -> str:
    lines = ["insecure_server: true", "routes:"]
    for i in range(routes):
        # Non-ASCII text in every route: some UTF-8 sequence straddles a read chunk.
        lines += [
            f"  - from: http://h{i}.example.test",
            "    response: {status: 200, body: 'héllo wörld 漢字'}",
            "    allow_public_unauthenticated_access: true",
        ]
    return "\n".join(lines) + "\n"


def test_a_file_read_in_parts_loads_as_its_text(tmp_path: Path) -> None:
    text = _config(3000)
    assert len(text.encode()) > 2 * loader.READ_BYTES_PER_STEP
    path = tmp_path / "gatehouse.yaml"
    path.write_bytes(text.replace("\n", "\r\n").encode())  # CRLF: text mode's newlines
    from_file = drive(load_file_steps(path, env={}))
    from_text = load_text(text, str(path), env={})
    assert from_file.digest == from_text.digest == hashlib.sha256(text.encode()).hexdigest()
    assert from_file.options.routes[2999].response is not None
    assert from_file.options.routes[2999].response.body == "héllo wörld 漢字"
    assert from_file.options == load_file(path, env={}).options


def test_an_invalid_utf8_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "gatehouse.yaml"
    path.write_bytes(_config(10).encode() + b"# \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_file(path, env={})
    assert str(path) in caught.value.problems[0]
    assert "cannot read" in caught.value.problems[0]
