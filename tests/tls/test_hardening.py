"""Listener hardening through a real gatehouse: protocol versions, cipher suites, HSTS only
over HTTPS, the handshake timeout, and a fuzzed ClientHello that never takes it down."""

from __future__ import annotations

import errno
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.gatehouse import GatehouseProcess

from .clients import https_get, s_client
from .pki import Authority

Start = Callable[..., GatehouseProcess]
HOST = "app.example.test"
#: The handshake timeout configured for these tests, seconds.
HANDSHAKE_TIMEOUT_S = 1.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls_gatehouse(start_gatehouse: Start, tmp_path: Path) -> tuple[GatehouseProcess, str, int]:
    """A TLS gatehouse with a test-CA certificate for HOST; (process, CA file, redirect port)."""
    ca = Authority()
    cafile = str(ca.write(tmp_path))
    cert, key = ca.issue(HOST).write(tmp_path, "app")
    redirect_port = _free_port()
    gh = start_gatehouse(
        {
            "insecure_server": False,
            "certificate_file": str(cert),
            "certificate_key_file": str(key),
            "http_redirect_addr": f"127.0.0.1:{redirect_port}",
            "timeout_tls_handshake": f"{HANDSHAKE_TIMEOUT_S}s",
            "routes": [
                {
                    "from": f"https://{HOST}",
                    "response": {"status": 200, "body": "hello"},
                    "allow_public_unauthenticated_access": True,
                }
            ],
        }
    )
    return gh, cafile, redirect_port


def _handshakes(port: int, *args: str) -> bool:
    out = s_client(port, "-servername", HOST, *args)
    # s_client exits 0 after a completed handshake once stdin closes; a refused one prints
    # an alert or "no protocols available"/"no cipher match" and exits non-zero.
    return out.returncode == 0 and b"BEGIN CERTIFICATE" in out.stdout


