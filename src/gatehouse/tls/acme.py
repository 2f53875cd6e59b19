"""``autocert``: certificates obtained and renewed from an ACME CA (RFC 8555), with ``acme``.

Theory of operation. Every worker runs an :class:`AutocertManager`; they share one
directory per CA under ``autocert_dir``::

    <autocert_dir>/<ca>/account.key, account.json   ACME account (created once)
    <autocert_dir>/<ca>/certs/<host>.pem            key + chain, replaced atomically
    <autocert_dir>/<ca>/certs/<host>.retry          failures so far and the next attempt
    <autocert_dir>/<ca>/challenges/<token>          HTTP-01 answers (any worker serves them)
    <autocert_dir>/<ca>/tls-alpn/<host>.pem         TLS-ALPN-01 certificates (likewise)
    <autocert_dir>/<ca>/lock                        held while ordering

Each manager tends its hosts in a loop: a certificate on disk that changed is loaded into
the SNI store (another worker, or the previous run, obtained it); one that is missing or
due for renewal is ordered under the lock, after re-reading the disk, so the workers of one
machine place one order, not one each. A failed order is logged and retried with
exponential back-off, shared through the ``.retry`` file; meanwhile the old certificate
(or the generated fallback) keeps being served. ``acme`` is synchronous: orders run in a
daemon thread, so a shutdown never waits on a CA.

Challenges (as Pomerium with certmagic): TLS-ALPN-01 (RFC 8737) on the TLS listener
always, HTTP-01 only when ``http_redirect_addr`` is set (it is answered there). HTTP-01
is tried first when both are possible; after a failed order the next attempt starts with
the other one (as certmagic moves on to another challenge type).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from ..config.options import Options
from ..errors import ConfigError
from .acme_tlsalpn import (
    TLS_ALPN_01,
    AlpnResponder,
    challenge_certificate,
    challenge_path,
)
from .certificates import (
    CertificatePem,
    LoadedCertificate,
    SniStore,
    load_certificate,
    pem_source,
)

log = logging.getLogger("gatehouse.autocert")

#: How often each worker looks at the stored certificates (picks up what another worker
#: obtained), seconds. A stat per host: cheap.
AUTOCERT_POLL_S = 2.0
#: First wait after a failed order, doubled after each further failure, seconds.
AUTOCERT_RETRY_FIRST_S = 5.0
#: Longest wait between attempts, seconds.
AUTOCERT_RETRY_MAX_S = 3600.0
#: Longest time for the CA to validate and issue one order, seconds.
AUTOCERT_ORDER_DEADLINE_S = 90.0
#: Timeout of each request to the CA, seconds.
AUTOCERT_HTTP_TIMEOUT_S = 30
#: Renew when less than this fraction of a certificate's lifetime is left (Let's Encrypt:
#: renew 30 days before the end of 90).
RENEW_FRACTION = 1 / 3
#: The challenge type answered on ``http_redirect_addr`` (RFC 8555 §8.3).
HTTP_01 = "http-01"

T = TypeVar("T")


def ca_directory(options: Options) -> Path:
    """This CA's storage directory (certificates are never shared between CAs)."""
    base = options.autocert_dir or str(Path(options.data_dir).expanduser() / "autocert")
    url = options.autocert_directory_url
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", url.split("://", 1)[-1]).strip("-")[:64]
    digest = hashlib.sha256(url.encode()).hexdigest()[:8]
    return Path(base).expanduser() / f"{slug}-{digest}"


def autocert_hosts(options: Options) -> list[str]:
    """The names to obtain certificates for: every route host and the authenticate host.

    Wildcard hosts need DNS-01, which is not offered; they are left out.
    """
    hosts: list[str] = []
    for route in options.all_routes:
        host = route.from_host
        if host and "*" not in host and host not in hosts:
            hosts.append(host)
    if options.authenticate_service_url:
        from urllib.parse import urlsplit

        auth = (urlsplit(options.authenticate_service_url).hostname or "").lower()
        if auth and auth not in hosts:
            hosts.append(auth)
    return hosts


@dataclass(frozen=True, slots=True)
class _Settings:
    directory_url: str
    email: str | None
    eab_key_id: str | None
    eab_mac_key: str | None
    trusted_ca_file: str | None
    must_staple: bool
    renew_before_s: float | None
    #: HTTP-01 can be answered (``http_redirect_addr`` is set).
    http_challenge: bool


