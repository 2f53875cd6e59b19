"""Signing keys for assertions: load, derive, generate, and choose the signer over time.

Sources, in the order :func:`load_keyset` tries them:

1. ``signing_key`` (a PEM, or the base64 of one) or ``signing_key_file``. A PEM may hold
   several keys: the first signs, every one is published (the classic rotation).
2. ``signing_keys`` (gatehouse addition): entries ``{key|file, sign_from}``. All are
   published; the signer is the newest key whose ``sign_from`` has passed, so a rotation
   is one config change made ahead of time (see
   :class:`~gatehouse.config.identity.SigningKeyEntry`).
3. Nothing configured but ``shared_secret``: a P-256 key derived from it exactly as Pomerium
   does (HKDF-SHA256, info ``derived-jwt-signing-key``, Go 1.19 ``ecdsa.GenerateKey``
   reduction), so gatehouse and Pomerium replicas sharing a secret publish the same key.
4. Nothing at all: a key generated once and kept in ``data_dir`` (mode 0600), with a warning.

Rotation procedure (verifiers cache the JWKS: Grafana for the smaller of its ``cache_ttl``
and our ``max-age=60``; this SDK for ``max-age``):

1. Publish the new key first: add it under ``signing_keys`` with ``sign_from`` at least a few
   minutes ahead (longer than any verifier's cache), or append it to the PEM bundle.
2. From ``sign_from`` on it signs (with a bundle: move it first after the wait).
3. Drop the old key once the last token it signed has expired: 300 s after the switch,
   plus the verifiers' clock leeway (60 s in this SDK).

EC P-256 keys sign ES256, RSA keys (>= 2048 bits) RS256; anything else is a
:class:`~gatehouse.errors.ConfigError`. ``kid`` is the hex RFC 7638 SHA-256 thumbprint,
as Pomerium computes it.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gatehouse.datadir import create_once
from gatehouse.errors import ConfigError

if TYPE_CHECKING:
    from gatehouse.config import Options

log = logging.getLogger("gatehouse.identity")

#: RSA keys shorter than this are refused (RFC 7518 §3.3 requires 2048 bits for RS256).
MIN_RSA_BITS = 2048
#: HKDF info string Pomerium uses to derive the JWT signing key from the shared secret.
DERIVED_KEY_INFO = b"derived-jwt-signing-key"
#: Name of the generated key inside ``data_dir``.
GENERATED_KEY_FILENAME = "signing_key.pem"

Alg = Literal["ES256", "RS256"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One published key, possibly able to sign."""

    kid: str
    alg: Alg
    #: The public JWK (RFC 7517) as published, with ``kid``, ``alg`` and ``use``.
    jwk: dict[str, str] = field(compare=False)
    #: ``None`` for a key that is only published (a public key in a PEM).
    private_key: PrivateKey | None = field(default=None, repr=False, compare=False)
    #: Where the key came from, for logs and errors (never the key itself).
    source: str = ""


