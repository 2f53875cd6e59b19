"""The ``http_redirect_addr`` listener: plain HTTP redirected to HTTPS, and ACME HTTP-01.

Pomerium's meaning: every request gets a 301 to the same host and path over HTTPS, except
``/.well-known/acme-challenge/<token>`` (RFC 8555 §8.3), answered with the key
authorization of a pending autocert order (stored on disk, so whichever worker accepts the
CA's connection can answer). One request per connection; nothing else is served here, so a
small reader of the request head is enough (no bodies, no keep-alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from pathlib import Path

log = logging.getLogger("gatehouse")

#: Largest request head read, bytes (a redirect needs only the request line and Host).
REDIRECT_MAX_HEAD_BYTES = 8 * 1024
#: Longest wait for the request head, seconds.
REDIRECT_READ_TIMEOUT_S = 10.0
#: RFC 8555 §8.3's path prefix.
ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
#: A Host header we are willing to put into a Location: a DNS name or an IP literal, port
#: optional.
_HOST = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


class RedirectServer:
    """Serves the redirect listener on an already-bound socket."""

    def __init__(self, https_port: int, challenge_dir: Path | None) -> None:
        #: Added to the Location when not 443, so a redirect reaches the TLS listener.
        self.https_port = https_port
        self.challenge_dir = challenge_dir
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(
            self._handle, sock=sock, limit=REDIRECT_MAX_HEAD_BYTES
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REDIRECT_READ_TIMEOUT_S)
            writer.write(self.respond(head))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    def respond(self, head: bytes) -> bytes:
        """The whole response to one request head (bytes in, bytes out: testable alone)."""
        if len(head) > REDIRECT_MAX_HEAD_BYTES:
            return _response(431, b"request header too large\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[1].startswith("/"):
            return _response(400, b"bad request\n")
        target = parts[1]
        host = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "host":
                host = value.strip()
                break
        if target.startswith(ACME_CHALLENGE_PREFIX) and self.challenge_dir is not None:
            answer = challenge_answer(self.challenge_dir, target[len(ACME_CHALLENGE_PREFIX) :])
            if answer is not None:
                return _response(200, answer)
            return _response(404, b"not found\n")
        if not _HOST.match(host):
            return _response(400, b"missing or invalid Host\n")
        name = host
        if not host.endswith("]") and ":" in host:
            name = host.rpartition(":")[0]
        elif host.startswith("[") and "]:" in host:
            name = host.rpartition(":")[0]
        port = "" if self.https_port == 443 else f":{self.https_port}"
        location = f"https://{name}{port}{target}"
        if any(c in location for c in "\r\n"):
            return _response(400, b"bad request\n")
        return _response(301, b"", location=location)


_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    400: "Bad Request",
    404: "Not Found",
    431: "Request Header Fields Too Large",
}


def _response(status: int, body: bytes, *, location: str | None = None) -> bytes:
    head = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "Connection: close",
        f"Content-Length: {len(body)}",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if location is not None:
        head.append(f"Location: {location}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


#: Tokens are base64url (RFC 8555 §8.1); anything else is not a challenge of ours.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def challenge_answer(directory: Path, token: str) -> bytes | None:
    """The key authorization for an HTTP-01 ``token``, if an order of ours is waiting on it
    (the ACME client writes it under ``challenges/``). Here, not in :mod:`.acme`, so the
    redirect listener does not import the ACME client library."""
    if not _TOKEN.match(token):
        return None
    try:
        return (directory / "challenges" / token).read_bytes()
    except OSError:
        return None
