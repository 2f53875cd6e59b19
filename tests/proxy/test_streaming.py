"""1 GiB through the proxy each way, with the proxy's peak RSS bounded (bodies are streamed)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from support.client import RawConnection, parse_head
from support.gatehouse import GatehouseProcess, public
from support.upstream import Download, Respond, Upstream

GIB = 1 << 30
#: Peak RSS the proxy may reach while streaming 1 GiB, kB.
RSS_LIMIT_KB = 200 * 1024

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gh(
    ups: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatehouseProcess]:
    config = {"routes": public([{"from": "http://big.test", "to": ups["a"].url, "timeout": "60s"}])}
    with GatehouseProcess(config, tmp_path_factory.mktemp("big")) as proc:
        yield proc


def test_upload_1gib(gh: GatehouseProcess, ups: dict[str, Upstream]) -> None:
    ups["a"].respond(Respond(body=b"stored"))
    block = b"u" * (1 << 20)
    started = time.monotonic()
    with RawConnection(gh.port, timeout=60) as conn:
        conn.send(b"PUT /upload HTTP/1.1\r\nHost: big.test\r\nContent-Length: %d\r\n\r\n" % GIB)
        for _ in range(GIB // len(block)):
            conn.sock.sendall(block)
        r = conn.read_response()
    elapsed = time.monotonic() - started
    assert r.status == 200
    assert r.body == b"stored"
    assert ups["a"].requests[0].body_size == GIB
    peak = gh.status_kb("VmHWM")
    print(f"upload 1 GiB: {elapsed:.1f}s, proxy peak RSS {peak / 1024:.0f} MB")
    assert peak < RSS_LIMIT_KB
    assert elapsed < 45


@pytest.mark.parametrize("chunked", [False, True])
def test_download_1gib(gh: GatehouseProcess, ups: dict[str, Upstream], chunked: bool) -> None:
    ups["a"].respond(Download(size=GIB, chunked=chunked))
    started = time.monotonic()
    with RawConnection(gh.port, timeout=60) as conn:
        conn.send(b"GET /download HTTP/1.1\r\nHost: big.test\r\n\r\n")
        head = conn.buf.until(b"\r\n\r\n")
        status, _, headers = parse_head(head[:-4])
        assert status == 200
        hmap = {k.lower(): v for k, v in headers}
        received = 0
        if not chunked:
            assert hmap["content-length"] == str(GIB)
            received = len(conn.buf.data)
            conn.buf.data.clear()
            buf = bytearray(1 << 20)
            while received < GIB:
                n = conn.sock.recv_into(buf)
                assert n, "connection closed early"
                received += n
        else:
            assert "chunked" in hmap.get("transfer-encoding", "")
            while True:
                size = int(conn.buf.until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    conn.buf.until(b"\r\n")
                    break
                conn.buf.exactly(size + 2)
                received += size
    elapsed = time.monotonic() - started
    assert received == GIB
    peak = gh.status_kb("VmHWM")
    print(
        f"download 1 GiB (chunked={chunked}): {elapsed:.1f}s, proxy peak RSS {peak / 1024:.0f} MB"
    )
    assert peak < RSS_LIMIT_KB
    assert elapsed < 45