class AutocertManager:
    """One worker's view of the autocert certificates (see the module docstring)."""

    def __init__(self, options: Options, store: SniStore) -> None:
        self.store = store
        self.dir = ca_directory(options)
        for sub in ("certs", "challenges"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._settings = _settings(options, self.dir)
        self.hosts = autocert_hosts(options)
        #: Answers the CA's TLS-ALPN-01 validation handshakes on the TLS listener.
        self.alpn = AlpnResponder(self.dir, self.hosts)
        store.set_validation(self.alpn)
        self._stamps: dict[str, tuple[float, int]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Load what is stored now, so the first handshakes already get it.
        for host in self.hosts:
            self._load_stored(host)

    def update(self, options: Options) -> None:
        """A reloaded config: new hosts are ordered at once."""
        self._settings = _settings(options, self.dir)
        self.hosts = autocert_hosts(options)
        self.alpn.hosts = frozenset(self.hosts)
        for host in self.hosts:
            self._load_stored(host)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            wake = time.time() + AUTOCERT_POLL_S
            for host in list(self.hosts):
                try:
                    wake = min(wake, await self._tend(host))
                except Exception:
                    log.exception("autocert: tending %s failed", host)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake - time.time()))

    async def _tend(self, host: str) -> float:
        """Bring ``host`` up to date; returns when it next needs attention (epoch s)."""
        self._load_stored(host)
        now = time.time()
        current = self.store.get("acme", host)
        if current is not None and now < self._renew_at(current):
            return self._renew_at(current)
        retry_at = self._retry_state(host)[1]
        if retry_at > now:
            return retry_at
        # Order in a daemon thread, under the machine-wide lock.
        await _in_daemon_thread(lambda: self._obtain_locked(host))
        self._load_stored(host)
        return time.time() + AUTOCERT_POLL_S

    def _renew_at(self, cert: LoadedCertificate) -> float:
        before = self._settings.renew_before_s
        if before is None:
            before = (cert.not_after - cert.not_before) * RENEW_FRACTION
        return cert.not_after - before

    # -- storage ------------------------------------------------------------------------

    def _cert_path(self, host: str) -> Path:
        return self.dir / "certs" / f"{host}.pem"

    def _load_stored(self, host: str) -> None:
        path = self._cert_path(host)
        try:
            st = path.stat()
        except OSError:
            return
        stamp = (st.st_mtime, st.st_size)
        if self._stamps.get(host) == stamp:
            return
        self._stamps[host] = stamp
        try:
            cert = load_certificate(_split_bundle(path.read_bytes(), f"autocert {host}"))
        except (ConfigError, OSError, ValueError) as exc:
            log.error("autocert: stored certificate for %s does not load: %s", host, exc)
            return
        self.store.put("acme", host, cert)
        log.info(
            "autocert: serving certificate",
            extra={"host": host, "not_after": _iso(cert.not_after)},
        )

    def _retry_state(self, host: str) -> tuple[int, float]:
        try:
            data = json.loads((self.dir / "certs" / f"{host}.retry").read_text())
            return int(data["failures"]), float(data["next_attempt"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, 0.0

    # -- ordering (in a thread, under the lock) -------------------------------------------

    def _obtain_locked(self, host: str) -> None:
        with _locked(self.dir / "lock"):
            # Another worker may have obtained it while this one waited for the lock.
            path = self._cert_path(host)
            if path.exists():
                try:
                    cert = load_certificate(_split_bundle(path.read_bytes(), host))
                    if time.time() < self._renew_at(cert):
                        return
                except (ConfigError, OSError, ValueError):
                    pass
            failures, retry_at = self._retry_state(host)
            if retry_at > time.time():
                return
            started = time.monotonic()
            kinds = self._challenge_kinds(failures)
            try:
                bundle, kind = self._order(host, kinds)
            except Exception as exc:
                failures += 1
                wait = min(AUTOCERT_RETRY_MAX_S, AUTOCERT_RETRY_FIRST_S * 2 ** (failures - 1))
                _write_atomic(
                    self.dir / "certs" / f"{host}.retry",
                    json.dumps({"failures": failures, "next_attempt": time.time() + wait}).encode(),
                )
                log.error(
                    "autocert: obtaining a certificate failed; retrying later",
                    extra={
                        "host": host,
                        "ca": self._settings.directory_url,
                        "error": f"{type(exc).__name__}: {exc}"[:500],
                        "challenges": kinds,
                        "failures": failures,
                        "retry_in_s": wait,
                    },
                )
                return
            _write_atomic(path, bundle)
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "certs" / f"{host}.retry").unlink()
            log.info(
                "autocert: certificate obtained",
                extra={
                    "host": host,
                    "challenge": kind,
                    "seconds": round(time.monotonic() - started, 2),
                },
            )

    def _challenge_kinds(self, failures: int) -> list[str]:
        """The challenge types this worker can answer, preferred first (module docstring)."""
        kinds = []
        if self._settings.http_challenge:
            kinds.append(HTTP_01)
        if self.store.validating:
            kinds.append(TLS_ALPN_01)
        if kinds:
            shift = failures % len(kinds)
            kinds = kinds[shift:] + kinds[:shift]
        return kinds

    def _order(self, host: str, kinds: list[str]) -> tuple[bytes, str]:
        """One ACME order for ``host``, answered by the first of ``kinds`` the CA offers.

        Returns:
            key + full chain PEM, and the challenge type that was answered.
        """
        s = self._settings
        acme_client = self._client()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        csr = crypto_util.make_csr(key_pem, [host], must_staple=s.must_staple)
        order = acme_client.new_order(csr)
        written: list[Path] = []
        used = "none: authorization already valid"
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                chall, used = _pick_challenge(authz.body.challenges, kinds, host)
                key_authorization = chall.chall.key_authorization(acme_client.net.key)
                if used == HTTP_01:
                    answer = self.dir / "challenges" / chall.chall.encode("token")
                    _write_atomic(answer, key_authorization.encode())
                else:
                    answer = challenge_path(self.dir, host)
                    _write_atomic(answer, challenge_certificate(host, key_authorization))
                written.append(answer)
                acme_client.answer_challenge(chall, chall.chall.response(acme_client.net.key))
            deadline = datetime.datetime.now() + datetime.timedelta(
                seconds=AUTOCERT_ORDER_DEADLINE_S
            )
            done = acme_client.poll_and_finalize(order, deadline)
        finally:
            for path in written:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return key_pem + done.fullchain_pem.encode(), used

    def _client(self) -> client.ClientV2:
        s = self._settings
        key = _account_key(self.dir / "account.key")
        # requests' `verify` takes a CA bundle path as well as a bool; acme passes it on.
        verify = cast(bool, s.trusted_ca_file) if s.trusted_ca_file else True
        net = client.ClientNetwork(
            key,
            alg=ES256,
            verify_ssl=verify,
            user_agent="gatehouse",
            timeout=AUTOCERT_HTTP_TIMEOUT_S,
        )
        directory = client.ClientV2.get_directory(s.directory_url, net)
        acme_client = client.ClientV2(directory, net)
        account_file = self.dir / "account.json"
        try:
            net.account = messages.RegistrationResource.json_loads(account_file.read_text())
            return acme_client
        except (OSError, ValueError, DeserializationError):
            pass
        eab = None
        if s.eab_key_id and s.eab_mac_key:
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(),
                kid=s.eab_key_id,
                hmac_key=s.eab_mac_key,
                directory=directory,
            )
        registration = messages.NewRegistration.from_data(
            email=s.email, terms_of_service_agreed=True, external_account_binding=eab
        )
        try:
            regr = acme_client.new_account(registration)
        except errors.ConflictError as exc:
            # The key already has an account (account.json was lost): use it.
            regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
            net.account = regr
        _write_atomic(account_file, regr.json_dumps().encode())
        return acme_client


