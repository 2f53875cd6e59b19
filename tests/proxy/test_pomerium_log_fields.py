"""``access_log_fields`` and ``authorize_log_fields`` through a real gatehouse process:
the lines carry exactly the asked fields, under Pomerium's names, and no secret."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

ACCESS = [
    "upstream-cluster",
    "method",
    "authority",
    "path",
    "query",
    "user-agent",
    "referer",
    "forwarded-for",
    "request-id",
    "duration",
    "size",
    "response-code",
    "response-code-details",
    "ip",
    "headers.X-Trace",
    "headers.Cookie",
]
AUTHORIZE = [
    "request-id",
    "method",
    "path",
    "host",
    "ip",
    "user",
    "email",
    "route-id",
    "query",
    "body",
    "mcp-tool",
    "impersonate-email",
]


@pytest.fixture(scope="module")
def gh(
    ups: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatehouseProcess]:
    config = {
        "access_log_fields": ACCESS,
        "authorize_log_fields": AUTHORIZE,
        "routes": [
            {
                "from": "http://logs.test",
                "name": "logs",
                "id": "route-logs",
                "to": ups["a"].url,
                "policy": {
                    "allow": {"or": [{"accept": True}]},
                    "deny": {"or": [{"http_path": {"starts_with": "/secret"}}]},
                },
            }
        ],
    }
    with GatehouseProcess(config, tmp_path_factory.mktemp("logf")) as proc:
        yield proc


def test_access_line_has_exactly_the_fields(gh: GatehouseProcess) -> None:
    with gh.client() as c:
        r = c.get(
            "/page?x=1&pomerium_jwt=SECRET",
            headers={
                "Host": "logs.test",
                "User-Agent": "ua/1",
                "Referer": "http://ref.test/p?tok=1",
                "X-Forwarded-For": "198.51.100.7",
                "X-Request-Id": "req-42",
                "X-Trace": "t-1",
                "Cookie": "a=SECRETCOOKIE",
            },
        )
    assert r.status_code == 200
    line = gh.wait_access(lambda rec: rec.get("path") == "/page")
    assert set(line) == {"time", "level", "message", "headers", *ACCESS[:-2]}
    assert line["message"] == "http-request"
    assert line["upstream-cluster"] == "logs"
    assert line["method"] == "GET"
    assert line["authority"] == "logs.test"
    assert line["query"] == "x=1&pomerium_jwt=%5Bredacted%5D"
    assert line["user-agent"] == "ua/1"
    assert line["referer"] == "http://ref.test/p"
    assert line["forwarded-for"] == "198.51.100.7"
    assert line["request-id"] == "req-42"
    assert isinstance(line["duration"], float) and line["duration"] >= 0
    assert line["size"] > 0
    assert line["response-code"] == 200
    assert line["response-code-details"] == "via_upstream"
    assert line["ip"] == "127.0.0.1"
    assert line["headers"] == {"X-Trace": "t-1", "Cookie": "[redacted]"}
    assert "SECRET" not in "\n".join(gh.stdout_lines + gh.stderr_lines)


def test_authorize_line_for_a_deny(gh: GatehouseProcess) -> None:
    with gh.client() as c:
        r = c.get("/secret/x?y=2", headers={"Host": "logs.test", "X-Request-Id": "req-7"})
    assert r.status_code == 403
    rec = gh.wait_log(lambda rec: rec.get("decision") == "deny" and rec.get("path") == "/secret/x")
    assert rec["request-id"] == "req-7"
    assert rec["method"] == "GET"
    assert rec["host"] == "logs.test"
    assert rec["ip"] == "127.0.0.1"
    assert rec["user"] == "" and rec["email"] == ""
    assert rec["route-id"] == "route-logs"
    assert rec["query"] == "y=2"
    # Nothing to say (no session, no MCP, no impersonation): left out, as Pomerium does.
    assert not {"session-id", "body", "mcp-tool", "impersonate-email"} & set(rec)
    access = gh.wait_access(lambda a: a.get("path") == "/secret/x")
    assert access["response-code"] == 403
    assert access["response-code-details"] == "Forbidden"


def test_authorize_line_for_an_allow(gh: GatehouseProcess) -> None:
    with gh.client() as c:
        assert c.get("/open", headers={"Host": "logs.test"}).status_code == 200
    rec = gh.wait_log(lambda rec: rec.get("decision") == "allow" and rec.get("path") == "/open")
    assert rec["route-id"] == "route-logs"
