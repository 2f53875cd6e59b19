"""HTTP/2 downstream through a real gatehouse: ALPN and h2c selection (``codec_type``),
multiplexing, flow control both ways, connection-specific headers, SETTINGS, drain.

Clients we did not write (curl, h2load) check the basics; the ``h2``-based test client
(:mod:`support.h2client`) checks frames.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from h2.settings import SettingCodes

from support import wait_until
from support.gatehouse import GatehouseProcess, public
from support.h2client import H2Client, StreamResult
from support.upstream import Download, Echo, Respond, SlowBody, Upstream

Start = Callable[..., GatehouseProcess]

pytestmark = pytest.mark.timeout(60)


def config(up: Upstream, *, tls: bool = False, codec: str = "auto", **extra: Any) -> dict[str, Any]:
    scheme = "https" if tls else "http"
    return {
        "insecure_server": not tls,
        "codec_type": codec,
        "routes": public([{"from": f"{scheme}://app.localhost", "to": up.url}]),
        **extra,
    }


def curl(port: int, *args: str, tls: bool = False) -> subprocess.CompletedProcess[str]:
    scheme = "https" if tls else "http"
    return subprocess.run(
        [
            "curl",
            "-sk",
            "--max-time",
            "10",
            "--resolve",
            f"app.localhost:{port}:127.0.0.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            *args,
            f"{scheme}://app.localhost:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_h2c_prior_knowledge_and_http1_on_one_port(
    start_gatehouse: Start, upstream: Upstream
) -> None:
    gh = start_gatehouse(config(upstream))
    assert curl(gh.port, "--http2-prior-knowledge").stdout == "2 200"
    assert curl(gh.port).stdout == "1.1 200"
    # HTTP/1.1's h2c upgrade is not taken up: served as HTTP/1.1 (RFC 9113 deprecates it).
    assert curl(gh.port, "--http2").stdout == "1.1 200"


def test_tls_alpn_offers_h2_and_falls_back(start_gatehouse: Start, upstream: Upstream) -> None:
    gh = start_gatehouse(config(upstream, tls=True))
    assert curl(gh.port, "--http2", tls=True).stdout == "2 200"
    assert curl(gh.port, "--http1.1", tls=True).stdout == "1.1 200"
    with H2Client(gh.port, tls=True) as client:
        assert client.alpn == "h2"
        result = client.get("/")
        assert result.status == 200
        assert bytes(result.body) == b"hello from upstream"


def test_http1_codec_never_negotiates_h2(start_gatehouse: Start, upstream: Upstream) -> None:
    gh = start_gatehouse(config(upstream, tls=True, codec="http1"))
    assert curl(gh.port, "--http2", tls=True).stdout == "1.1 200"
    plain = start_gatehouse(config(upstream, codec="http1"))
    # A preface on an HTTP/1.1-only listener is a malformed request: 400, not HTTP/2.
    assert curl(plain.port, "--http2-prior-knowledge").returncode != 0


def test_http2_codec_is_http2_only(start_gatehouse: Start, upstream: Upstream) -> None:
    gh = start_gatehouse(config(upstream, tls=True, codec="http2"))
    assert curl(gh.port, "--http2", tls=True).stdout == "2 200"
    assert curl(gh.port, "--http1.1", tls=True).returncode != 0


def test_settings_advertised(start_gatehouse: Start, upstream: Upstream) -> None:
    gh = start_gatehouse(config(upstream, max_request_header_bytes=8192, max_url_bytes=4096))
    with H2Client(gh.port) as client:
        client.get("/")
        s = client.remote_settings
        assert s[SettingCodes.MAX_CONCURRENT_STREAMS] == 100
        assert s[SettingCodes.MAX_HEADER_LIST_SIZE] == 8192 + 4096
        assert s[SettingCodes.INITIAL_WINDOW_SIZE] == 256 * 1024
        assert s.get(SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0  # no RFC 8441


def test_many_streams_multiplexed(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream(action=SlowBody(parts=[b"a" * 5, b"b" * 5], delay=0.3))
    gh = start_gatehouse(config(up))
    with H2Client(gh.port) as client:
        ids = [client.request(f"/r{i}") for i in range(40)]
        client.read_until(lambda: all(client.streams[i].ended for i in ids), 20)
        assert [client.streams[i].status for i in ids] == [200] * 40
        assert all(bytes(client.streams[i].body) == b"aaaaabbbbb" for i in ids)
    # Forty slow responses overlapped on one connection (not one after the other).
    assert len(up.requests) == 40


def test_h2load_independent_client(start_gatehouse: Start, upstream: Upstream) -> None:
    if shutil.which("h2load") is None:
        pytest.skip("h2load (nghttp2-client) not installed")
    gh = start_gatehouse(config(upstream, tls=True, access_log=False))
    out = subprocess.run(
        [
            "h2load",
            "-n",
            "500",
            "-c",
            "2",
            "-m",
            "20",
            f"https://127.0.0.1:{gh.port}/",
            "-H",
            ":authority: app.localhost",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "500 succeeded" in out, out
    assert "500 2xx" in out, out


def test_connection_specific_headers_never_sent(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream(
        action=Respond(
            body=b"ok",
            headers=[
                ("Connection", "keep-alive, X-Private"),
                ("Keep-Alive", "timeout=5"),
                ("X-Private", "hop"),
                ("Upgrade", "h2c"),
                ("Proxy-Connection", "keep-alive"),
                ("X-Kept", "yes"),
            ],
        )
    )
    gh = start_gatehouse(config(up))
    # validate=True: the h2 client raises on any connection-specific field (RFC 9113 §8.2.2).
    with H2Client(gh.port, validate=True) as client:
        result = client.get("/")
    names = {k for k, _ in result.headers}
    assert result.status == 200
    assert names.isdisjoint(
        {
            b"connection",
            b"keep-alive",
            b"x-private",
            b"upgrade",
            b"proxy-connection",
            b"transfer-encoding",
        }
    )
    assert result.header(b"x-kept") == b"yes"


def test_upload_larger_than_windows(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream(action=Echo())
    gh = start_gatehouse(config(up))
    body = bytes(range(256)) * 12 * 1024  # 3 MiB: past the stream and connection windows
    with H2Client(gh.port) as client:
        sid = client.request(
            "/up", method="POST", body=body, headers=[("content-length", str(len(body)))]
        )
        result = client.response(sid, 30)
    assert result.status == 200
    assert result.header(b"x-echo-body-size") == str(len(body)).encode()
    assert up.requests[-1].body_size == len(body)


def test_download_with_a_small_client_window(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    size = 8 * 1024 * 1024
    up = make_upstream(action=Download(size=size, block=256 * 1024))
    gh = start_gatehouse(config(up))
    with H2Client(gh.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 16_384}) as client:
        result = client.response(client.request("/big"), 60)
    assert result.ended and result.reset is None
    assert len(result.body) == size


def test_slow_reader_pauses_upstream_not_others(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    """A stream whose window the client keeps closed stops the upstream read for that
    stream (bounded buffering) while another stream on the connection is served."""
    big = make_upstream("big", action=Download(size=64 * 1024 * 1024, block=256 * 1024))
    small = make_upstream("small")
    gh = start_gatehouse(
        {
            "insecure_server": True,
            "codec_type": "auto",
            "routes": public(
                [
                    {"from": "http://big.localhost", "to": big.url},
                    {"from": "http://small.localhost", "to": small.url},
                ]
            ),
        }
    )
    with H2Client(gh.port, auto_window=False) as client:
        sid = client.request("/", authority="big.localhost")
        client.read_until(lambda: len(client.streams[sid].body) >= 60_000, 10)
        other = client.request("/", authority="small.localhost")
        # The connection window is spent by the big stream; open it for the small one only.
        client.conn.increment_flow_control_window(1 << 20)
        client.flush()
        result = client.response(other, 10)
        assert result.status == 200 and bytes(result.body) == b"hello from small"
        assert len(client.streams[sid].body) < 2 * 1024 * 1024
    # gatehouse read at most its high-water mark plus socket buffers from the upstream.
    assert len(big.requests) == 1


def test_graceful_goaway_on_drain(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream(action=SlowBody(parts=[b"x" * 10, b"y" * 10], delay=0.7))
    gh = start_gatehouse(config(up))
    with H2Client(gh.port) as client:
        sid = client.request("/slow")
        wait_until(lambda: len(up.requests) == 1, timeout=5)
        assert gh.proc is not None
        gh.proc.send_signal(signal.SIGTERM)
        client.read_until(lambda: client.goaway is not None, 5)
        assert client.goaway is not None
        assert client.goaway.error_code == 0
        assert client.goaway.last_stream_id == sid
        result = client.response(sid, 10)
        assert result.ended and bytes(result.body) == b"x" * 10 + b"y" * 10
        client.read_until(lambda: client.closed, 5)
        assert client.closed


def test_bad_requests_answered_on_their_stream(start_gatehouse: Start, upstream: Upstream) -> None:
    gh = start_gatehouse(config(upstream))
    with H2Client(gh.port) as client:
        long_path = client.get("/" + "a" * 20_000)
        assert long_path.status == 414
        ok = client.get("/")
        assert ok.status == 200  # the connection survives a refused stream
    assert not any("Traceback" in line for line in gh.stderr_lines)


@pytest.mark.parametrize(
    "extra",
    [
        [(b"X-Upper", b"1")],
        [(b"x-split", b"a\r\nx-injected: 1")],
        [(b"x-nul", b"a\x00b")],
        [(b"connection", b"close")],
        [(b"te", b"gzip")],
        [(b":path", b"/again")],
    ],
    ids=["uppercase", "crlf", "nul", "connection", "te", "repeated-pseudo"],
)
def test_malformed_fields_refused_on_their_stream(
    start_gatehouse: Start, upstream: Upstream, extra: list[tuple[bytes, bytes]]
) -> None:
    gh = start_gatehouse(config(upstream))
    with H2Client(gh.port, outbound_checks=False) as client:
        sid = client.conn.get_next_available_stream_id()
        client.streams[sid] = StreamResult()
        client.conn.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"app.localhost"),
                (b":path", b"/"),
                *extra,
            ],
            end_stream=True,
        )
        client.flush()
        assert client.response(sid).status == 400
        assert client.get("/").status == 200  # the connection survives
    assert len(upstream.requests) == 1  # the malformed request never reached it
    assert not any("Traceback" in line for line in gh.stderr_lines)
