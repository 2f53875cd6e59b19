"""The loader builds a config's data straight from YAML events: the same data as the
YAML library's own safe loader, for every example config and the YAML forms configs use."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatehouse.config.loader import _parse_yaml, load_text
from gatehouse.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))

FORMS = [
    "a: 1\nb: 1.5\nc: true\nd: ~\ne: 2001-01-02\nf: 0x10\ng: '1'\nh: \"x\\ty\"\n",
    "list: [1, two, {three: 3}]\nnested: {a: {b: [x, {c: d}]}}\nempty: {}\nnone: []\n",
    "x: &anchor {k: [1, 2]}\ny: *anchor\ns: &s text\nt: *s\n",
    "block: |\n  line one\n  line two\nfolded: >\n  a\n  b\ntagged: !!str 10\n",
    "routes:\n  - from: https://a.example.com\n    to: [http://b:1, http://c:2]\n",
    # Merge keys (YAML 1.1, as Pomerium's Go YAML reads them): written keys win, then
    # earlier merged mappings over later ones; merged values are copies.
    "d: &d {to: http://b:1, pass_identity_headers: true}\n"
    "routes:\n  - <<: *d\n    from: https://a.example.com\n"
    "  - from: https://c.example.com\n    <<: *d\n    to: http://c:2\n",
    "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n",
    "a: &a {x: {deep: [1]}}\nb:\n  <<: *a\nc:\n  <<: {inline: yes}\n  k: v\n",
]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_parse_as_the_yaml_library_does(path: Path) -> None:
    text = path.read_text()
    expected = yaml.safe_load(text)
    if not isinstance(expected, dict):
        pytest.skip("not a config mapping")
    assert _parse_yaml(text, str(path))[0] == expected


@pytest.mark.parametrize("text", FORMS)
def test_yaml_forms_parse_as_the_yaml_library_does(text: str) -> None:
    data = _parse_yaml(text, "<t>")[0]
    assert data == yaml.safe_load(text)
    if "anchor" in text:  # an alias is a copy: editing one place leaves the other alone
        assert data["x"] is not data["y"]
    if "deep" in text:  # so is a merged value
        assert data["b"]["x"] is not data["a"]["x"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: 1\nb: 2\na: 3\n", "line 3: key 'a' appears twice"),
        ("base: &b [1]\nother:\n  <<: *b\n", "<t>:3: invalid YAML: a merge key (<<) takes"),
        ("other:\n  <<: text\n", "<t>:2: invalid YAML: a merge key (<<) takes a mapping"),
        ("list: [<<]\n", "<t>:1: invalid YAML: << is only a mapping's key"),
        ("a: *nowhere\n", "<t>:1: invalid YAML: undefined alias 'nowhere'"),
        ("a: [1, 2\n", "<t>:2: invalid YAML: did not find expected ',' or ']'"),
        ("a: 1\n---\nb: 2\n", "<t>:2: invalid YAML: expected a single document"),
        ("- just\n- a list\n", "<t>:1: the config must be a mapping of keys to values"),
    ],
)
def test_bad_yaml_is_one_located_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(text, "<t>", env={})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(problem), caught.value.problems


def test_problems_found_after_a_clean_parse_still_get_their_line() -> None:
    text = "insecure_server: true\nroutes:\n  - from: http://a.example.com\n    to: nope\n"
    with pytest.raises(ConfigError) as caught:
        load_text(text, "<t>", env={})
    assert caught.value.problems[0].startswith("<t>:4: routes[0].to"), caught.value.problems


def test_routes_built_from_merge_keys_load() -> None:
    """A Pomerium config sharing one route's settings with another through an anchor and
    ``<<`` loads: each route has the shared settings and its own overrides."""
    text = (
        "insecure_server: true\n"
        "routes:\n"
        "  - &first\n    from: http://a.example.com\n    to: http://127.0.0.1:9\n"
        "    allow_public_unauthenticated_access: true\n"
        "  - <<: *first\n    from: http://b.example.com\n    to: http://127.0.0.1:10\n"
    )
    routes = load_text(text, "<t>", env={}).options.routes
    assert [r.from_ for r in routes] == ["http://a.example.com", "http://b.example.com"]
    assert all(r.allow_public_unauthenticated_access for r in routes)
    assert [[t.url for t in r.to] for r in routes] == [
        ["http://127.0.0.1:9"],
        ["http://127.0.0.1:10"],
    ]


def test_repeated_scalars_keep_their_types() -> None:
    """Scalars are resolved and constructed once per distinct text: every repeat still
    gets its own type (``true`` a bool, ``'true'`` a string, ``1`` an int, ``1.0`` a
    float), compared by repr, where ``1 == True == 1.0`` would hide a mix-up."""
    values = "[true, 'true', yes, 1, '1', 1.0, ~, null, '', 0x10, 16, 2001-01-02, '2001-01-02']"
    text = "".join(f"k{i}: {values}\n" for i in range(3)) + "routes:\n"
    text += "".join(f"  - {{from: 'http://h{i}', to: 'http://b:1', x: 1}}\n" for i in range(3))
    assert repr(_parse_yaml(text, "<test>")[0]) == repr(yaml.safe_load(text))
