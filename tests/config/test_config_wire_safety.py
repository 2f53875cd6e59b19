"""Config values that end up in a request line, Host or Location cannot break the framing."""

from __future__ import annotations

import pytest

from gatehouse.config import load_text
from gatehouse.errors import ConfigError
from gatehouse.http.messages import Response


@pytest.mark.parametrize(
    "route_keys",
    [
        'to: http://127.0.0.1:9\n    host_rewrite: "a\\r\\nX-Injected: 1"',
        'to: http://127.0.0.1:9\n    prefix_rewrite: "/a b"',
        'to: http://127.0.0.1:9\n    regex_rewrite_pattern: "^/a"\n    regex_rewrite_substitution: "/b\\nc"',
        'redirect: {path_redirect: "/x\\r\\ny"}',
        'redirect: {host_redirect: "evil.example.com\\r\\nSet-Cookie: a=b"}',
    ],
)
def test_control_characters_and_spaces_are_refused(route_keys: str) -> None:
    text = f"insecure_server: true\nroutes:\n  - from: http://a.localhost\n    {route_keys}\n"
    with pytest.raises(ConfigError) as err:
        load_text(text, env={})
    assert "spaces or control characters" in "\n".join(err.value.problems)


def test_redirect_location_is_percent_encoded() -> None:
    location = dict(Response.redirect("http://a.localhost/p\u00e9 x\r\nY: z?q=%2F").headers)["Location"]
    assert location == "http://a.localhost/p%C3%A9%20x%0D%0AY:%20z?q=%2F"
