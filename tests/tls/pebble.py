"""Let's Encrypt's ACME test server, pebble, on loopback for the autocert tests.

:class:`Pebble` starts ``pebble-challtestsrv`` as the DNS server pebble resolves every name
with (all answer 127.0.0.1, so route hosts such as ``app.example.test`` reach gatehouse's
HTTP-01 listener), then ``pebble`` with an HTTPS certificate from a test CA, and waits until
its directory answers. Pebble validates HTTP-01 on one fixed port (``http_port``), which the
test gives gatehouse as ``http_redirect_addr``, and TLS-ALPN-01 on another (``tls_port``),
which a test gives gatehouse as its ``address``; ports that pebble must know in advance are
picked free just before use (pebble cannot bind port 0 and report it). Validation is real:
``PEBBLE_VA_ALWAYS_VALID`` is never passed on.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import IO

import pytest
from cryptography import x509

from support import wait_until

from .pki import Authority


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pebble:
    """One pebble (and its DNS) in ``directory``; :meth:`start` / :meth:`stop`, restartable."""

    def __init__(
        self, directory: Path, port: int | None = None, tls_port: int | None = None
    ) -> None:
        if shutil.which("pebble") is None or shutil.which("pebble-challtestsrv") is None:
            pytest.skip("pebble is not installed (Debian package pebble; scripts/test installs it)")
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = Authority("pebble HTTPS test CA")
        self.ca_file = self.ca.write(directory, "pebble-https-ca")
        cert, key = self.ca.issue("localhost", "127.0.0.1").write(directory, "pebble-https")
        self.port = port or free_port()
        self.management_port = free_port()
        self.http_port = free_port()
        self.tls_port = tls_port or free_port()
        self.dns_port = free_port(socket.SOCK_DGRAM)
        self.config = directory / "pebble.json"
        self.config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.port}",
                        "managementListenAddress": f"127.0.0.1:{self.management_port}",
                        "certificate": str(cert),
                        "privateKey": str(key),
                        "httpPort": self.http_port,
                        "tlsPort": self.tls_port,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = directory / "pebble.log"

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> Pebble:
        # The children keep their own copy of the descriptor; ours is closed at once.
        with self.log.open("ab") as log:
            self._spawn(log)
        wait_until(self._answers, 20, 0.1, what="pebble's directory")
        return self

    def _spawn(self, log: IO[bytes]) -> None:
        self.procs.append(
            subprocess.Popen(
                [
                    "pebble-challtestsrv",
                    "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                    "-dns01", f"127.0.0.1:{self.dns_port}",
                    "-http01", "", "-https01", "", "-tlsalpn01", "",
                    "-management", f"127.0.0.1:{free_port()}",
                ],
                stdout=log, stderr=log,
            )
        )
        env = {
            **{k: v for k, v in os.environ.items() if k != "PEBBLE_VA_ALWAYS_VALID"},
            # No random sleeps before validating, no deliberately rejected nonces.
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
        }
        self.procs.append(
            subprocess.Popen(
                ["pebble", "-config", str(self.config), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
                stdout=log, stderr=log, env=env, cwd=self.dir,
            )
        )

    def _answers(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError("pebble exited:\n" + self.log.read_text())
        try:
            self._get(f"https://127.0.0.1:{self.port}/dir")
        except OSError:
            return False
        return True

    def _get(self, url: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return bytes(r.read())

    def root(self) -> x509.Certificate:
        """The root that signs this pebble run's certificates (new at every pebble start)."""
        return x509.load_pem_x509_certificate(
            self._get(f"https://127.0.0.1:{self.management_port}/roots/0")
        )

    def intermediate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(
            self._get(f"https://127.0.0.1:{self.management_port}/intermediates/0")
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
