"""``gatehouse check`` finds everything ``gatehouse run`` would refuse, and ``run`` refuses it
once (exit 1, the same messages) instead of restarting workers forever."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support.gatehouse import clean_env, run_cli

#: The README's minimal production config (its secret and key files absent), port 0.
README_PRODUCTION = """\
address: "127.0.0.1:0"
workers: 2
certificate_file: {d}/cert.pem
certificate_key_file: {d}/key.pem
authenticate_service_url: https://authenticate.example.com
idp_provider: oidc
idp_provider_url: https://sso.example.com/realms/staff
idp_client_id: gatehouse
idp_client_secret_file: {d}/idp_client_secret
shared_secret_file: {d}/shared_secret
cookie_secret_file: {d}/cookie_secret
signing_key_file: {d}/signing_key.pem
routes:
  - from: https://grafana.example.com
    to: http://grafana.internal:3000
    pass_identity_headers: true
    policy:
      - allow:
          or:
            - domain: {{is: example.com}}
"""


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


def problems_of(stderr: str, path: Path) -> list[str]:
    """The problem lines ``check`` printed (each starts with the file's path)."""
    return [line for line in stderr.splitlines() if line.startswith(f"{path}")]


def line_numbers(problems: list[str], path: Path) -> list[int]:
    out = []
    for p in problems:
        match = re.match(re.escape(str(path)) + r":(\d+): ", p)
        out.append(int(match.group(1)) if match else 0)
    return out


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_readme_production_config_without_its_files(tmp_path: Path) -> None:
    path = write(tmp_path, README_PRODUCTION.format(d=tmp_path / "secrets"))
    check = cli("check", "-c", str(path))
    assert check.returncode == 1
    problems = problems_of(check.stderr, path)
    # Every missing file, each on its own line, at the line of its key, in file order.
    expected = [
        ("certificate_file", 3),
        ("certificate_key_file", 4),
        ("idp_client_secret_file", 9),
        ("shared_secret_file", 10),
        ("cookie_secret_file", 11),
        ("signing_key_file", 12),
    ]
    found = [p.split(": ")[1] for p in problems]
    assert list(zip(found, line_numbers(problems, path), strict=True)) == expected, check.stderr
    assert all("cannot read" in p for p in problems)
    assert f"{len(problems)} problems in {path}" in check.stderr
    assert "Traceback" not in check.stderr

    # run refuses the same config once, with the same problems, instead of forking
    # workers that crash and restart forever.
    started = time.monotonic()
    run = cli("run", "-c", str(path), timeout=30)
    assert run.returncode == 1
    assert time.monotonic() - started < 20
    for problem in problems:
        assert problem in run.stderr
    assert "worker exited unexpectedly" not in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("config", "key", "line", "words"),
    [
        (
            """\
            insecure_server: true
            authenticate_service_url: https://auth.example.com
            idp_provider: oidc
            idp_provider_url: https://sso.example.com
            routes: []
            """,
            "idp_provider",
            3,
            "idp_client_id is required",
        ),
        (
            """\
            insecure_server: true
            authenticate_service_url: auth.localhost:8080
            idp_provider: builtin
            idp_users:
              - {username: a, password_hash: x, email: a@example.com}
            """,
            "authenticate_service_url",
            2,
            "absolute http:// or https:// URL",
        ),
        (
            """\
            insecure_server: true
            routes:
              - from: http://a.test
                to: http://127.0.0.1:1
                policy:
                  - allow: {or: [{emial: {is: a@example.com}}]}
            """,
            "routes[0].policy[0].allow.or[0].emial",
            6,
            "did you mean 'email'",
        ),
        (
            """\
            insecure_server: true
            signing_key: bm90IGEga2V5
            """,
            "signing_key",
            2,
            "",
        ),
    ],
    ids=["oidc-without-client-id", "url-without-scheme", "policy-error", "bad-signing-key"],
)
def test_check_and_run_agree(
    tmp_path: Path, config: str, key: str, line: int, words: str
) -> None:
    path = write(tmp_path, config)
    check = cli("check", "-c", str(path))
    assert check.returncode == 1, check.stdout
    problems = problems_of(check.stderr, path)
    assert problems, check.stderr
    first = problems[0]
    assert first.startswith(f"{path}:{line}: {key}"), check.stderr
    assert words in first
    assert "Traceback" not in check.stderr
    run = cli("run", "-c", str(path), timeout=30)
    assert run.returncode == 1
    assert first in run.stderr
    assert "Traceback" not in run.stderr


