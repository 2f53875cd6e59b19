"""Session secrets: decode ``cookie_secret`` and derive one sub-key per purpose.

Pomerium's ``cookie_secret`` is base64 of 32 random bytes; we accept that (standard or
URL-safe alphabet, padded or not). One secret never serves two purposes: HKDF-SHA256
(RFC 5869) derives independent 256-bit keys for the cookie handle, the handoff token and
tokens encrypted at rest, so breaking (or rotating the use of) one does not touch the others.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..datadir import create_once
from ..errors import ConfigError

#: Length of the decoded secret and of every derived key, in bytes (AES-256).
SECRET_BYTES = 32

_SALT = b"gatehouse sessions v1"
_INFO_COOKIE = b"gatehouse cookie handle v1"
_INFO_HANDOFF = b"gatehouse handoff token v1"
_INFO_TOKENS = b"gatehouse tokens at rest v1"


def decode_secret(value: str, *, name: str = "cookie_secret") -> bytes:
    """Decode a base64 secret of exactly 32 bytes.

    Raises:
        ConfigError: not base64, or not 32 bytes once decoded.
    """
    text = value.strip()
    padded = text + "=" * (-len(text) % 4)
    for alphabet in (b"+/", b"-_"):
        try:
            raw = base64.b64decode(padded, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == SECRET_BYTES:
            return raw
    raise ConfigError(
        [
            f"{name}: expected base64 of {SECRET_BYTES} random bytes "
            "(`head -c32 /dev/urandom | base64`)"
        ]
    )


def load_or_create_secret(path: Path) -> bytes:
    """Read a generated secret from ``path``, creating it (mode 0600) on first use.

    Used for the embedded default when no ``cookie_secret`` is configured, so that sessions
    survive restarts and every worker process on the machine agrees on the key
    (:func:`gatehouse.datadir.create_once`).
    """
    try:
        text = create_once(
            path, lambda: (base64.b64encode(os.urandom(SECRET_BYTES)).decode() + "\n").encode()
        )
    except OSError as exc:
        raise ConfigError([f"{path}: cannot create the generated secret ({exc.strerror})"]) from exc
    return decode_secret(text.decode().strip(), name=str(path))


def derive_key(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of ``secret`` for one purpose (``info``)."""
    return HKDF(algorithm=hashes.SHA256(), length=SECRET_BYTES, salt=_SALT, info=info).derive(
        secret
    )


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The three independent keys derived from one cookie secret."""

    cookie: bytes
    handoff: bytes
    tokens: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> SessionKeys:
        if len(secret) != SECRET_BYTES:
            raise ConfigError([f"cookie secret must be {SECRET_BYTES} bytes"])
        return cls(
            cookie=derive_key(secret, _INFO_COOKIE),
            handoff=derive_key(secret, _INFO_HANDOFF),
            tokens=derive_key(secret, _INFO_TOKENS),
        )

    def __repr__(self) -> str:  # never print key material in logs or tracebacks
        return "SessionKeys(<redacted>)"
