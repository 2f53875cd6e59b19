"""Defences against the known HTTP/2 attacks, each through a real gatehouse with frames
crafted by the test: rapid reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316
class), HPACK bomb, PING and SETTINGS floods (CVE-2019-9512/9515), empty DATA frames
(CVE-2019-9518), too many concurrent streams, and the zero-window stall.

Each attack must end with a GOAWAY or a reset, one log line, no traceback, and gatehouse
serving the next connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from support import wait_until
from support.gatehouse import GatehouseProcess, public
from support.h2client import H2Client
from support.upstream import Download, Hang, Upstream

Start = Callable[..., GatehouseProcess]

pytestmark = pytest.mark.timeout(60)


def config(up: Upstream, **extra: Any) -> dict[str, Any]:
    return {
        "insecure_server": True,
        "codec_type": "auto",
        "routes": public(
            [
                {"from": "http://app.localhost", "to": up.url},
                {"from": "http://ok.localhost", "response": {"status": 200, "body": "ok"}},
            ]
        ),
        **extra,
    }


def request_block(
    encoder: Encoder, path: str = "/", extra: list[tuple[str, str]] | None = None
) -> bytes:
    return encoder.encode(
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "app.localhost"),
            (":path", path),
            *(extra or []),
        ]
    )


def goaway_code(client: H2Client, timeout: float = 10.0) -> int | None:
    client.read_until(lambda: client.goaway is not None or client.closed, timeout)
    return None if client.goaway is None else int(client.goaway.error_code or 0)


def still_serves(port: int) -> None:
    with H2Client(port, authority="ok.localhost") as fresh:
        assert fresh.get("/").status == 200


def no_traceback(gh: GatehouseProcess) -> None:
    assert not any("Traceback" in line for line in gh.stderr_lines), gh.stderr_text()


def logged(gh: GatehouseProcess, text: str) -> int:
    return sum(1 for line in gh.stderr_lines if text in line)


def test_rapid_reset_gets_goaway(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream(action=Hang())
    gh = start_gatehouse(config(up))
    with H2Client(gh.port) as client:
        client.read_until(lambda: bool(client.remote_settings), 5)
        encoder = client.conn.encoder
        frames = []
        for i in range(400):
            sid = 1 + 2 * i
            frames.append(
                HeadersFrame(
                    sid, request_block(encoder), flags=["END_HEADERS", "END_STREAM"]
                ).serialize()
            )
            frames.append(RstStreamFrame(sid, error_code=ErrorCodes.CANCEL).serialize())
        client.send_raw(b"".join(frames))
        assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
        client.read_until(lambda: client.closed, 5)
        assert client.closed
    wait_until(lambda: logged(gh, "rapid reset") == 1, timeout=5)
    # Far fewer than 400 requests reached the upstream, and none is left open: every
    # connection that carried one is closed. (A connection that finished opening after its
    # stream was reset carried nothing; it may wait in the idle pool for the next request.)
    assert len(up.requests) <= 210
    wait_until(lambda: {r.conn_id for r in up.requests} <= set(up.closed), timeout=10)
    still_serves(gh.port)
    no_traceback(gh)
    assert gh.stop() == 0  # and the pooled ones close at shutdown
    wait_until(lambda: len(up.closed) == len(up.opened), timeout=10)


def test_continuation_flood(start_gatehouse: Start, upstream: Upstream) -> None:
    gh = start_gatehouse(config(upstream))
    with H2Client(gh.port) as client:
        client.read_until(lambda: bool(client.remote_settings), 5)
        block = request_block(client.conn.encoder)
        frames = [HeadersFrame(1, block, flags=[]).serialize()]
        # Endless CONTINUATION frames, never END_HEADERS: each one is junk header bytes.
        junk = b"\x00\x05x-pad" + b"\x7f\x81\x7f" + b"a" * 200
        for _ in range(2000):
            frames.append(ContinuationFrame(1, junk, flags=[]).serialize())
        client.send_raw(b"".join(frames))
        code = goaway_code(client)
        assert code in (
            ErrorCodes.PROTOCOL_ERROR,
            ErrorCodes.ENHANCE_YOUR_CALM,
            ErrorCodes.COMPRESSION_ERROR,
        )
        client.read_until(lambda: client.closed, 5)
        assert client.closed
    assert upstream.requests == []
    wait_until(lambda: logged(gh, "closing HTTP/2 connection") == 1, timeout=5)
    still_serves(gh.port)
    no_traceback(gh)


def test_hpack_bomb(start_gatehouse: Start, upstream: Upstream) -> None:
    """A small header block that decodes to far more than SETTINGS_MAX_HEADER_LIST_SIZE:
    one large header in the dynamic table, then referenced over and over."""
    gh = start_gatehouse(config(upstream))
    with H2Client(gh.port) as client:
        client.read_until(lambda: bool(client.remote_settings), 5)
        encoder = Encoder()
        big = ("x-bomb", "b" * 4000)
        block = request_block(encoder, extra=[big] * 1000)
        assert len(block) < 16_384  # one frame, 4 MB when decoded
        client.send_raw(HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
        assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
    assert upstream.requests == []
    still_serves(gh.port)
    no_traceback(gh)


def test_header_list_over_limit_within_one_block(
    start_gatehouse: Start, upstream: Upstream
) -> None:
    gh = start_gatehouse(config(upstream, max_request_header_bytes=4096))
    with H2Client(gh.port) as client:
        result = client.get("/", headers=[("x-big", "y" * 6000)])
        # Over max_request_header_bytes but under the HPACK list limit: 431 on the stream...
        assert result.status == 431 or client.goaway is not None
    assert upstream.requests == []
    still_serves(gh.port)


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("PING flood", lambda i: PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize()),
        (
            "SETTINGS flood",
            lambda i: SettingsFrame(0, settings={SettingCodes.MAX_FRAME_SIZE: 16_384}).serialize(),
        ),
        ("empty DATA flood", None),
    ],
)
def test_floods_get_goaway(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream], name: str, frame: Any
) -> None:
    up = make_upstream(action=Hang())
    gh = start_gatehouse(config(up))
    with H2Client(gh.port) as client:
        client.read_until(lambda: bool(client.remote_settings), 5)
        if frame is None:
            # A POST whose body is an endless run of empty DATA frames.
            client.send_raw(
                HeadersFrame(
                    1, request_block(client.conn.encoder), flags=["END_HEADERS"]
                ).serialize()
            )
            payload = b"".join(DataFrame(1, b"").serialize() for _ in range(1000))
        else:
            payload = b"".join(frame(i) for i in range(1000))
        client.send_raw(payload)
        assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
    wait_until(lambda: logged(gh, name) == 1, timeout=5)
    still_serves(gh.port)
    no_traceback(gh)


def test_concurrent_streams_over_the_limit_refused(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream(action=Hang())
    gh = start_gatehouse(config(up))
    with H2Client(gh.port) as client:
        client.read_until(lambda: bool(client.remote_settings), 5)
        encoder = client.conn.encoder
        frames = [
            HeadersFrame(
                1 + 2 * i, request_block(encoder), flags=["END_HEADERS", "END_STREAM"]
            ).serialize()
            for i in range(101)
        ]
        client.send_raw(b"".join(frames))
        # The 101st stream breaks SETTINGS_MAX_CONCURRENT_STREAMS: refused (RFC 9113 §5.1.2).
        code = goaway_code(client, 5)
        assert code == ErrorCodes.PROTOCOL_ERROR
    wait_until(lambda: len(up.requests) <= 100, timeout=5)
    assert len(up.requests) <= 100
    still_serves(gh.port)
    no_traceback(gh)


def test_zero_window_stall_times_out(
    start_gatehouse: Start, make_upstream: Callable[..., Upstream]
) -> None:
    up = make_upstream(action=Download(size=64 * 1024 * 1024, block=256 * 1024))
    gh = start_gatehouse(config(up, timeout_read="1s"))
    with H2Client(
        gh.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}, auto_window=False
    ) as client:
        sid = client.request("/big")
        started = time.monotonic()
        result = client.response(sid, 10)
        waited = time.monotonic() - started
        assert result.reset is not None, "a zero-window stream must be reset"
        assert len(result.body) == 0
        assert 0.9 <= waited < 5
    # The upstream request is dropped with it.
    wait_until(lambda: len(up.closed) == len(up.opened) >= 1, timeout=10)
    wait_until(lambda: logged(gh, "stalled on a closed flow-control window") == 1, timeout=5)
    still_serves(gh.port)
    no_traceback(gh)
