"""Fixtures for identity tests: keys, options, sessions, and a real HTTP server for JWKS."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gatehouse.config import Options, load_text
from gatehouse.identity.keys import KeySet, load_keyset
from gatehouse.identity.wellknown import WellKnownEndpoints
from gatehouse.sessions.model import Session

from .httpserve import EndpointServer

NOW = 1_800_000_000.0


def pem_of(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, fmt: str = "pkcs8") -> str:
    private_format = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }[fmt]
    return key.private_bytes(
        serialization.Encoding.PEM, private_format, serialization.NoEncryption()
    ).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def options(yaml_body: str = "", **env: str) -> Options:
    """Options from YAML (insecure_server set so no certificate is needed)."""
    return load_text("insecure_server: true\n" + yaml_body, env=env).options


@pytest.fixture
def ec_pem() -> str:
    return pem_of(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def ec_pem2() -> str:
    return pem_of(ec.generate_private_key(ec.SECP256R1()), "traditional")


@pytest.fixture(scope="session")
def rsa_pem() -> str:
    return pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture
def keyset(ec_pem: str) -> KeySet:
    return load_keyset(options(f"signing_key: {b64(ec_pem)}\n"))


@pytest.fixture
def session() -> Session:
    return Session(
        id="sess-1",
        user_id="user-123",
        email="ada@example.com",
        name="Ada Lovelace",
        groups=("eng", "admins"),
        claims=MappingProxyType(
            {"department": "R&D", "roles": ["a", "b"], "email": "ada@example.com"}
        ),
        issued_at=NOW - 100,
        expires_at=NOW + 3600,
    )


@pytest.fixture
def serve() -> Iterator[Callable[[WellKnownEndpoints], EndpointServer]]:
    servers: list[EndpointServer] = []

    def start(endpoints: WellKnownEndpoints) -> EndpointServer:
        server = EndpointServer(endpoints)
        server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()
