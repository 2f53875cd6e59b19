"""Regenerate ``configs/``: Pomerium's config examples as fixture files (run by hand).

Reads the Git mirrors of github.com/pomerium/pomerium and github.com/pomerium/documentation
(paths as the project's ``fetch`` tool leaves them, or ``POMERIUM_GIT``/``POMERIUM_DOCS_GIT``)
and writes one YAML file per distinct config example, plus ``configs/index.yaml`` recording
where each came from and what was substituted. The examples themselves are data; nothing of
Pomerium's code is copied. What each case is expected to do is measured afterwards by
``measure_configs.py``.

Kinds of example: ``config`` (a whole config file), ``global`` (top-level keys only: merged
into a base config), ``route`` (one route's keys: merged into a base route of the base config)
and ``policy`` (a PPL document: the base route's ``policy``). Secrets, keys, certificates and
file paths are replaced with fixtures from ``configs/_fixtures`` so that a case fails only
for what it says, not for a placeholder like ``REPLACE_ME``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent / "configs"
REPOS = {
    "pomerium/pomerium": os.environ.get("POMERIUM_GIT", "/work/.mirror/pomerium+pomerium/repo"),
    "pomerium/documentation": os.environ.get(
        "POMERIUM_DOCS_GIT", "/work/.mirror/pomerium+documentation/repo"
    ),
}
#: Config files in the main repository (docker-compose and Kubernetes files are not configs).
POMERIUM_FILES = [
    "config/testdata/basic.yaml",
    "examples/config/config.docker.yaml",
    "examples/config/config.example.yaml",
    "examples/config/config.minimal.yaml",
    "examples/config/policy.example.yaml",
    "examples/config/route.example.yaml",
    "examples/cloudrun/config.yaml",
    "examples/cloudrun/policy.template.yaml",
    "examples/mutual-tls/example.config.yaml",
    "examples/tiddlywiki/config.yaml",
    "internal/acceptance/pomerium/config.yaml",
    "internal/acceptance/suites/mcp/pomerium/config.yaml",
    "ospkg/conf/config.yaml",
]
_YAML_BLOCK = re.compile(r"^([ \t]*)```ya?ml[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)

#: Placeholder key path ``@FIXTURES@`` is replaced by the test with the fixtures directory.
FIX = "@FIXTURES@"
SECRET = "I2pb6hv7nSPmXhk4oXAbGm3UQu8V1X3QTUy1tFjbo1w="  # base64 of 32 fixed bytes
_SUBSTITUTE: dict[str, Any] = {
    "shared_secret": SECRET,
    "cookie_secret": SECRET,
    "idp_client_secret": "compat-client-secret",
    "signing_key": f"{FIX}/signing_key.b64",  # replaced by the file's text by the test
    "certificate": f"{FIX}/cert.b64",
    "certificate_key": f"{FIX}/key.b64",
    "certificate_file": f"{FIX}/cert.pem",
    "certificate_key_file": f"{FIX}/key.pem",
    "certificate_authority_file": f"{FIX}/cert.pem",
    "shared_secret_file": f"{FIX}/secret",
    "cookie_secret_file": f"{FIX}/secret",
    "idp_client_secret_file": f"{FIX}/client_secret",
    "signing_key_file": f"{FIX}/signing_key.pem",
    "tls_custom_ca_file": f"{FIX}/cert.pem",
    "tls_client_cert_file": f"{FIX}/cert.pem",
    "tls_client_key_file": f"{FIX}/key.pem",
    "tls_downstream_client_ca_file": f"{FIX}/cert.pem",
    "kubernetes_service_account_token_file": f"{FIX}/secret",
    "databroker_storage_connection_string_file": f"{FIX}/redis_url",
    "metrics_certificate_file": f"{FIX}/cert.pem",
    "metrics_certificate_key_file": f"{FIX}/key.pem",
    "autocert_dir": f"{FIX}/autocert",
    "policy_file": f"{FIX}/policy_file.yaml",
}
#: The base a fragment is merged into: a config gatehouse can start (plain HTTP behind a
#: TLS terminator, an OpenID provider, fixed secrets).
BASE: dict[str, Any] = {
    "insecure_server": True,
    "authenticate_service_url": "https://authenticate.example.com",
    "idp_provider": "oidc",
    "idp_provider_url": "https://idp.example.com",
    "idp_client_id": "compat-client",
    "idp_client_secret": "compat-client-secret",
    "shared_secret": SECRET,
    "cookie_secret": SECRET,
}
BASE_ROUTE: dict[str, Any] = {"from": "https://app.example.com", "to": "http://app:8080"}


def git(repo: str, *args: str) -> str:
    out = subprocess.run(
        ["git", "--git-dir", REPOS[repo], *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def _route_keys() -> set[str]:
    text = git("pomerium/pomerium", "show", "HEAD:config/policy.go")
    return set(re.findall(r'mapstructure:"([a-z_0-9]+)"', text))


def _global_keys() -> set[str]:
    keys: set[str] = set()
    for path in (
        "config/options.go",
        "config/options_databroker.go",
        "config/options_dns.go",
        "config/autocert.go",
        "config/otelconfig/otelconfig.go",
        "config/config.gen.go",
    ):
        keys |= set(
            re.findall(
                r'mapstructure:"([a-z_0-9]+)"', git("pomerium/pomerium", "show", f"HEAD:{path}")
            )
        )
    return keys


def substitute(value: Any, done: set[str]) -> Any:
    """``value`` with secrets, keys and file paths replaced by fixtures."""
    if isinstance(value, list):
        return [substitute(v, done) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key in _SUBSTITUTE and isinstance(item, str | int | bool) and item != "":
            out[key] = _SUBSTITUTE[key]
            done.add(key)
        elif key == "certificates" and isinstance(item, list):
            out[key] = [{"cert": f"{FIX}/cert.pem", "key": f"{FIX}/key.pem"} for _ in item]
            done.add(key)
        else:
            out[key] = substitute(item, done)
    return out


def classify(data: Any, route_keys: set[str], global_keys: set[str]) -> str | None:
    if isinstance(data, list):
        if data and all(isinstance(d, dict) and "from" in d for d in data):
            return "routes"
        if data and all(isinstance(d, dict) and set(d) & {"allow", "deny"} for d in data):
            return "policy"
        return None
    if not isinstance(data, dict) or not data:
        return None
    keys = {str(k) for k in data}
    if any(k.startswith(("ingress.pomerium.io", "apiVersion", "kind")) for k in keys):
        return None
    if "services" in keys and isinstance(data["services"], dict):
        return None  # docker compose
    known = route_keys | global_keys | {"routes", "allow", "deny"}
    if not keys & known or any(k != k.lower() for k in keys):
        return None  # another program's settings, or the Ingress Controller's camelCase CRD
    if keys & {"allow", "deny"} and keys <= {"allow", "deny"}:
        return "policy"
    if "routes" in keys or (
        isinstance(data.get("policy"), list)
        and data["policy"]
        and isinstance(data["policy"][0], dict)
        and "from" in data["policy"][0]
    ):
        return "config"
    if "from" in keys:
        return "route"
    if keys <= route_keys and not keys <= global_keys:
        return "route"
    if keys <= route_keys and keys & {"policy", "prefix", "path", "regex", "to", "timeout"}:
        return "route"
    return "global"


def build(kind: str, data: Any) -> Any:
    if kind == "config":
        return data
    if kind == "routes":
        return {**BASE, "routes": data}
    if kind == "route":
        route = {**BASE_ROUTE, **data}
        if any(k in data for k in ("redirect", "response")) and "to" not in data:
            route.pop("to")
        return {**BASE, "routes": [route]}
    if kind == "policy":
        return {**BASE, "routes": [{**BASE_ROUTE, "policy": data}]}
    return {**BASE, **data}


def examples() -> list[tuple[str, str, str]]:
    """(repo, path#n, yaml text) of every example."""
    found = []
    for path in POMERIUM_FILES:
        found.append(("pomerium/pomerium", path, git("pomerium/pomerium", "show", f"HEAD:{path}")))
    docs = "pomerium/documentation"
    for path in git(docs, "ls-tree", "-r", "--name-only", "HEAD").split():
        if not path.startswith("content/") or not path.endswith((".md", ".mdx")):
            continue
        text = git(docs, "show", f"HEAD:{path}")
        for n, m in enumerate(_YAML_BLOCK.finditer(text)):
            indent = len(m.group(1))
            body = "\n".join(
                line[indent:] if not line[:indent].strip() else line
                for line in m.group(2).splitlines()
            )
            found.append((docs, f"{path}#{n}", body))
    return found


def main() -> None:
    route_keys, global_keys = _route_keys(), _global_keys()
    commits = {repo: git(repo, "rev-parse", "HEAD").strip() for repo in REPOS}
    seen: set[str] = set()
    index = []
    for old in HERE.glob("*.yaml"):
        if old.name != "index.yaml":
            old.unlink()
    for repo, where, text in examples():
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        kind = classify(data, route_keys, global_keys)
        if kind is None:
            continue
        done: set[str] = set()
        config = substitute(build(kind, data), done)
        body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        digest = hashlib.sha256(body.encode()).hexdigest()[:10]
        if digest in seen:
            continue
        seen.add(digest)
        slug = re.sub(r"[^a-z0-9]+", "-", where.lower().rsplit("/", 1)[-1]).strip("-")
        name = f"{'pom' if repo == 'pomerium/pomerium' else 'doc'}-{slug}-{digest[:6]}.yaml"
        (HERE / name).write_text(body)
        index.append(
            {
                "file": name,
                "source": f"{repo}@{commits[repo][:12]}:{where}",
                "kind": kind,
                "substituted": sorted(done),
            }
        )
    (HERE / "index.yaml").write_text(
        "# Generated by tests/compat/extract_configs.py; `expect` by measure_configs.py.\n"
        + yaml.safe_dump({"cases": index}, sort_keys=False)
    )
    print(f"{len(index)} configs", file=sys.stderr)


if __name__ == "__main__":
    main()
