"""Password hashes for ``idp_users``: argon2id to make, argon2 or bcrypt to check.

Verification never short-cuts: an unknown user is checked against a dummy hash made with
the same parameters, so the time a sign-in takes does not tell whether the user exists.
Comparisons inside argon2/bcrypt are constant-time. ``hash_password_command`` is the body
of ``gatehouse hash-password`` (the CLI stays thin).
"""

from __future__ import annotations

import argparse
import getpass
import hmac
import logging
import secrets
import sys
from collections.abc import Sequence
from functools import lru_cache
from typing import TextIO

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = logging.getLogger("gatehouse.idp")

#: Longest password accepted (characters): argon2 would hash megabytes, an easy DoS.
MAX_PASSWORD_CHARS = 1024


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults follow RFC 9106's second recommended option (argon2id,
    # t=3, m=64 MiB, p=4).
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def dummy_hash_like(hashes: list[str]) -> str:
    """A hash of a random password with the same argon2 parameters as the first configured
    hash, so an unknown username costs as much as a known one (no timing oracle)."""
    for h in hashes:
        if h.startswith("$argon2"):
            try:
                params = extract_parameters(h)
            except InvalidHashError:
                continue
            return PasswordHasher.from_parameters(params).hash(secrets.token_urlsafe(16))
    return _dummy_hash()


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` in PHC string form (``$argon2id$v=19$...``).

    Raises:
        ValueError: the password is empty or longer than :data:`MAX_PASSWORD_CHARS`.
    """
    if not password or len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password must be 1..{MAX_PASSWORD_CHARS} characters")
    return _hasher().hash(password)


def is_supported_hash(password_hash: str) -> bool:
    """True for a hash this module can check (for config validation)."""
    if password_hash.startswith("$argon2"):
        return True
    return password_hash.startswith(("$2a$", "$2b$", "$2y$")) and _bcrypt() is not None


def _bcrypt() -> object | None:
    try:
        import bcrypt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return bcrypt  # type: ignore[no-any-return,unused-ignore]


def verify_password(
    password_hash: str | None, password: str, *, dummy_hash: str | None = None
) -> bool:
    """Check ``password`` against ``password_hash``; ``None`` (unknown user) is checked
    against ``dummy_hash`` (see :func:`dummy_hash_like`) so it costs the same.

    Never raises for a bad password or a malformed hash: both are simply ``False``.
    """
    if len(password) > MAX_PASSWORD_CHARS:
        password = password[:MAX_PASSWORD_CHARS] + "\x00"  # still pay for a verification
    if password_hash is None:
        _verify_argon2(dummy_hash or _dummy_hash(), password)
        return False
    if password_hash.startswith(("$2a$", "$2b$", "$2y$")):
        bcrypt = _bcrypt()
        if bcrypt is None:
            log.error("a bcrypt password hash is configured but the bcrypt package is missing")
            _verify_argon2(_dummy_hash(), password)
            return False
        try:
            ok = bool(bcrypt.checkpw(password.encode(), password_hash.encode()))  # type: ignore[attr-defined]
        except ValueError:
            return False
        return ok
    if not password_hash.startswith("$argon2"):
        log.error("unsupported password hash format in idp_users (expected argon2 or bcrypt)")
        _verify_argon2(_dummy_hash(), password)
        return False
    return _verify_argon2(password_hash, password)


def _verify_argon2(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        log.error("an idp_users password hash could not be read")
        return False


def constant_time_equals(a: str, b: str) -> bool:
    """Compare two secrets without leaking where they differ."""
    return hmac.compare_digest(a.encode(), b.encode())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatehouse hash-password",
        description="Print an argon2id hash of a password, for idp_users[].password_hash.",
    )
    parser.add_argument(
        "--stdin",
        action="store_true",
        help="read the password from the first line of stdin "
        "(default: prompt twice on a terminal, else read stdin)",
    )
    return parser


def hash_password_command(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``gatehouse hash-password [--stdin]``: print an argon2id hash for ``idp_users``.

    The password is read without echo from the terminal (asked twice), or as the first
    line of standard input when that is not a terminal or ``--stdin`` is given.
    Returns the exit status: 0 printed a hash, 1 empty/mismatched password, 2 usage.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.stdin or not stdin.isatty():
        password = stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ", stream=stderr)
        again = getpass.getpass("Repeat password: ", stream=stderr)
        if not constant_time_equals(password, again):
            print("error: the passwords do not match", file=stderr)
            return 1
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        print(f"error: {exc}", file=stderr)
        return 1
    print(hashed, file=stdout)
    return 0


__all__ = [
    "MAX_PASSWORD_CHARS",
    "constant_time_equals",
    "dummy_hash_like",
    "hash_password",
    "hash_password_command",
    "is_supported_hash",
    "verify_password",
]