class KeySet:
    """Every published key plus the schedule of which one signs when.

    Immutable once built; a config reload builds a new one.
    """

    __slots__ = ("_floor", "_keys", "_next_change", "_now_signer", "_schedule", "_times")

    def __init__(
        self, keys: Sequence[SigningKey], schedule: Sequence[tuple[float, SigningKey]]
    ) -> None:
        if not schedule:
            raise ConfigError(["no signing key: at least one private key is needed"])
        seen: dict[str, SigningKey] = {}
        for k in keys:
            seen.setdefault(k.kid, k)
        self._keys: tuple[SigningKey, ...] = tuple(seen.values())
        # Sorted by time; at equal times the first configured key wins (stable sort).
        ordered = sorted(schedule, key=lambda item: item[0])
        self._times = [t for t, _ in ordered]
        self._schedule = [k for _, k in ordered]
        # The signer for "now" is kept with the interval [_floor, _next_change) it is valid in.
        self._now_signer: SigningKey | None = None
        self._floor = float("inf")
        self._next_change = -float("inf")

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every published key, signer candidates first, without duplicates."""
        return self._keys

    @property
    def schedule(self) -> tuple[tuple[float, SigningKey], ...]:
        """``(signs from, key)`` in time order (``-inf``: from the start), for the console."""
        return tuple(zip(self._times, self._schedule, strict=True))

    def signer(self, now: float | None = None) -> SigningKey:
        """The key that signs at ``now``: the newest whose ``sign_from`` has passed.

        Cheap on the hot path: the answer is kept until the next scheduled change.

        Raises:
            ConfigError: no key may sign yet (every ``sign_from`` is in the future).
        """
        t = time.time() if now is None else now
        cached = self._now_signer
        if cached is not None and self._floor <= t < self._next_change:
            return cached
        i = bisect.bisect_right(self._times, t) - 1
        if i < 0:
            raise ConfigError(["no signing key may sign yet: every sign_from is in the future"])
        # Among keys with the same (latest passed) time, the first configured one signs.
        first = bisect.bisect_left(self._times, self._times[i])
        key = self._schedule[first]
        self._now_signer = key
        self._floor = self._times[i]
        self._next_change = self._times[i + 1] if i + 1 < len(self._times) else float("inf")
        return key

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set document (RFC 7517 §5)."""
        return {"keys": [dict(k.jwk) for k in self._keys]}


