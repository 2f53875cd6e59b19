"""The IdP client's transport (gatehouse's pool under httpx) against real loopback servers.

Each server is a raw asyncio socket server answering with scripted bytes, so the tests can
misbehave as a hostile or broken IdP would: oversized, trickled, compressed, malformed or
never-ending answers, closed keep-alive connections, an untrusted certificate.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gatehouse.authenticate.http_client import new_http_client, trusted_ca_pem
from gatehouse.config import load_text
from gatehouse.errors import ConfigError
from gatehouse.http.httpx_transport import PooledTransport
from tls.pki import Authority

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]


@dataclass
class Server:
    """Counts connections, keeps each request head and body, answers with ``respond``."""

    respond: Respond
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                if not await self.respond(reader, writer, head):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(body: bytes, *, extra: bytes = b"", status: bytes = b"200 OK") -> Respond:
    async def respond(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _h: bytes) -> bool:
        w.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, len(body), extra, body)
        )
        await w.drain()
        return True

    return respond


_LISTENERS: list[asyncio.Server] = []


async def serve(respond: Respond, tls: ssl.SSLContext | None = None) -> tuple[Server, str]:
    """A server on a free loopback port, closed when :func:`run` ends."""
    server = Server(respond)
    listener = await asyncio.start_server(server._handle, "127.0.0.1", 0, ssl=tls)
    _LISTENERS.append(listener)
    server.port = listener.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    return server, f"{scheme}://127.0.0.1:{server.port}"


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        try:
            await asyncio.wait_for(test(), 30)
        finally:
            while _LISTENERS:
                listener = _LISTENERS.pop()
                listener.close()
                await listener.wait_closed()
            await asyncio.sleep(0.05)  # let closed transports release their sockets

    asyncio.run(bounded())


def test_keep_alive_connection_is_reused_and_forms_are_sent() -> None:
    async def main() -> None:
        server, url = await serve(answer(b'{"ok":true}'))
        async with new_http_client() as client:
            for i in range(3):
                response = await client.post(url + "/token", data={"code": f"c{i}"})
                assert response.status_code == 200
                assert response.json() == {"ok": True}
            got = await client.get(url + "/jwks")
            assert got.headers["content-type"] == "application/json"
        assert server.connections == 1
        assert server.requests[0].startswith(b"POST /token HTTP/1.1\r\n")
        assert server.requests[0].endswith(b"\r\n\r\ncode=c0")
        assert b"content-length: 7\r\n" in server.requests[0].lower()
        assert b"accept-encoding: identity\r\n" in server.requests[3].lower()

    run(main)


def test_post_form_sends_what_post_sends_and_is_timed() -> None:
    # The token call's direct path: same bytes on the wire as client.post, no cookie kept,
    # still reported to the metrics observer under its operation's name.
    async def main() -> None:
        server, url = await serve(answer(b'{"ok":1}', extra=b"Set-Cookie: idp=1\r\n"))
        seen: list[tuple[str, str, bool]] = []
        client = new_http_client(observe=lambda dep, op, _s, ok: seen.append((dep, op, ok)))
        async with client:
            form = (("grant_type", "authorization_code"), ("code", "a b&c"))
            auth = (("Authorization", "Basic eDp5"),)
            direct = await client.post_form(url + "/token", form, auth, "token")
            via_httpx = await client.post(url + "/token", data=dict(form), headers=dict(auth))
            assert direct.status_code == via_httpx.status_code == 200
            assert direct.json() == {"ok": 1}
            assert not client.cookies
        first, second = server.requests
        assert first == second
        assert first.endswith(b"\r\n\r\ngrant_type=authorization_code&code=a+b%26c")
        assert b"content-type: application/x-www-form-urlencoded\r\n" in first.lower()
        assert b"accept-encoding: identity\r\n" in first.lower()
        assert seen == [("idp", "token", True), ("idp", "other", True)]

    run(main)


def nagle_answer(body: bytes) -> Respond:
    """Head and body in two sends with Nagle's algorithm on, as Python's ``http.server``
    answers (the body waits in the server's kernel until the head is acknowledged)."""

    async def respond(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _h: bytes) -> bool:
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        await w.drain()
        w.write(body)
        await w.drain()
        return True

    return respond


def test_head_and_body_in_two_sends_are_read_whole_on_one_connection() -> None:
    # The transport acknowledges an incomplete response at once (TCP_QUICKACK) so such a
    # server sends the body without waiting for the delayed-ACK timer; the bytes read
    # must be the same either way. (How long it takes is bench/signin_bench.py's to show.)
    async def main() -> None:
        server, url = await serve(nagle_answer(b'{"keys":[]}' + b" " * 3000))
        async with new_http_client() as client:
            for i in range(5):
                response = await client.post(url + "/token", data={"code": f"c{i}"})
                assert response.status_code == 200
                assert response.content == b'{"keys":[]}' + b" " * 3000
        assert server.connections == 1

    run(main)


def test_oversized_bodies_are_refused_declared_or_streamed() -> None:
    async def chunked(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _h: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):  # 100 x 4 KiB: past the 64 KiB limit below
            w.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
            await w.drain()
        return False

    async def main() -> None:
        _, declared = await serve(answer(b"y" * 70_000))
        _, streamed = await serve(chunked)
        async with httpx.AsyncClient(transport=PooledTransport(max_response_bytes=65536)) as c:
            for url in (declared, streamed):
                with pytest.raises(httpx.ReadError, match="larger than 65536"):
                    await c.get(url)
            # The same client still works for a good answer.
            _, good = await serve(answer(b"{}"))
            assert (await c.get(good)).status_code == 200

    run(main)


def test_silent_and_trickling_servers_hit_the_read_deadline() -> None:
    async def silent(r: asyncio.StreamReader, _w: asyncio.StreamWriter, _h: bytes) -> bool:
        await r.read()  # until the client gives up
        return False

    async def trickle(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _h: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            w.write(b"x")
            await w.drain()
            await asyncio.sleep(0.05)
        return False

    async def main() -> None:
        _, quiet = await serve(silent)
        _, slow = await serve(trickle)
        timeout = httpx.Timeout(0.5, connect=1.0)
        async with new_http_client(timeout) as client:
            for url in (quiet, slow):
                started = time.monotonic()
                with pytest.raises(httpx.ReadTimeout):
                    await client.get(url)
                assert time.monotonic() - started < 2.0

    run(main)


def test_header_injection_from_a_token_is_refused_before_sending() -> None:
    async def main() -> None:
        server, url = await serve(answer(b"{}"))
        async with new_http_client() as client:
            with pytest.raises(httpx.LocalProtocolError):
                await client.get(url, headers={"Authorization": "Bearer x\r\nX-Evil: 1"})
        assert server.requests == []

    run(main)


def test_compressed_and_malformed_answers_are_errors() -> None:
    async def garbage(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _h: bytes) -> bool:
        w.write(b"HTTP/1.1 2xx nonsense\r\n\r\n")
        await w.drain()
        return False

    async def main() -> None:
        _, zipped = await serve(answer(gzip.compress(b"{}"), extra=b"Content-Encoding: gzip\r\n"))
        _, broken = await serve(garbage)
        async with new_http_client() as client:
            with pytest.raises(httpx.DecodingError, match="gzip"):
                await client.get(zipped)
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(broken)

    run(main)


def test_closed_keep_alive_connection_and_refused_port() -> None:
    async def once(r: asyncio.StreamReader, w: asyncio.StreamWriter, h: bytes) -> bool:
        await answer(b"{}")(r, w, h)
        return False  # close after each answer, without saying so

    async def main() -> None:
        server, url = await serve(once)
        async with new_http_client() as client:
            for _ in range(3):
                assert (await client.get(url)).status_code == 200
            assert server.connections == 3
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()  # bound, never listening: connections are refused
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")

    run(main)


def test_idp_cookies_are_not_kept() -> None:
    async def main() -> None:
        server, url = await serve(answer(b"{}", extra=b"Set-Cookie: sid=alice; Path=/\r\n"))
        async with new_http_client() as client:
            await client.get(url + "/userinfo")
            await client.get(url + "/userinfo")
        assert all(b"cookie" not in r.lower() for r in server.requests)

    run(main)


def test_tls_peer_must_be_trusted() -> None:
    ca = Authority()
    leaf = ca.issue("127.0.0.1")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*_write(leaf.cert_pem, leaf.key_pem))

    async def main() -> None:
        _, url = await serve(answer(b'{"tls":1}'), tls)
        async with new_http_client() as untrusting:
            with pytest.raises(httpx.ConnectError, match="not trusted"):
                await untrusting.get(url)
        async with new_http_client(trusted_ca_pem=ca.cert_pem) as trusting:
            assert (await trusting.get(url)).json() == {"tls": 1}

    run(main)


def _write(cert: bytes, key: bytes) -> tuple[str, str]:
    import tempfile

    directory = tempfile.mkdtemp()
    paths = (f"{directory}/leaf.crt", f"{directory}/leaf.key")
    for path, data in zip(paths, (cert, key), strict=True):
        with open(path, "wb") as f:
            f.write(data)
    return paths


def test_certificate_authority_option_is_trusted_for_the_idp(tmp_path: Path) -> None:
    ca = Authority()
    path = ca.write(tmp_path)
    for yaml in (f"certificate_authority_file: {path}\n", f"certificate_authority: {path}\n"):
        options = load_text("insecure_server: true\n" + yaml, env={}).options
        assert trusted_ca_pem(options) == ca.cert_pem
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    options = load_text(f"insecure_server: true\ncertificate_authority_file: {garbage}\n").options
    with pytest.raises(ConfigError, match="certificate_authority"):
        new_http_client(trusted_ca_pem=trusted_ca_pem(options))
