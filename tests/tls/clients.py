"""Independent TLS clients for the tests: Python's ``ssl``, ``openssl s_client`` and ``curl``."""

from __future__ import annotations

import socket
import ssl
import subprocess
from dataclasses import dataclass

from cryptography import x509

#: Bound on every client step, seconds.
CLIENT_TIMEOUT_S = 10.0


def peer_certificate(port: int, server_name: str | None) -> x509.Certificate:
    """The leaf the server presents for ``server_name`` (no SNI when ``None``), unverified."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), CLIENT_TIMEOUT_S) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def https_get(
    port: int,
    host: str,
    path: str = "/",
    *,
    cafile: str | None = None,
    ctx: ssl.SSLContext | None = None,
) -> Reply:
    """One GET over a verified TLS connection to 127.0.0.1:``port`` with SNI and Host ``host``."""
    if ctx is None:
        ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), CLIENT_TIMEOUT_S) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            tls.sendall(head.encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Reply(int(lines[0].split()[1]), headers, body)


def s_client(port: int, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``openssl s_client -connect 127.0.0.1:port ARGS`` (stdin closed after ``stdin``)."""
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=stdin,
        capture_output=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )


def curl(port: int, host: str, path: str = "/", *args: str) -> subprocess.CompletedProcess[bytes]:
    """``curl`` to https://host:port/path, resolved to 127.0.0.1."""
    return subprocess.run(
        [
            "curl", "-sS", "--max-time", str(int(CLIENT_TIMEOUT_S)),
            "--resolve", f"{host}:{port}:127.0.0.1",
            *args, f"https://{host}:{port}{path}",
        ],
        capture_output=True,
        timeout=CLIENT_TIMEOUT_S + 5,
        check=False,
    )
