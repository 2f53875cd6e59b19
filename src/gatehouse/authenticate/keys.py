"""Purpose-bound keys derived from ``shared_secret`` (HKDF-SHA256, RFC 5869).

One secret serves several uses (signed redirect URLs, sign-in state); deriving a key per
purpose means a value made for one can never be accepted as another.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Secrets shorter than this (bytes) are refused: 256 bits, as Pomerium's shared_secret.
MIN_SECRET_BYTES = 32

PURPOSE_REDIRECT = "gatehouse/authenticate/redirect-url/v1"
PURPOSE_STATE = "gatehouse/authenticate/state/v1"


def derive_key(secret: bytes, purpose: str, length: int = 32) -> bytes:
    """A ``length``-byte key for ``purpose`` from the shared secret."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"shared secret must be at least {MIN_SECRET_BYTES} bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode())
    return hkdf.derive(secret)
