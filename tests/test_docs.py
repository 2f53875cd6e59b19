"""The docs say what the code does.

README.md, docs/*.md, bench/README.md and examples/grafana/README.md are read as a user
reads them (fenced blocks and inline code) and checked against the code:

- every ``gatehouse …`` and ``python bench/….py …`` command shown parses: ``--help`` on
  its subcommand exits 0 and every flag shown is one the command has;
- every YAML block is a config that loads (or a PPL policy that compiles), and every
  config key or environment variable named inline is one the options model has;
- every file path and test named exists, and every relative link and anchor resolves;
- the Quick-start test command is what CI runs, and the README's account of
  ``./scripts/test`` matches the script;
- bench/README.md lists the benchmark's scenarios with their targets.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from pydantic import BaseModel

from gatehouse.authorize.criteria import CRITERIA, UNSUPPORTED
from gatehouse.authorize.policy import compile_policy_data
from gatehouse.authorize.ppl import OPERATORS
from gatehouse.config import load_text
from gatehouse.config.auth import IdpUser
from gatehouse.config.identity import SigningKeyEntry
from gatehouse.config.mtls import ENFORCEMENT_MODES, SAN_TYPES, DownstreamMTLS
from gatehouse.config.options import IGNORED_POMERIUM_KEYS, Options
from gatehouse.config.pomerium_keys import (
    ALWAYS_ON,
    IGNORED,
    NOT_SUPPORTED,
    ONLY_VALUE,
    ROUTE_IGNORED,
    ROUTE_NOT_SUPPORTED,
)
from gatehouse.config.rewrites import RewriteHeader
from gatehouse.config.routes import DirectResponse, RedirectAction, RouteOptions
from gatehouse.config.server import CertificatePair
from gatehouse.config.sub_policies import SubPolicy
from gatehouse.config.upstream_health import (
    GrpcHealthCheck,
    HealthCheck,
    HttpHealthCheck,
    LeastRequestConfig,
    MaglevConfig,
    OutlierDetection,
    RingHashConfig,
    StatusRange,
)
from support.gatehouse import clean_env

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [
        REPO / "README.md",
        REPO / "bench" / "README.md",
        REPO / "examples" / "grafana" / "README.md",
        *(REPO / "docs").glob("*.md"),
    ]
)
DOC_IDS = [str(d.relative_to(REPO)) for d in DOCS]


def _name(doc: Path) -> str:
    return str(doc.relative_to(REPO))


_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FLAG = re.compile(r"(?<![\w/.=-])(--?[A-Za-z][\w-]*)")


# -- reading Markdown ---------------------------------------------------------------------


def blocks(doc: Path) -> list[tuple[str, str]]:
    """The fenced code blocks of ``doc``: (language, body)."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(doc.read_text())]


def inline_code(doc: Path) -> list[str]:
    """The inline code spans of ``doc`` (outside fenced blocks), whitespace collapsed and
    table-escaped pipes restored."""
    prose = _FENCE.sub("", doc.read_text())
    return [" ".join(m.group(2).replace("\\|", "|").split()) for m in _INLINE.finditer(prose)]


def command_lines(doc: Path) -> list[str]:
    """Every line of code a reader might type: block lines (``\\`` continuations joined)
    and inline spans."""
    lines: list[str] = []
    for _, body in blocks(doc):
        lines += [line.split(" #")[0] for line in body.replace("\\\n", " ").splitlines()]
    return lines + inline_code(doc)


