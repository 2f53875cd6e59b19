"""The built-in OpenID provider (``idp_provider: builtin``), served on the authenticate host.

Public API: :class:`BuiltinProvider` (mount its :meth:`~BuiltinProvider.routes`),
:class:`ClientRegistration`, the state stores, and the password helpers used by
``gatehouse hash-password``.
"""

from __future__ import annotations

from .clients import ClientRegistration
from .passwords import hash_password, hash_password_command, is_supported_hash, verify_password
from .provider import DEFAULT_BASE_PATH, BuiltinProvider, IdpSettings
from .store import MemoryStateStore, SQLiteStateStore, StateStore
from .throttle import ThrottlePolicy

__all__ = [
    "DEFAULT_BASE_PATH",
    "BuiltinProvider",
    "ClientRegistration",
    "IdpSettings",
    "MemoryStateStore",
    "SQLiteStateStore",
    "StateStore",
    "ThrottlePolicy",
    "hash_password",
    "hash_password_command",
    "is_supported_hash",
    "verify_password",
]
