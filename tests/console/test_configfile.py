"""The console's file editing without a server: round trips, quoting, atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from gatehouse.config import load_text
from gatehouse.console.configfile import ConfigDocument, ConfigFileError, read_only_reason
from gatehouse.console.forms import apply_form, form_values, plain

INDENTED = """\
# top comment
insecure_server: true
routes:
  # first route
  - from: http://a.localhost   # inline comment
    to: "http://127.0.0.1:1"
    policy:
      - allow:
          or:
            - email: {is: a@example.com}   # alice
  - from: http://b.localhost
    to: [http://127.0.0.1:2, 'http://127.0.0.1:3']
policy:
  - from: http://legacy.localhost
    to: http://127.0.0.1:4
"""

FLUSH = yaml.safe_dump(
    {
        "insecure_server": True,
        "routes": [{"from": "http://a.localhost", "to": "http://127.0.0.1:1", "name": "x"}],
    },
    sort_keys=False,
)


def _doc(tmp_path: Path, text: str) -> ConfigDocument:
    path = tmp_path / "gatehouse.yaml"
    path.write_text(text)
    return ConfigDocument.read(path)


@pytest.mark.parametrize("text", [INDENTED, FLUSH], ids=["indented", "flush"])
def test_an_unchanged_form_leaves_the_file_byte_for_byte(tmp_path: Path, text: str) -> None:
    doc = _doc(tmp_path, text)
    for index in range(len(doc.route_slots())):
        route = doc.route(index)
        current = form_values(route, doc.data)
        assert apply_form(route, doc.data, dict(current), current) == {}
    assert doc.dump() == text


def test_one_changed_field_changes_one_line(tmp_path: Path) -> None:
    doc = _doc(tmp_path, INDENTED)
    route = doc.route(1)
    current = form_values(route, doc.data)
    assert current["to"] == "http://127.0.0.1:2\nhttp://127.0.0.1:3"
    submitted = {**current, "to": "http://127.0.0.1:2\nhttp://127.0.0.1:9"}
    assert apply_form(route, doc.data, submitted, current) == {}
    old, new = INDENTED.splitlines(), doc.dump().splitlines()
    assert len(old) == len(new)
    assert [(a, b) for a, b in zip(old, new, strict=True) if a != b] == [
        (
            "    to: [http://127.0.0.1:2, 'http://127.0.0.1:3']",
            "    to: [http://127.0.0.1:2, http://127.0.0.1:9]",
        )
    ]


def test_legacy_policy_routes_come_after_routes(tmp_path: Path) -> None:
    doc = _doc(tmp_path, INDENTED)
    assert doc.route_slots() == [("routes", 0), ("routes", 1), ("policy", 0)]
    assert doc.route(2)["from"] == "http://legacy.localhost"
    with pytest.raises(IndexError):
        doc.route(3)


@pytest.mark.parametrize("value", ["yes", "on", "No", "1e3", "null", "~", "12", "a: b", "#x"])
def test_form_strings_read_back_as_the_same_string(value: str) -> None:
    from io import StringIO

    from ruamel.yaml import YAML

    out = StringIO()
    YAML().dump({"k": plain(value)}, out)
    assert yaml.safe_load(out.getvalue()) == {"k": value}


def test_header_lines_without_a_colon_are_refused_beside_the_field(tmp_path: Path) -> None:
    doc = _doc(tmp_path, INDENTED)
    route = doc.route(0)
    current = form_values(route, doc.data)
    errors = apply_form(
        route, doc.data, {**current, "set_request_headers": "X-Ok: 1\nnot a header"}, current
    )
    assert errors == {"set_request_headers": ["expected Name: value, got 'not a header'"]}
    assert "set_request_headers" not in route


def test_pass_identity_headers_follows_the_global_default(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "pass_identity_headers: true\n" + INDENTED)
    route = doc.route(0)
    current = form_values(route, doc.data)
    assert current["pass_identity_headers"] == "on"  # inherited
    submitted = {**current, "pass_identity_headers": ""}
    assert apply_form(route, doc.data, submitted, current) == {}
    assert route["pass_identity_headers"] is False  # off must be written
    loaded = load_text(doc.dump())
    assert not loaded.options.route_pass_identity_headers(loaded.options.routes[0])


def test_write_is_atomic_keeps_the_mode_and_refuses_read_only(tmp_path: Path) -> None:
    doc = _doc(tmp_path, INDENTED)
    os.chmod(doc.path, 0o640)
    inode = doc.path.stat().st_ino
    doc.write(INDENTED + "# more\n")
    assert doc.path.read_text().endswith("# more\n")
    assert stat.S_IMODE(doc.path.stat().st_mode) == 0o640
    assert doc.path.stat().st_ino != inode  # replaced, never written in place
    assert [p.name for p in tmp_path.iterdir()] == ["gatehouse.yaml"]  # no temporary left
    os.chmod(doc.path, 0o444)
    assert "read-only (mode 0444)" in (read_only_reason(doc.path) or "")
    with pytest.raises(ConfigFileError, match="read-only"):
        doc.write("insecure_server: true\n")
    assert doc.path.read_text().endswith("# more\n")


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="mapping"):
        _doc(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigFileError, match="invalid YAML"):
        _doc(tmp_path, "a: [\n")


def test_a_write_is_refused_when_the_file_changed_since_it_was_read(tmp_path: Path) -> None:
    from gatehouse.console.configfile import ConfigConflict

    doc = _doc(tmp_path, INDENTED)
    doc.path.write_text(INDENTED + "# someone else\n")
    with pytest.raises(ConfigConflict):
        doc.write_if_unchanged(INDENTED + "# mine\n")
    assert doc.path.read_text().endswith("# someone else\n")
    fresh = ConfigDocument.read(doc.path)
    fresh.write_if_unchanged(fresh.text + "# mine\n")
    assert doc.path.read_text().endswith("# someone else\n# mine\n")
