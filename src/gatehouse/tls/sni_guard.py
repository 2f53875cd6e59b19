"""Quiet, logged refusal of a ClientHello whose server name is not ASCII.

CPython decodes the SNI name as ASCII before calling ``sni_callback``; bytes that do not
decode (a fuzzer's, or a broken client's) make it fail the handshake (fatal alert, so the
connection is refused: fail closed) and report the ``UnicodeDecodeError`` through
``sys.unraisablehook``, which by default prints a traceback to stderr. No Python code runs
before that decode, so the hook is the one place to turn it into a single log line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("gatehouse")

_installed = False


def _is_bad_server_name(args: Any) -> bool:
    # The unraisable object CPython passes is the raw server name (bytes).
    return isinstance(args.exc_value, UnicodeDecodeError) and isinstance(args.object, bytes)


def install() -> None:
    """Route bad-SNI reports to the log (once per process; other reports are untouched)."""
    global _installed
    if _installed:
        return
    previous = sys.unraisablehook

    def hook(args: Any) -> None:
        if _is_bad_server_name(args):
            log.info(
                "tls handshake refused: server name is not ASCII",
                extra={"server_name": args.object[:255].hex()},
            )
            return
        previous(args)

    sys.unraisablehook = hook
    _installed = True