def public_jwk(public_key: PublicKey) -> tuple[Alg, dict[str, str]]:
    """The RFC 7517 members of a public key (no ``kid``/``alg``/``use`` yet)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        nums = public_key.public_numbers()
        # RFC 7518 §6.2.1.2: coordinates are the full 32 bytes for P-256, leading zeros kept.
        return "ES256", {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(nums.x.to_bytes(32, "big")),
            "y": b64url(nums.y.to_bytes(32, "big")),
        }
    rnums = public_key.public_numbers()
    return "RS256", {
        "kty": "RSA",
        "n": b64url(rnums.n.to_bytes((rnums.n.bit_length() + 7) // 8, "big")),
        "e": b64url(rnums.e.to_bytes((rnums.e.bit_length() + 7) // 8, "big")),
    }


def thumbprint(jwk: dict[str, str]) -> str:
    """Hex SHA-256 JWK thumbprint (RFC 7638 §3): required members, sorted, no spaces."""
    required = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def make_key(key: PrivateKey | PublicKey, source: str) -> SigningKey:
    """Check a key's type and size and wrap it with its JWK and kid.

    Raises:
        ConfigError: not P-256 EC or RSA >= 2048 bits.
    """
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(
                [f"{source}: EC key on curve {key.curve.name}; only P-256 (ES256) is supported"]
            )
    elif isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                [f"{source}: RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required"]
            )
    else:
        raise ConfigError(
            [
                f"{source}: unsupported key type {type(key).__name__.lstrip('_')}; "
                "use an EC P-256 key (ES256) or an RSA key of at least 2048 bits (RS256)"
            ]
        )
    private: PrivateKey | None = None
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        private = key
        pub: PublicKey = key.public_key()
    else:
        pub = key
    alg, jwk = public_jwk(pub)
    kid = thumbprint(jwk)
    jwk.update(kid=kid, alg=alg, use="sig")
    return SigningKey(kid=kid, alg=alg, jwk=jwk, private_key=private, source=source)


def parse_pem_keys(data: bytes, source: str) -> list[SigningKey]:
    """Every key in a PEM bundle, in order. The first must be a private key.

    Raises:
        ConfigError: no PEM block, an unreadable or encrypted key, or an unsupported key.
    """
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise ConfigError(
            [f"{source}: no PEM key found (expected -----BEGIN ... PRIVATE KEY-----)"]
        )
    out: list[SigningKey] = []
    for n, block in enumerate(blocks, 1):
        label = block.split(b"-----", 2)[1].decode("ascii", "replace").removeprefix("BEGIN ")
        where = f"{source} (PEM block {n}, {label})"
        if label == "ENCRYPTED PRIVATE KEY":
            raise ConfigError([f"{where}: encrypted private keys are not supported"])
        try:
            if label.endswith("PRIVATE KEY"):
                key: object = serialization.load_pem_private_key(block, password=None)
            elif label.endswith("PUBLIC KEY"):
                key = serialization.load_pem_public_key(block)
            else:
                raise ConfigError([f"{where}: not a private or public key"])
        except (ValueError, TypeError) as exc:
            # cryptography's messages describe the format problem, never the key bytes.
            raise ConfigError([f"{where}: cannot read key: {exc}"]) from exc
        if n == 1 and not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                raise ConfigError([f"{where}: the first key must be a private key (it signs)"])
        out.append(make_key(key, where))  # type: ignore[arg-type]
    return out


def decode_key_text(text: str) -> bytes:
    """``signing_key`` text to PEM bytes: base64 of a PEM (as Pomerium) or a raw PEM."""
    text = text.strip()
    if "-----BEGIN" in text:
        return text.encode()
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return text.encode()


def _read_file(path_text: str, what: str) -> bytes:
    path = Path(path_text).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{what}: cannot read {path}: {exc.strerror}"]) from exc


# -- shared secret derivation -----------------------------------------------------------


def shared_secret_bytes(secret_text: str) -> bytes:
    """The shared secret's bytes: standard base64 as Pomerium decodes it, else the raw text.

    Pomerium refuses a secret that is not base64; gatehouse accepts it (as UTF-8) but such
    a secret cannot give the same derived key as a Pomerium replica.
    """
    try:
        return base64.b64decode(secret_text, validate=True)
    except (binascii.Error, ValueError):
        return secret_text.encode()


def derive_p256_key(secret: bytes) -> ec.EllipticCurvePrivateKey:
    """P-256 key from a secret, bit-for-bit as Pomerium's ``deriveSigningKey``.

    HKDF-SHA256 (no salt, info ``derived-jwt-signing-key``) is read as a stream of
    N.BitLen()/8 + 8 = 40 bytes, and the scalar is ``int(b) mod (N-1) + 1``: Go 1.19
    ``ecdsa.GenerateKey`` (FIPS 186-5 A.2.1), kept by Pomerium as ``keygen.ECDSALegacy``.
    HKDF's output prefix does not depend on the requested length, so deriving 40 bytes
    equals reading the first 40 bytes of Go's HKDF reader.
    """
    stream = HKDF(algorithm=hashes.SHA256(), length=40, salt=None, info=DERIVED_KEY_INFO).derive(
        secret
    )
    d = int.from_bytes(stream, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(d, ec.SECP256R1())


# -- generated key ---------------------------------------------------------------------


def generate_pem() -> str:
    """A new P-256 private key as PKCS#8 PEM (for ``gatehouse keygen``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def keygen_text() -> str:
    """What ``gatehouse keygen`` prints: a new key as PEM and as the base64 config form."""
    pem = generate_pem()
    b64 = base64.b64encode(pem.encode("ascii")).decode("ascii")
    kid = parse_pem_keys(pem.encode(), "new key")[0].kid
    return (
        "# A new EC P-256 signing key (ES256) for assertions.\n"
        f"# kid (RFC 7638 thumbprint): {kid}\n"
        "# Save the PEM to a file readable only by gatehouse and set signing_key_file,\n"
        "# or put the base64 form in signing_key. To rotate without breaking verifiers that\n"
        "# cache keys, add it under signing_keys with a sign_from a few minutes ahead.\n\n"
        f"{pem}\n"
        f"signing_key: {b64}\n"
    )


