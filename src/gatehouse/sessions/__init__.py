"""Server-side sessions: the AEAD cookie handle, the record stores, the per-process cache.

Use :func:`build_session_manager` (or :class:`SessionManager` directly); everything the
request pipeline and the authenticate flow need goes through it.
"""

from .cache import SessionCache
from .cookie import CookieCodec, CookieHandle, HandoffClaim, HandoffCodec
from .keys import SessionKeys
from .manager import SessionManager, build_session_manager, session_keys_from_options
from .model import Session
from .store import SessionStore

__all__ = [
    "CookieCodec",
    "CookieHandle",
    "HandoffClaim",
    "HandoffCodec",
    "Session",
    "SessionCache",
    "SessionKeys",
    "SessionManager",
    "SessionStore",
    "build_session_manager",
    "session_keys_from_options",
]
