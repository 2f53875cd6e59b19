"""Password hashing, verification and the hash-password command."""

from __future__ import annotations

import io

import pytest

from gatehouse.idp import hash_password, hash_password_command, is_supported_hash, verify_password


def test_hash_and_verify() -> None:
    h = hash_password("pa55word")
    assert h.startswith("$argon2id$") and is_supported_hash(h)
    assert verify_password(h, "pa55word")
    assert not verify_password(h, "pa55worD")
    assert not verify_password(None, "pa55word")  # unknown user: still a verification
    assert not verify_password("not-a-hash", "x")
    assert not verify_password("$argon2id$garbage", "x")
    with pytest.raises(ValueError):
        hash_password("")


def test_hash_password_command_reads_stdin() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert hash_password_command([], stdin=io.StringIO("s3cret\n"), stdout=out, stderr=err) == 0
    assert verify_password(out.getvalue().strip(), "s3cret")
    assert hash_password_command(["--stdin"], stdin=io.StringIO("\n"), stdout=out, stderr=err) == 1
    assert (
        hash_password_command(["--bogus"], stdin=io.StringIO(""), stdout=out, stderr=io.StringIO())
        == 2
    )