def test_only_tls12_and_tls13_are_accepted(
    tls_gatehouse: tuple[GatehouseProcess, str, int],
) -> None:
    gh, _, _ = tls_gatehouse
    # The local OpenSSL may not offer TLS 1.0/1.1 at its default security level; level 0
    # lets it try, so a refusal is the server's.
    assert not _handshakes(gh.port, "-tls1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert not _handshakes(gh.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert _handshakes(gh.port, "-tls1_2")
    assert _handshakes(gh.port, "-tls1_3")
    out = s_client(gh.port, "-servername", HOST, "-tls1_2")
    assert b"Protocol  : TLSv1.2" in out.stdout or b"TLSv1.2" in out.stdout


def test_weak_ciphers_are_refused(tls_gatehouse: tuple[GatehouseProcess, str, int]) -> None:
    gh, _, _ = tls_gatehouse
    for weak in (
        "RC4:3DES:NULL:EXPORT:aNULL:eNULL@SECLEVEL=0",
        "AES128-SHA:AES256-SHA:AES128-GCM-SHA256:AES256-GCM-SHA384@SECLEVEL=0",  # RSA kx
        "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256@SECLEVEL=0",  # CBC
        "DHE-RSA-AES128-GCM-SHA256@SECLEVEL=0",  # finite-field DHE
    ):
        assert not _handshakes(gh.port, "-tls1_2", "-cipher", weak), weak
    # The strong ones are served.
    assert _handshakes(gh.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert _handshakes(gh.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305")


def test_hsts_on_https_and_not_on_plain_http(
    tls_gatehouse: tuple[GatehouseProcess, str, int], start_gatehouse: Start
) -> None:
    gh, cafile, redirect_port = tls_gatehouse
    reply = https_get(gh.port, HOST, cafile=cafile)
    assert reply.status == 200 and reply.body == b"hello"
    assert (
        reply.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    )
    # The plain-HTTP redirect listener sends no HSTS (RFC 6797 §7.2: only over secure transport).
    with socket.create_connection(("127.0.0.1", redirect_port), 5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        redirect = s.recv(4096).decode("latin-1")
    assert redirect.startswith("HTTP/1.1 301")
    assert "strict-transport-security" not in redirect.lower()
    # Nor does a gatehouse serving plain HTTP (insecure_server).
    plain = start_gatehouse(
        {
            "insecure_server": True,
            "routes": [
                {
                    "from": f"http://{HOST}",
                    "response": {"status": 200, "body": "hello"},
                    "allow_public_unauthenticated_access": True,
                }
            ],
        }
    )
    resp = plain.get("/", HOST)
    assert resp.status_code == 200 and resp.text == "hello"
    assert "strict-transport-security" not in resp.headers


def test_a_silent_client_is_cut_after_the_handshake_timeout(
    tls_gatehouse: tuple[GatehouseProcess, str, int],
) -> None:
    gh, cafile, _ = tls_gatehouse
    with socket.create_connection(("127.0.0.1", gh.port), 10) as s:
        started = time.monotonic()
        try:
            data = s.recv(4096)  # never sends a ClientHello
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - started
    assert data == b""
    assert HANDSHAKE_TIMEOUT_S - 0.2 <= waited <= HANDSHAKE_TIMEOUT_S + 3, waited
    # A client that trickles a partial ClientHello is cut the same way.
    hello = _client_hello()
    with socket.create_connection(("127.0.0.1", gh.port), 10) as s:
        started = time.monotonic()
        s.sendall(hello[:20])
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        waited = time.monotonic() - started
    assert data == b""
    assert waited <= HANDSHAKE_TIMEOUT_S + 3, waited
    assert https_get(gh.port, HOST, cafile=cafile).status == 200


def _client_hello() -> bytes:
    """A real ClientHello record, as Python's ``ssl`` would send it, with SNI and ALPN."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def _mutations(hello: bytes, rng: random.Random) -> Iterator[bytes]:
    """Malformed, truncated and random ClientHello byte strings."""
    n = len(hello)
    for cut in sorted(rng.sample(range(1, n), 60)):  # truncated anywhere
        yield hello[:cut]
    for _ in range(100):  # a few flipped bits
        b = bytearray(hello)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        yield bytes(b)
    for _ in range(60):  # a byte run overwritten, usually inside a length field or extension
        b = bytearray(hello)
        at = rng.randrange(n)
        size = rng.randint(1, 8)
        b[at : at + size] = bytes(rng.choice((0x00, 0xFF, rng.randrange(256))) for _ in range(size))
        yield bytes(b)
    # Length fields set to their extremes: record (3..4), handshake (6..8), session id (43),
    # cipher suites (44+sid..), and the extensions block.
    for offset, width in ((3, 2), (6, 3), (43, 1)):
        for value in (
            0,
            1,
            (1 << (8 * width)) - 1,
            int.from_bytes(hello[offset : offset + width], "big") + 1,
        ):
            b = bytearray(hello)
            b[offset : offset + width] = value.to_bytes(width, "big")
            yield bytes(b)
    for _ in range(40):  # random bytes behind a plausible record header
        body = rng.randbytes(rng.randint(0, 600))
        yield b"\x16\x03\x01" + len(body).to_bytes(2, "big") + b"\x01" + body
    for _ in range(30):  # pure noise
        yield rng.randbytes(rng.randint(1, 2000))
    yield b"\x16\x03\x01\xff\xff" + rng.randbytes(70000)  # oversized record
    yield hello + hello  # two ClientHellos
    yield hello[:5] + b"\x02" + hello[6:]  # a ServerHello type
    yield b"\x15\x03\x03\x00\x02\x02\x28"  # a fatal alert first
    yield b"\x17\x03\x03\x00\x10" + bytes(16)  # application data before any handshake
    yield b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"  # plain HTTP to the TLS port
    yield b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + bytes(37)  # SSLv2-style hello


def _closed_after(port: int, payload: bytes) -> bool:
    """Send ``payload``, end our side, and report whether the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.settimeout(HANDSHAKE_TIMEOUT_S + 5)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):  # an alert, perhaps; then EOF
                pass
        except TimeoutError:
            return False
        except OSError as exc:  # reset, or already gone by our shutdown (ENOTCONN): closed
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
    return True


def _refused_names(gh: GatehouseProcess) -> list[dict[str, object]]:
    return [
        r
        for r in gh.logs()
        if r.get("message") == "tls handshake refused: server name is not ASCII"
    ]


def test_fuzzed_client_hellos_are_closed_and_never_crash_it(
    tls_gatehouse: tuple[GatehouseProcess, str, int],
) -> None:
    gh, cafile, _ = tls_gatehouse
    hello = _client_hello()
    assert hello[0] == 0x16 and hello[5] == 0x01  # a handshake record holding a ClientHello
    rng = random.Random(8446)  # fixed seed: a failure reproduces
    cases = list(_mutations(hello, rng))
    assert len(cases) >= 300
    stuck = [c for c in cases if not _closed_after(gh.port, c)]
    assert not stuck, f"{len(stuck)} connections not closed, first {stuck[0][:64]!r}"
    # Still serving, with nothing alarming logged.
    reply = https_get(gh.port, HOST, cafile=cafile)
    assert reply.status == 200 and reply.body == b"hello"
    text = gh.stderr_text()
    assert "Traceback" not in text, text[-4000:]
    bad = [r for r in gh.logs() if r.get("level") in ("error", "critical")]
    assert not bad, bad[:5]
    # A server name that is not ASCII is refused with one log line, not a traceback.
    refused = len(_refused_names(gh))
    named = hello.replace(HOST.encode(), HOST.replace(".", "\xff", 1).encode("latin-1"))
    assert named != hello and _closed_after(gh.port, named)
    gh.wait_log(lambda r: len(_refused_names(gh)) > refused, 5)
    assert "Traceback" not in gh.stderr_text()
    assert gh.proc is not None and gh.proc.poll() is None
