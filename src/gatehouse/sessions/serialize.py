"""Versioned JSON for session records, with the IdP's tokens encrypted at rest.

Stored form (``v`` is the format version; readers refuse versions they do not know)::

    {"v": 1, "id": ..., "user_id": ..., "email": ..., "name": ..., "groups": [...],
     "claims": {...}, "issued_at": ..., "expires_at": ..., "last_refresh_at": ...,
     "tokens_expire_at": ..., "idp_id": ..., "tokens": base64url(nonce || AES-GCM(tokens JSON))}

(``idp_id`` may be missing from records written before per-route clients: "".)

The tokens' associated data is the session id, so ciphertext moved from one record to
another does not decrypt. ``last_seen_at`` is not part of the record: stores keep it apart.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .model import Session

FORMAT_VERSION = 1
_NONCE_BYTES = 12


class CorruptRecord(Exception):
    """A stored record that cannot be read (bad JSON, unknown version, wrong key).

    Internal to ``sessions``: stores treat such a record as absent (fail closed).
    """


class RecordCodec:
    """Turn sessions into stored text and back, encrypting tokens with ``tokens_key``."""

    __slots__ = ("_aead",)

    def __init__(self, tokens_key: bytes) -> None:
        self._aead = AESGCM(tokens_key)

    def dumps(self, session: Session) -> str:
        tokens = json.dumps(
            [session.id_token, session.access_token, session.refresh_token],
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, tokens, session.id.encode())
        doc = {
            "v": FORMAT_VERSION,
            "id": session.id,
            "user_id": session.user_id,
            "email": session.email,
            "name": session.name,
            "groups": list(session.groups),
            "claims": dict(session.claims),
            "issued_at": session.issued_at,
            "expires_at": session.expires_at,
            "last_refresh_at": session.last_refresh_at,
            "tokens_expire_at": session.tokens_expire_at,
            "idp_id": session.idp_id,
            "tokens": base64.urlsafe_b64encode(sealed).decode(),
        }
        return json.dumps(doc, separators=(",", ":"))

    def loads(self, text: str | bytes, *, last_seen_at: float = 0.0) -> Session:
        """Parse a stored record.

        Raises:
            CorruptRecord: anything wrong with it.
        """
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION:
                raise CorruptRecord("unknown record version")
            session_id = _str(doc, "id")
            sealed = base64.urlsafe_b64decode(_str(doc, "tokens"))
            plain = self._aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], session_id.encode()
            )
            id_token, access_token, refresh_token = json.loads(plain)
            groups = doc.get("groups", [])
            claims = doc.get("claims", {})
            if not isinstance(groups, list) or not isinstance(claims, dict):
                raise CorruptRecord("bad groups or claims")
            return Session(
                id=session_id,
                user_id=_str(doc, "user_id"),
                email=_str(doc, "email"),
                name=_str(doc, "name"),
                groups=tuple(str(g) for g in groups),
                claims=MappingProxyType(claims),
                issued_at=float(doc["issued_at"]),
                expires_at=float(doc["expires_at"]),
                last_refresh_at=float(doc["last_refresh_at"]),
                last_seen_at=float(last_seen_at),
                tokens_expire_at=float(doc["tokens_expire_at"]),
                id_token=str(id_token),
                access_token=str(access_token),
                refresh_token=str(refresh_token),
                # Records written before per-route clients: the global client.
                idp_id=str(doc.get("idp_id", "")),
            )
        except CorruptRecord:
            raise
        except (ValueError, TypeError, KeyError, InvalidTag, binascii.Error) as exc:
            # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
            raise CorruptRecord(type(exc).__name__) from exc


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise CorruptRecord(f"{key} is not a string")
    return value
