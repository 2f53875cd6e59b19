"""The upgrade tunnel (``http/tunnel.py``) end to end: byte fidelity, back-pressure both ways,
the bytes that share a packet with the upgrade heads, and the idle timeout.

A real gatehouse process; the upstream is a raw TCP server of this module (it answers the
upgrade with a 101 and then reads or writes exactly when the test says), so a test can hold
one side still and see whether gatehouse stops reading the other (bounded buffers) instead
of buffering without limit, and then check every byte arrived, in order.
"""

from __future__ import annotations

import hashlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.gatehouse import GatehouseProcess, public
from support.upstream import WebSocketEcho

#: What one side may push into a held-still peer before its sends stall: kernel socket
#: buffers on both hops plus gatehouse's transport buffers. Loopback autotuning allows a
#: few MiB per socket; without back-pressure gatehouse would take everything offered.
STALL_BOUND_BYTES = 48 << 20
#: Offered before a test concludes that nothing stops the sender.
OFFER_LIMIT_BYTES = 256 << 20
#: A sender is stalled when it could not write for this long.
STALL_S = 1.0
CHUNK = 64 * 1024
UPGRADE_HEAD = (
    b"GET /t HTTP/1.1\r\nHost: tunnel.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
SWITCH_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
)


def _pattern(offset: int, size: int) -> bytes:
    """Bytes ``offset..offset+size`` of a stream whose every 8-byte word is its index."""
    first = offset // 8
    words = b"".join((first + i).to_bytes(8, "big") for i in range(size // 8 + 2))
    skip = offset % 8
    return words[skip : skip + size]


class RawUpgradeUpstream:
    """Accepts one connection at a time, answers its upgrade with ``SWITCH_HEAD + greeting``
    and hands the socket (and what followed the request head) to ``behaviour``."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.behaviour: Callable[[socket.socket, bytes], None] = lambda s, rest: None
        self.greeting = b""
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(30)
                head = b""
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
                end = head.index(b"\r\n\r\n") + 4
                conn.sendall(SWITCH_HEAD + self.greeting)  # one write: head and tunnel bytes
                self.behaviour(conn, head[end:])
            except BaseException as exc:  # reported by the test, not lost in a thread
                self.errors.append(exc)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def raw_up() -> Iterator[RawUpgradeUpstream]:
    up = RawUpgradeUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def ws_echo_server(loop_thread) -> Iterator[WebSocketEcho]:  # type: ignore[no-untyped-def]
    server = WebSocketEcho(loop_thread)
    yield server
    server.close()


@pytest.fixture(scope="module")
def gh(
    raw_up: RawUpgradeUpstream,
    ws_echo_server: WebSocketEcho,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatehouseProcess]:
    routes = [
        {
            "from": "http://tunnel.test",
            "allow_websockets": True,
            "to": f"http://127.0.0.1:{raw_up.port}",
        },
        {
            "from": "http://idle.test",
            "allow_websockets": True,
            "idle_timeout": "500ms",
            "to": ws_echo_server.url,
        },
    ]
    config = {"default_upstream_timeout": "10s", "routes": public(routes)}
    with GatehouseProcess(config, Path(tmp_path_factory.mktemp("tunnel"))) as proc:
        yield proc


@pytest.fixture(autouse=True)
def _fresh(raw_up: RawUpgradeUpstream) -> Iterator[None]:
    raw_up.greeting = b""
    raw_up.errors.clear()
    yield
    assert raw_up.errors == []


def _open(gh: GatehouseProcess, first: bytes = b"") -> tuple[socket.socket, bytes]:
    """A client connection upgraded through gatehouse; returns it and the bytes after the 101."""
    sock = socket.create_connection(("127.0.0.1", gh.port), timeout=10)
    sock.sendall(UPGRADE_HEAD + first)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"connection closed before the 101: {buf!r}"
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    assert buf.startswith(b"HTTP/1.1 101 "), buf[:200]
    return sock, buf[end:]


def _push_until_stalled(sock: socket.socket, offset: int = 0) -> int:
    """Send the pattern without reading until a send cannot progress for ``STALL_S``."""
    sock.setblocking(False)
    sent = offset
    while sent < OFFER_LIMIT_BYTES:
        _, writable, _ = select.select([], [sock], [], STALL_S)
        if not writable:
            break
        try:
            sent += sock.send(_pattern(sent, CHUNK))
        except BlockingIOError:
            continue
    sock.setblocking(True)
    return sent


def _read_until_eof(sock: socket.socket, into: hashlib._Hash) -> int:
    total = 0
    while data := sock.recv(1 << 20):
        into.update(data)
        total += len(data)
    return total


def test_bytes_beside_both_upgrade_heads_are_relayed_in_order(
    gh: GatehouseProcess, raw_up: RawUpgradeUpstream
) -> None:
    """Tunnel bytes in the same packet as the client's request head and as the upstream's
    101 head go through, after the head, before anything later."""
    got_first = threading.Event()
    seen: list[bytes] = []

    def behaviour(conn: socket.socket, rest: bytes) -> None:
        while len(rest) < len(b"client-early"):
            rest += conn.recv(100)
        seen.append(rest)
        got_first.set()
        conn.sendall(b"|later")
        conn.recv(100)  # until the client closes

    raw_up.behaviour = behaviour
    raw_up.greeting = b"upstream-early"
    sock, after = _open(gh, first=b"client-early")
    with sock:
        assert got_first.wait(10)
        assert seen == [b"client-early"]
        while len(after) < len(b"upstream-early|later"):
            data = sock.recv(100)
            assert data, after
            after += data
        assert after == b"upstream-early|later"


def test_client_flood_into_a_stalled_upstream_is_held_back_then_delivered_intact(
    gh: GatehouseProcess, raw_up: RawUpgradeUpstream
) -> None:
    """An upstream that stops reading stops gatehouse reading the client (bounded memory);
    once it reads again, every byte arrives in order."""
    release = threading.Event()
    result: dict[str, object] = {}
    done = threading.Event()

    def behaviour(conn: socket.socket, rest: bytes) -> None:
        release.wait(60)
        digest = hashlib.sha256(rest)
        result["bytes"] = len(rest) + _read_until_eof(conn, digest)
        result["sha256"] = digest.hexdigest()
        done.set()

    raw_up.behaviour = behaviour
    sock, _ = _open(gh)
    with sock:
        rss_before = gh.status_kb("VmRSS")
        stalled_at = _push_until_stalled(sock)
        assert stalled_at < STALL_BOUND_BYTES, (
            f"gatehouse took {stalled_at} bytes without back-pressure"
        )
        rss_growth_kib = gh.status_kb("VmRSS") - rss_before
        assert rss_growth_kib < STALL_BOUND_BYTES // 1024
        release.set()
        extra = 4 << 20
        sock.sendall(_pattern(stalled_at, extra))
        sock.shutdown(socket.SHUT_WR)
        assert done.wait(30), "the upstream did not get the end of the stream"
    total = stalled_at + extra
    assert result["bytes"] == total
    assert result["sha256"] == hashlib.sha256(_pattern(0, total)).hexdigest()


def test_upstream_flood_into_a_stalled_client_is_held_back_then_delivered_intact(
    gh: GatehouseProcess, raw_up: RawUpgradeUpstream
) -> None:
    """A client that stops reading stops gatehouse reading the upstream; once it reads
    again, everything the upstream sent arrives, in order, then the close."""
    stalled = threading.Event()
    sent: dict[str, int] = {}

    def behaviour(conn: socket.socket, rest: bytes) -> None:
        at = _push_until_stalled(conn)
        sent["stalled_at"] = at
        stalled.set()
        extra = 4 << 20
        conn.sendall(_pattern(at, extra))
        sent["total"] = at + extra

    raw_up.behaviour = behaviour
    sock, after = _open(gh)
    with sock:
        assert stalled.wait(60), "the upstream's sends never stalled"
        assert sent["stalled_at"] < STALL_BOUND_BYTES, sent
        digest = hashlib.sha256(after)
        received = len(after) + _read_until_eof(sock, digest)
    assert received == sent["total"]
    assert digest.hexdigest() == hashlib.sha256(_pattern(0, received)).hexdigest()


def _ws_frame(payload: bytes) -> bytes:
    """A masked client text frame (RFC 6455 §5.2), payload < 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    return (
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


def _ws_open(gh: GatehouseProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gh.port), timeout=10)
    sock.sendall(UPGRADE_HEAD.replace(b"tunnel.test", b"idle.test"))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data
        buf += data
    assert buf.startswith(b"HTTP/1.1 101 "), buf[:200]
    return sock


def _echo(sock: socket.socket, text: bytes) -> None:
    sock.sendall(_ws_frame(text))
    want = bytes([0x81, len(text)]) + text
    got = b""
    while len(got) < len(want):
        data = sock.recv(100)
        assert data, "tunnel closed"
        got += data
    assert got == want


def test_idle_tunnel_is_closed_and_an_active_one_is_not(gh: GatehouseProcess) -> None:
    """``idle_timeout`` (500 ms here) ends a tunnel with no byte either way, not a busy one."""
    with _ws_open(gh) as idle, _ws_open(gh) as busy:
        _echo(idle, b"hello")
        # Busy: a round trip every 150 ms for 2 s, four idle timeouts' worth.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            _echo(busy, b"tick")
            time.sleep(0.15)
        _echo(busy, b"still open")
        # By now the idle one has been closed by gatehouse: EOF, not a timeout.
        idle.settimeout(5)
        assert idle.recv(100) == b""
    assert gh.find_log(lambda r: r.get("message") == "closing idle tunnel") is not None