def _pick_challenge(
    offered: list[messages.ChallengeBody], kinds: list[str], host: str
) -> tuple[messages.ChallengeBody, str]:
    """The first of ``kinds`` among the CA's ``offered`` challenges.

    Raises:
        errors.Error: none of them is offered.
    """
    by_type = {
        c.chall.typ: c for c in offered if isinstance(c.chall, challenges.KeyAuthorizationChallenge)
    }
    for kind in kinds:
        if kind in by_type:
            return by_type[kind], kind
    raise errors.Error(
        f"no challenge gatehouse can answer for {host}: the CA offers "
        f"{sorted(c.chall.typ for c in offered if hasattr(c.chall, 'typ'))}, "
        f"this configuration answers {kinds}"
    )


def _settings(options: Options, directory: Path) -> _Settings:
    trusted = None
    if options.autocert_trusted_ca_file:
        trusted = options.autocert_trusted_ca_file
    elif options.autocert_trusted_ca:
        # acme (requests) wants a file: keep the CA beside the account.
        trusted_path = directory / "trusted-ca.pem"
        _write_atomic(trusted_path, pem_source(options.autocert_trusted_ca, "autocert_trusted_ca"))
        trusted = str(trusted_path)
    return _Settings(
        directory_url=options.autocert_directory_url,
        email=options.autocert_email,
        eab_key_id=options.autocert_eab_key_id,
        eab_mac_key=options.autocert_eab_mac_key,
        trusted_ca_file=trusted,
        must_staple=options.autocert_must_staple,
        renew_before_s=options.autocert_renew_before,
        http_challenge=bool(options.http_redirect_addr),
    )


def _account_key(path: Path) -> JWKEC:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except FileNotFoundError:
        new = ec.generate_private_key(ec.SECP256R1())
        _write_atomic(
            path,
            new.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return JWKEC(key=new)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise errors.Error(f"{path}: the ACME account key must be an EC key")
    return JWKEC(key=key)


def _split_bundle(data: bytes, source: str) -> CertificatePem:
    """Key and chain from one stored bundle (key first, then the certificates)."""
    marker = b"-----BEGIN CERTIFICATE-----"
    at = data.find(marker)
    if at <= 0:
        raise ValueError("not a key followed by a certificate chain")
    return CertificatePem(cert=data[at:], key=data[:at], source=source)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a daemon thread (one the interpreter does not wait for at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(cast(T, result))

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        # The loop may be gone (shutdown while the CA was slow): nothing to tell then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name="gatehouse-autocert", daemon=True).start()
    return await future


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")