def test_every_policy_error_has_its_own_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        insecure_server: true
        routes:
          - from: http://a.test
            to: http://127.0.0.1:1
            policy:
              - allow: {or: [{emial: {is: a@example.com}}]}
          - from: http://b.test
            to: ftp://nowhere
          - from: http://c.test
            to: http://127.0.0.1:1
            policy:
              - allow: {and: [{groups: {hass: x}}]}
        """,
    )
    check = cli("check", "-c", str(path))
    assert check.returncode == 1
    problems = problems_of(check.stderr, path)
    # The loader stops at the bad upstream URL before compiling policies; the policies are
    # reported once the URL is fixed: each problem on its own line, sorted.
    assert len(problems) >= 1
    assert f"{len(problems)} problem" in check.stderr
    path.write_text(path.read_text().replace("ftp://nowhere", "http://127.0.0.1:1"))
    check = cli("check", "-c", str(path))
    problems = problems_of(check.stderr, path)
    assert [p.split(": ")[1].split(".")[0] for p in problems] == ["routes[0]", "routes[2]"]
    assert line_numbers(problems, path) == sorted(line_numbers(problems, path))
    assert f"{len(problems)} problems in {path}" in check.stderr


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    """A config reason found only inside a worker (here: a state builder that fails there)
    stops the supervisor with that reason instead of a restart loop."""
    path = write(tmp_path, "insecure_server: true\naddress: 127.0.0.1:0\nworkers: 2\nroutes: []\n")
    script = textwrap.dedent(
        f"""
        import sys
        from gatehouse.config.loader import load_file
        from gatehouse.errors import ConfigError
        from gatehouse.proxy.state import build_state
        from gatehouse.serve import run

        def build(loaded, services):
            if services is not None:  # only inside a worker
                raise ConfigError(["signing_key_file: vanished after start"])
            return build_state(loaded, services)

        sys.exit(run({str(path)!r}, load_file({str(path)!r}), build))
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
        env=clean_env(),
    )
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 15
    assert "vanished after start" in result.stderr
    assert "could not start" in result.stderr
    assert "worker exited unexpectedly" not in result.stderr


def test_check_policy_takes_dash_c(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        insecure_server: true
        routes:
          - from: http://app.test
            to: http://127.0.0.1:1
            policy:
              - allow: {or: [{email: {is: a@example.com}}]}
        """,
    )
    allowed = cli("check-policy", "-c", str(path), "--url", "http://app.test/", "--email",
                  "a@example.com")
    denied = cli("check-policy", "-c", str(path), "--url", "http://app.test/", "--email",
                 "b@example.com")
    assert allowed.returncode == 0, allowed.stderr
    assert "allow" in allowed.stdout.lower()
    assert denied.returncode != 0 or "deny" in denied.stdout.lower()
    assert allowed.stdout != denied.stdout


@pytest.mark.parametrize(
    "command",
    ["run", "check", "check-policy", "keygen", "hash-password", "verify-app", "reference", "demo"],
)
def test_every_subcommand_help_describes_itself(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.lower().startswith("usage: gatehouse " + command), out
    # A description line after the usage block.
    body = out.split("\n\n", 1)[1] if "\n\n" in out else ""
    assert body.strip() and not body.lstrip().startswith(("options:", "positional")), out
    # Every option with a default says what it is.
    for match in re.finditer(r"^\s+(--[\w-]+)(?: [A-Z_:]+)?\s{2,}(.*)$", out, re.M):
        flag, text = match.groups()
        if flag in ("--help",):
            continue
        assert text.strip(), f"{flag} has no help"