def load_or_create_key_file(data_dir: str) -> tuple[bytes, Path]:
    """The PEM kept in ``data_dir``, creating it (mode 0600) the first time.

    Processes starting together end up with the same key (see :mod:`gatehouse.datadir`).
    """
    directory = Path(data_dir).expanduser()
    path = directory / GENERATED_KEY_FILENAME
    try:
        return create_once(path, lambda: generate_pem().encode("ascii")), path
    except OSError as exc:
        raise ConfigError(
            [
                f"cannot store a generated signing key in {directory}: {exc.strerror}; "
                "set signing_key, signing_key_file or shared_secret, or a writable data_dir"
            ]
        ) from exc


# -- the whole set ---------------------------------------------------------------------


def build_keyset(
    primary: Iterable[SigningKey] = (),
    scheduled: Iterable[tuple[float | None, list[SigningKey]]] = (),
) -> KeySet:
    """A key set from a primary bundle (first signs from the start, rest published) and
    scheduled bundles ``(sign_from or None, keys)`` whose first key signs from that time."""
    keys: list[SigningKey] = []
    schedule: list[tuple[float, SigningKey]] = []
    primary = list(primary)
    if primary:
        if primary[0].private_key is None:
            raise ConfigError([f"{primary[0].source}: the first key must be a private key"])
        schedule.append((-float("inf"), primary[0]))
        keys.extend(primary)
    for sign_from, bundle in scheduled:
        if not bundle or bundle[0].private_key is None:
            continue
        schedule.append((-float("inf") if sign_from is None else sign_from, bundle[0]))
        keys.extend(bundle)
    # Candidates are listed first in the JWKS so the signer's key comes early.
    candidates = [k for _, k in schedule]
    rest = [k for k in keys if k not in candidates]
    return KeySet([*candidates, *rest], schedule)


def load_keyset(options: Options) -> KeySet:
    """Build the key set the options describe (see the module docstring for the order).

    Raises:
        ConfigError: an unreadable, unsupported or missing key.
    """
    primary: list[SigningKey] = []
    if options.signing_key_file:
        primary = parse_pem_keys(
            _read_file(options.signing_key_file, "signing_key_file"), "signing_key_file"
        )
    elif options.signing_key:
        primary = parse_pem_keys(decode_key_text(options.signing_key), "signing_key")
    scheduled: list[tuple[float | None, list[SigningKey]]] = []
    for i, entry in enumerate(options.signing_keys):
        where = f"signing_keys[{i}]"
        if entry.file is not None:
            data = _read_file(entry.file, f"{where}.file")
        else:
            data = decode_key_text(entry.key or "")
        bundle = parse_pem_keys(data, where)
        scheduled.append((entry.sign_from.timestamp() if entry.sign_from else None, bundle))
    if primary or scheduled:
        return build_keyset(primary, scheduled)

    secret_text = _shared_secret_text(options)
    if secret_text:
        key = make_key(
            derive_p256_key(shared_secret_bytes(secret_text)), "derived from shared_secret"
        )
        return build_keyset([key])

    data, path = load_or_create_key_file(options.data_dir)
    if str(path) not in _WARNED_GENERATED:
        # Once per process tree: workers forked after the supervisor's check inherit the
        # set, and reloads do not repeat it.
        _WARNED_GENERATED.add(str(path))
        log.warning(
            "no signing_key or shared_secret configured: signing assertions with the key "
            "generated in %s; replicas will not agree on it, so configure signing_key for "
            "more than one",
            path,
        )
    return build_keyset(parse_pem_keys(data, str(path)))


#: Generated-key files already warned about in this process (and its forked workers).
_WARNED_GENERATED: set[str] = set()


def _shared_secret_text(options: Options) -> str:
    if options.shared_secret_file:
        return _read_file(options.shared_secret_file, "shared_secret_file").decode().strip()
    return (options.shared_secret or "").strip()


__all__ = [
    "KeySet",
    "SigningKey",
    "build_keyset",
    "derive_p256_key",
    "generate_pem",
    "keygen_text",
    "load_keyset",
    "make_key",
    "parse_pem_keys",
    "thumbprint",
]
