"""Hot reload of a running gatehouse: a valid edit is served, a broken one keeps the old config."""

from __future__ import annotations

from collections.abc import Callable

from support import wait_until
from support.gatehouse import GatehouseProcess, public
from support.upstream import Upstream


def test_reload_serves_new_routes_and_survives_a_broken_edit(
    start_gatehouse: Callable[..., GatehouseProcess], make_upstream: Callable[..., Upstream]
) -> None:
    a, b = make_upstream("a"), make_upstream("b")
    gh = start_gatehouse({"routes": public([{"from": "http://one.test", "to": a.url}])})
    assert gh.get("/", "one.test").text == "hello from a"
    assert gh.get("/", "two.test").status_code == 404

    gh.write_config(
        {
            "routes": public(
                [
                    {"from": "http://one.test", "to": b.url},
                    {"from": "http://two.test", "response": {"body": "two"}},
                ]
            )
        }
    )
    wait_until(lambda: gh.get("/", "two.test").status_code == 200, 5, what="the new route")
    assert gh.get("/", "one.test").text == "hello from b"
    gh.wait_log(lambda r: r.get("message") == "config reloaded")

    gh.write_config(
        "insecure_server: true\naddress: 127.0.0.1:0\nworkers: 1\nroutes:\n"
        "  - from: http://one.test\n    too: http://x\n"
    )
    line = gh.wait_log(lambda r: "reload failed" in r.get("message", ""), 5)
    assert any("routes[0]" in p and "'to'" in p for p in line["problems"]), line
    assert any(":6:" in p for p in line["problems"]), line  # file:line of the bad key
    # The running config keeps serving.
    assert gh.get("/", "one.test").text == "hello from b"
    assert gh.get("/", "two.test").text == "two"


def test_an_edit_right_after_start_is_not_missed(
    start_gatehouse: Callable[..., GatehouseProcess], make_upstream: Callable[..., Upstream]
) -> None:
    """The file poll compares with the config loaded at start, not with the file as it was
    when the poll began: an edit made in between (here, as soon as the process says it is
    listening) is reloaded too."""
    a = make_upstream("a")
    gh = start_gatehouse({"routes": public([{"from": "http://one.test", "to": a.url}])})
    gh.write_config({"routes": public([{"from": "http://two.test", "to": a.url}])})
    wait_until(lambda: gh.get("/", "two.test").status_code == 200, 5, what="the edited route")