def _commands(doc: Path, program: str) -> list[tuple[str, list[str]]]:
    """(subcommand, flags) for every ``program SUB …`` in ``doc``'s code."""
    # At the start of a command: of the line, after a pipe, `&&`, `;`, `(` or `--rm `.
    start = r"(?:^\s*|[|&;(]\s*|--rm\s+)"
    pattern = re.compile(start + re.escape(program) + r" ((?:--?)?[\w./-]+)(.*)")
    found = []
    for line in command_lines(doc):
        for m in pattern.finditer(line):
            rest = re.split(r"\s#|\||&&|;|\)", m.group(2))[0]
            found.append((m.group(1), _FLAG.findall(rest)))
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_\[\]()]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    prose = _FENCE.sub("", doc.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", prose, re.MULTILINE)}


# -- what the code has --------------------------------------------------------------------


@functools.cache
def help_flags(*argv: str) -> frozenset[str]:
    """The option strings in ``argv --help``'s output; asserts that it exits 0."""
    proc = subprocess.run(
        [sys.executable, *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, f"{' '.join(argv)} --help: {proc.stderr}"
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", proc.stdout))


def _model_keys(*models: type[BaseModel]) -> set[str]:
    return {f.alias or name for model in models for name, f in model.model_fields.items()}


#: Pomerium keys gatehouse ignores or refuses, by name (config/pomerium_keys.py).
POMERIUM_ONLY_KEYS = {
    **IGNORED,
    **ROUTE_IGNORED,
    **NOT_SUPPORTED,
    **ROUTE_NOT_SUPPORTED,
    **ALWAYS_ON,
    **ONLY_VALUE,
}
#: Keys a config may hold at any depth: every options model's, and PPL's vocabulary.
CONFIG_KEYS = (
    _model_keys(
        Options,
        RouteOptions,
        RedirectAction,
        DirectResponse,
        IdpUser,
        CertificatePair,
        SigningKeyEntry,
        SubPolicy,
        RewriteHeader,
        HealthCheck,
        HttpHealthCheck,
        GrpcHealthCheck,
        OutlierDetection,
        LeastRequestConfig,
        RingHashConfig,
        MaglevConfig,
        StatusRange,
        DownstreamMTLS,
    )
    | set(IGNORED_POMERIUM_KEYS)
    | set(POMERIUM_ONLY_KEYS)
)
GLOBAL_KEYS = _model_keys(Options)
PPL_WORDS = {
    "allow", "deny", *OPERATORS, *CRITERIA, *UNSUPPORTED,
    # matchers (docs/policy.md "Matchers") and the schedule criteria's fields
    "is", "not", "starts_with", "ends_with", "contains", "in", "not_in", "has", "exclude",
    "after", "before", "timezone", "days",
    # client_certificate conditions, downstream_mtls enforcement modes and SAN types
    "spki_hash", "san_email", "san_dns", "san_uri", *ENFORCEMENT_MODES, *SAN_TYPES,
}  # fmt: skip


# -- commands -----------------------------------------------------------------------------


def _gatehouse_commands() -> list[tuple[str, str, list[str]]]:
    return [(d.name, sub, flags) for d in DOCS for sub, flags in _commands(d, "gatehouse")]


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_gatehouse_command_shown_parses(doc: Path) -> None:
    """``gatehouse SUB --help`` exits 0 for every SUB shown, and has every flag shown."""
    for sub, flags in _commands(doc, "gatehouse"):
        argv = ("-m", "gatehouse") if sub.startswith("-") else ("-m", "gatehouse", sub)
        known = help_flags(*argv)
        missing = [f for f in [*([sub] if sub.startswith("-") else []), *flags] if f not in known]
        assert not missing, f"{_name(doc)}: gatehouse {sub}: no such flag {missing}"


def test_the_docs_show_every_subcommand() -> None:
    """The command extraction finds what it should (so the test above is not vacuous)."""
    shown = {sub for _, sub, _ in _gatehouse_commands()}
    assert {"run", "check", "check-policy", "keygen", "hash-password", "verify-app"} <= shown
    flags = {f for _, sub, fl in _gatehouse_commands() if sub == "check-policy" for f in fl}
    assert {"-c", "--url", "--email", "--groups"} <= flags


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_bench_command_shown_parses(doc: Path) -> None:
    for sub, flags in _commands(doc, "python"):
        if not sub.startswith("bench/"):
            continue
        assert (REPO / sub).is_file(), f"{_name(doc)}: {sub} does not exist"
        known = help_flags(sub)
        missing = [f for f in flags if f not in known]
        assert not missing, f"{_name(doc)}: python {sub}: no such flag {missing}"


# -- configuration ------------------------------------------------------------------------


def _policy_blocks(body: str) -> list[str]:
    """A PPL example, with a placeholder operator replaced by each real one."""
    if "OPERATOR" in body:
        return [body.replace("OPERATOR", op) for op in OPERATORS]
    return [body]


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_yaml_block_is_a_valid_config_or_policy(doc: Path) -> None:
    """A block of rules compiles as a policy; any other block loads as a config, without
    warnings (``insecure_server: true`` is added to fragments that say nothing of TLS)."""
    for lang, body in blocks(doc):
        if lang not in ("yaml", "yml"):
            continue
        data = yaml.safe_load(body)
        rules = isinstance(data, list) or (
            isinstance(data, dict) and set(data) <= {"allow", "deny"}
        )
        if rules:
            for text in _policy_blocks(body):
                compile_policy_data(yaml.safe_load(text), f"{_name(doc)} example")
            continue
        if not any(k in data for k in ("insecure_server", "certificate_file", "certificates")):
            body = "insecure_server: true\n" + body
        loaded = load_text(body, f"{_name(doc)} example", env={})
        assert loaded.warnings == (), f"{_name(doc)}: {loaded.warnings}"


def _inline_keys(doc: Path) -> list[str]:
    """Keys of inline ``key: value`` spans."""
    keys = []
    for span in inline_code(doc):
        m = re.match(r"^([a-z][\w/]*): \S", span)
        if m and not span.startswith(("http:", "https:")):
            keys.append(m.group(1))
    return keys


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_config_key_named_exists(doc: Path) -> None:
    """``key: value`` spans and bare snake_case spans that read as config keys name keys
    the options model has (or PPL words, in policy examples)."""
    unknown = [
        k
        for k in _inline_keys(doc)
        if k not in CONFIG_KEYS and k not in PPL_WORDS and not k.startswith("claim/")
    ]
    for span in inline_code(doc):
        if span.startswith(("gatehouse_", "test_")):  # metric names; tests are checked below
            continue
        if re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+", span) and span not in CONFIG_KEYS:
            if span not in PPL_WORDS and span not in NOT_CONFIG_KEYS:
                unknown.append(span)
    assert not unknown, f"{_name(doc)}: not an option: {sorted(set(unknown))}"


#: snake_case names the docs use that are not config keys: log and JSON field names,
#: metric labels, Python names. A config key renamed out of the model lands here only
#: on purpose.
NOT_CONFIG_KEYS = {
    # access/process log fields (docs/operations.md "Logs")
    "bytes_in", "duration_ms", "upstream_ms", "connections_cut", "worker_pid",
    # the "config reloaded" line's fields (docs/operations.md "Reload and graceful drain")
    "longest_slice_ms", "collect_ms", "freeze_ms", "release_s", "load_s", "build_s",
    # metric labels and operations (docs/operations.md "Metrics")
    "session_store", "consume_once", "acquire_lock", "release_lock", "catch_up",
    # bench/README.md: JSON fields and Python names
    "peak_rss_kib", "access_log_statuses", "gatehouse_exit_status",
    "gatehouse_stderr_problems", "upstream_alone_rps", "targets_met",
    # bench/README.md: PostgreSQL names (the postgres scenario's own schema)
    "search_path", "pg_stat_database",
    # OpenID and JWT claim names
    "email_verified", "family_name", "preferred_username", "access_type",
    "offline_access", "end_session_endpoint",
    # the programmatic-login query parameter
    "pomerium_jwt",
    # values of bearer_token_format
    "idp_identity_token", "idp_access_token",
}  # fmt: skip


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_environment_override_named_is_a_global_key(doc: Path) -> None:
    """Upper-case spans that are not Grafana's, gatehouse's own build switches or wire
    constants name a global key (the environment override of it)."""
    own = {"GATEHOUSE_PURE_PYTHON", "GATEHOUSE_TEST_VENV", "GATEHOUSE_BENCH_POSTGRES_URL"}
    wrong = []
    for span in inline_code(doc):
        name = span.lstrip("$").split("=")[0]
        if not re.fullmatch(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|ADDRESS", name):
            continue
        if name.startswith("GF_") or name in own or name in NOT_ENV_NAMES:
            continue
        if name.lower() not in GLOBAL_KEYS:
            wrong.append(name)
    assert not wrong, f"{_name(doc)}: not an environment override: {wrong}"


#: Upper-case names the docs use that are not gatehouse settings.
NOT_ENV_NAMES = {"REJECT_REQUEST", "DROP_HEADER", "CACHE_TTL", "SHUTDOWN_SAVE"}
#: load_balancing_policy values (Envoy's enum names).
NOT_ENV_NAMES |= {"ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "XX_HASH"}
#: HTTP/2 error codes (RFC 9113 §7).
NOT_ENV_NAMES |= {"REFUSED_STREAM"}


def test_quirk_names_are_not_mistaken_for_keys() -> None:
    """The extraction sees the keys it should (so the tests above are not vacuous)."""
    policy_doc = REPO / "docs" / "policy.md"
    assert "allow_path_parameters" in _inline_keys(policy_doc)
    readme_spans = inline_code(REPO / "README.md")
    assert "ADDRESS" in readme_spans and "DATA_DIR" in " ".join(readme_spans)


# -- paths, tests and links ---------------------------------------------------------------

_TOP_DIRS = ("src/", "tests/", "bench/", "docs/", "examples/", "scripts/", ".ci/")
_PATHLIKE = re.compile(r"[\w.\-/]+\.(?:py|md|yaml|yml|toml|in|json|html|sh)|[\w.\-/]+/")


def _named_paths(doc: Path) -> list[str]:
    spans = [s for s in inline_code(doc) if " " not in s]
    return [s for s in spans if _PATHLIKE.fullmatch(s) and not s.startswith("/")]


def _exists(name: str, doc: Path) -> bool:
    if any((base / name).exists() for base in (REPO, doc.parent, REPO / "src" / "gatehouse")):
        return True
    if re.fullmatch(r"\w+\.py", name) and any((REPO / "src" / "gatehouse").glob(f"**/{name}")):
        return True  # a module named in the text about its package
    if name.startswith(".cache/"):  # made by scripts/test, named in the script that makes it
        return name.rstrip("/") in (REPO / "scripts" / "build_wheel.py").read_text()
    if re.fullmatch(r"test_\w+\.py", name):  # a test file named without its directory
        return any(REPO.glob(f"tests/**/{name}"))
    return False


#: Paths the docs name that are the reader's own files (examples of arguments).
READERS_FILES = {"config.yaml", "results.json", "soak.json"}


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_file_named_exists(doc: Path) -> None:
    missing = [
        p
        for p in _named_paths(doc)
        if p not in READERS_FILES
        and (p.startswith(_TOP_DIRS) or "/" not in p.rstrip("/") or p.endswith(".py"))
        and not _exists(p, doc)
    ]
    assert not missing, f"{_name(doc)} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_test_named_exists(doc: Path) -> None:
    """``test_…`` names in the docs (docs/operations.md cites its tests) are real tests."""
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    missing = [
        s
        for s in inline_code(doc)
        if re.fullmatch(r"test_\w+", s) and not re.search(rf"def {s}\(", sources)
    ]
    assert not missing, f"{_name(doc)} names tests that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in _LINK.findall(_FENCE.sub("", doc.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{_name(doc)}: broken links {broken}"


# -- the install and test flow ------------------------------------------------------------


def _section(doc: Path, title: str) -> str:
    text = doc.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _shell_commands(text: str) -> list[str]:
    lines = [line.split(" #")[0].strip() for line in text.splitlines()]
    return [
        line
        for line in lines
        if line and not line.startswith(("#", "set ", "cd ")) and not line.startswith("#!")
    ]


def test_quick_start_runs_the_tests_as_ci_does() -> None:
    """The Quick-start block's test command is the one command CI runs."""
    quick = _section(REPO / "README.md", "Quick start")
    body = next(b for lang, b in _FENCE.findall(quick) if lang == "sh")
    shown = [c for c in _shell_commands(body) if "test" in c]
    ci = _shell_commands((REPO / ".ci" / "run").read_text())
    assert ci == ["exec ./scripts/test"], ci
    assert shown == ["./scripts/test"], shown


def test_readme_describes_what_scripts_test_does() -> None:
    readme = (REPO / "README.md").read_text()
    script = (REPO / "scripts" / "test").read_text()
    packages = re.findall(r"^need \S+ (\S+)|apt_install (\S+)$", script, re.MULTILINE)
    packages = [a or b for a, b in packages]
    assert "gcc" in packages and "chromium" in packages
    missing = [p for p in packages if f"`{p}`" not in readme]
    assert not missing, f"README.md does not name what scripts/test installs: {missing}"
    venv = re.search(r'VENV="\$\{(\w+):-([^}]+)\}"', script)
    assert venv, "scripts/test names its virtual environment"
    assert f"`${venv.group(1)}`" in readme and f"`{venv.group(2)}`" in readme
    assert "127.0.0.1 --port 6379" in script and "127.0.0.1:6379" in readme
    assert "scripts/build_wheel.py" in script and "`scripts/build_wheel.py`" in readme
    assert "[test]" in script and "`test` extras" in readme
    assert "npm ci" in script and "`npm ci`" in readme


# -- bench/README.md ----------------------------------------------------------------------


def _load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_bench_readme_lists_every_scenario_with_its_target() -> None:
    scenarios = _load_bench("proxy_bench").SCENARIOS
    text = (REPO / "bench" / "README.md").read_text()
    part = text[text.index("### Scenarios") :]
    part = part[: part.index("\n### ", 1)]
    bullets = re.findall(r"^- `([\w-]+)`(.*?)(?=^- |^\n|\Z)", part, re.MULTILINE | re.DOTALL)
    assert {name for name, _ in bullets} == set(scenarios)
    for name, bullet in bullets:
        target = re.search("≥ (\\d\\.\\d+)\N{MULTIPLICATION SIGN}", bullet)
        assert target, f"bench/README.md: no target for {name}"
        assert float(target.group(1)) == scenarios[name].target_ratio, name


# -- docs/policy.md "Paths" ---------------------------------------------------------------


def _paths_bullets() -> list[str]:
    section = _section(REPO / "docs" / "policy.md", "Paths")
    return [" ".join(b.split()) for b in re.split(r"\n- ", section)[1:]]


def _as_path(span: str) -> str:
    return span if span.startswith("/") else f"/a/{span}/b"


def test_policy_doc_path_examples_hold() -> None:
    """Every ``A`` → ``B`` example of the Paths section is what normalisation does."""
    from gatehouse.proxy.paths import normalize_request_path

    pairs = 0
    for bullet in _paths_bullets():
        for group, expected in re.findall(r"((?:`[^`]+`(?:, )?)+) → `([^`]+)`", bullet):
            for given in re.findall(r"`([^`]+)`", group):
                want = expected if expected.startswith("/") else f"/{expected}"
                path = given if given.startswith("/") else f"/{given}"
                assert normalize_request_path(path) == want, (given, expected)
                pairs += 1
    assert pairs >= 5


def test_policy_doc_refused_paths_are_refused() -> None:
    """Every example in a "refused with 400" bullet gets InvalidPath; ``;`` parameters are
    accepted, literally, only with ``allow_path_parameters``, except the dot-like segments."""
    from gatehouse.errors import InvalidPath
    from gatehouse.proxy.paths import normalize_request_path

    refused = [b for b in _paths_bullets() if "refused with 400" in b]
    examples = [s for b in refused for s in re.findall(r"`([^`]+)`", b) if re.search(r"[%\\;]", s)]
    assert "/admin;x=1" in examples and "%2F" in examples
    for span in examples:
        with pytest.raises(InvalidPath):
            normalize_request_path(_as_path(span))
    assert normalize_request_path("/admin;x=1", allow_parameters=True) == "/admin;x=1"
    for segment in ("..;x", ".;x", ";x"):
        assert f"`{segment}`" in " ".join(refused)
        with pytest.raises(InvalidPath):
            normalize_request_path(_as_path(segment), allow_parameters=True)


# -- docs/policy.md "Operators" -----------------------------------------------------------


def test_policy_doc_operator_table_is_what_policies_decide() -> None:
    """The and/or/not/nor table: each user's outcome is what check-policy decides."""
    from gatehouse.authorize.decision import Outcome
    from gatehouse.authorize.dryrun import check_policy

    text = (REPO / "docs" / "policy.md").read_text()
    example = re.search(r"```yaml\n(allow:\n  OPERATOR:\n.*?)```", text, re.DOTALL)
    table = re.search(
        r"^\| user \| `and` \| `or` \| `not` \| `nor` \|\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M
    )
    assert example and table
    rows = [
        [c.strip(" *`") for c in line.strip("|").split("|")] for line in table.group(1).splitlines()
    ]
    assert len(rows) == 3
    for op_index, op in enumerate(("and", "or", "not", "nor"), start=1):
        rule = yaml.safe_load(example.group(1).replace("OPERATOR", op))
        config = yaml.safe_dump(
            {"insecure_server": True, "routes": [{"from": "http://app.example.com",
             "to": "http://127.0.0.1:1", "policy": [rule]}]}
        )  # fmt: skip
        options = load_text(config, "policy.md example", env={}).options
        for row in rows:
            email, _, groups_text = row[0].partition(", ")
            groups = [] if groups_text == "no groups" else [groups_text.removeprefix("in ")]
            decision, _ = check_policy(
                options, "http://app.example.com/", email=email, groups=groups
            )
            want = {"allow": Outcome.ALLOW, "deny": Outcome.DENY}[row[op_index]]
            assert decision.outcome == want, (op, row[0])


# -- docs/operations.md "Metrics" and docs/policy.md "Criteria" ---------------------------


def _table_rows(text: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with ``header``."""
    start = text.index(header)
    lines = text[start:].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
    return rows


def test_operations_doc_lists_every_metric_with_its_type_and_labels() -> None:
    source = (REPO / "src" / "gatehouse" / "observability" / "metrics.py").read_text()
    defined = {
        name: (kind.lower(), re.findall(r'"(\w+)"', labels or ""))
        for kind, name, labels in re.findall(
            r'(Counter|Histogram|Gauge)\(\s*"(gatehouse_\w+)",\s*"[^"]*",\s*(?:\[([^\]]*)\])?',
            source,
        )
    }
    assert len(defined) >= 10
    documented = {}
    text = (REPO / "docs" / "operations.md").read_text()
    for metric, kind, labels, _ in _table_rows(text, "| metric | type | labels | meaning |"):
        names = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", labels))
        documented[metric.strip("`")] = (kind, names)
    assert documented == defined


def test_policy_doc_lists_every_criterion() -> None:
    text = (REPO / "docs" / "policy.md").read_text()
    rows = _table_rows(text, "| criterion | value | matches when |")
    documented = {row[0].strip("`").split("/")[0] for row in rows}
    assert documented == set(CRITERIA)


# -- Python names -------------------------------------------------------------------------


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and get the rest as attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_python_name_shown_exists(doc: Path) -> None:
    """``from gatehouse… import X`` in examples and dotted ``gatehouse.…`` names inline."""
    names = [
        s
        for s in inline_code(doc)
        if re.fullmatch(r"gatehouse(?:\.\w+)+", s) and not _PATHLIKE.fullmatch(s)
    ]
    for lang, body in blocks(doc):
        if lang == "python":
            for module, imported in re.findall(r"^from (gatehouse[\w.]*) import (.+)$", body, re.M):
                names += [f"{module}.{n.strip()}" for n in imported.split(",")]
    for name in names:
        _resolve(name)
