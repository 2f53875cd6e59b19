"""Pomerium's Host and response-header rewrites through a real gatehouse process:
``host_rewrite_header``, ``host_path_regex_rewrite_*`` and ``rewrite_response_headers``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.gatehouse import GatehouseProcess, public
from support.upstream import Respond, Upstream


def _config(a: str) -> dict[str, Any]:
    return {
        "routes": public(
            [
                {"from": "http://hdr.test", "host_rewrite_header": "X-Upstream-Host", "to": a},
                {
                    "from": "http://hostre.test",
                    "host_path_regex_rewrite_pattern": "^/([a-z]+)/.*$",
                    "host_path_regex_rewrite_substitution": "\\1.backend.internal",
                    "prefix_rewrite": "/rewritten/",
                    "prefix": "/",
                    "to": a,
                },
                {
                    "from": "http://loc.test",
                    "rewrite_response_headers": [
                        {
                            "header": "Location",
                            "prefix": "http://internal:8000/two/",
                            "value": "http://loc.test/one/",
                        },
                        {"header": "x-tag", "value": "pre-"},
                    ],
                    "to": a,
                },
            ]
        ),
    }


@pytest.fixture(scope="module")
def gh(
    ups: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatehouseProcess]:
    with GatehouseProcess(_config(ups["a"].url), tmp_path_factory.mktemp("rw")) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(gh: GatehouseProcess) -> Iterator[httpx.Client]:
    with gh.client() as c:
        yield c


def get(client: httpx.Client, host: str, path: str = "/", **headers: str) -> httpx.Response:
    return client.get(path, headers={"Host": host, **headers})


def test_host_from_request_header(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    r = get(client, "hdr.test", **{"X-Upstream-Host": "svc.internal:8080"})
    assert r.status_code == 200
    assert ups["a"].requests[-1].header("host") == "svc.internal:8080"
    assert ups["a"].requests[-1].header("x-forwarded-host") == "hdr.test"


def test_host_header_absent_keeps_the_clients(
    client: httpx.Client, ups: dict[str, Upstream]
) -> None:
    assert get(client, "hdr.test").status_code == 200
    assert ups["a"].requests[-1].header("host") == "hdr.test"


@pytest.mark.parametrize("bad", ["a b", "evil.test/path", "x@y", "a" * 300])
def test_host_header_not_a_host_is_refused(
    client: httpx.Client, ups: dict[str, Upstream], gh: GatehouseProcess, bad: str
) -> None:
    r = get(client, "hdr.test", **{"X-Upstream-Host": bad})
    assert r.status_code == 400
    assert not ups["a"].requests
    assert "traceback" not in gh.stderr_text().lower()


def test_host_from_path_regex(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    assert get(client, "hostre.test", "/billing/invoices?id=3").status_code == 200
    seen = ups["a"].requests[-1]
    # The substitution runs on the path before the prefix rewrite, without the query.
    assert seen.header("host") == "billing.backend.internal"
    assert seen.target == "/rewritten/billing/invoices?id=3"


def test_host_path_regex_without_match_is_refused(
    client: httpx.Client, ups: dict[str, Upstream]
) -> None:
    # No match leaves the path as it was (RE2 GlobalReplace): not a host, so 400.
    r = get(client, "hostre.test", "/UPPER/x")
    assert r.status_code == 400
    assert not ups["a"].requests


def test_location_prefix_rewritten(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    ups["a"].respond(
        Respond(
            status=302,
            headers=[("Location", "http://internal:8000/two/page?q=1"), ("X-Tag", "v1")],
        )
    )
    r = get(client, "loc.test")
    assert r.status_code == 302
    assert r.headers["location"] == "http://loc.test/one/page?q=1"
    # An empty prefix matches every value: the value is put in front.
    assert r.headers["x-tag"] == "pre-v1"


def test_location_other_prefix_untouched(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    ups["a"].respond(Respond(status=302, headers=[("Location", "https://elsewhere.test/two/")]))
    r = get(client, "loc.test")
    assert r.headers["location"] == "https://elsewhere.test/two/"
    assert "x-tag" not in r.headers
