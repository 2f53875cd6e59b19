"""``console_url`` and ``console_policy`` as ``gatehouse check`` sees them."""

from __future__ import annotations

from pathlib import Path

from support.gatehouse import run_cli

SECRET = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWY="


def test_check_locates_every_console_problem(tmp_path: Path) -> None:
    config = tmp_path / "gatehouse.yaml"
    config.write_text(
        f"""\
insecure_server: true
shared_secret: {SECRET}
console_url: http://console.localhost
console_policy:
  - allow:
      or:
        - emial: {{is: a@example.com}}
routes:
  - from: http://console.localhost
    to: http://127.0.0.1:1
"""
    )
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines()[:3] == [
        f"{config}:3: console_url: the console signs its users in: set idp_provider",
        f"{config}:3: console_url: console.localhost is also the host of routes[0]; "
        "use a host of its own",
        f"{config}:7: console_policy[0].allow.or[0].emial: unknown criterion 'emial'; "
        "did you mean 'email'?",
    ]


def test_console_url_must_be_an_origin(tmp_path: Path) -> None:
    config = tmp_path / "gatehouse.yaml"
    config.write_text("insecure_server: true\nconsole_url: http://console.localhost/admin\n")
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 1
    assert f"{config}:2: console_url: must be scheme and host only" in result.stderr
