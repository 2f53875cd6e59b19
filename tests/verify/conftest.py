"""Fixtures for SDK tests: a JWKS server on loopback whose answers a test controls."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gatehouse.identity.keys import KeySet, build_keyset, make_key


class JwksServer:
    """Serves ``/jwks.json`` from :attr:`doc` with :attr:`cache_control`; counts fetches."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = {"keys": []}
        self.cache_control: str | None = "max-age=60"
        self.status = 200
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps(outer.doc).encode() if outer.doc is not None else b"<html>"
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                if outer.cache_control:
                    self.send_header("Cache-Control", outer.cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def publish(self, *keysets: KeySet) -> None:
        self.doc = {"keys": [k for ks in keysets for k in ks.jwks()["keys"]]}

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def keyset_of(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> KeySet:
    return build_keyset([make_key(key, "test")])


@pytest.fixture
def ec_keyset() -> KeySet:
    return keyset_of(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def ec_keyset2() -> KeySet:
    return keyset_of(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def rsa_keyset(rsa_key: rsa.RSAPrivateKey) -> KeySet:
    return keyset_of(rsa_key)


def public_pem(ks: KeySet) -> bytes:
    key = ks.signer().private_key
    assert key is not None
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
