"""Process lifecycle: bind, run workers, reload the config, drain on SIGTERM.

With one worker, everything runs in this process. With more, the supervisor binds the
listening socket once and forks workers that all accept on it; a worker that dies is
replaced, and SIGTERM/SIGINT is passed on so each worker drains its in-flight requests
(bounded by ``shutdown_timeout``) before the supervisor exits 0.

Each worker polls its config file (:data:`RELOAD_POLL_INTERVAL_S`); a valid change builds a
new :class:`~gatehouse.proxy.state.ProxyState` and swaps it in for new requests, a broken
one is logged with every problem and the running config stays.

A reload runs on the event loop in time slices of :data:`RELOAD_SLICE_S`
(:mod:`.timeslice`): load, build, then freeing the replaced state's parts, with requests
answered between slices. The cyclic collector is off meanwhile (after one collection of
what requests left since the last freeze, which is small), and what is alive afterwards is
frozen without a second collection: no pass over the new state's objects while requests
wait (see :mod:`.gcpause`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config.loader import LoadedConfig, file_stamp, load_file, load_file_steps
from .config.options import Options
from .errors import ConfigError, GatehouseError
from .fdlimit import raise_open_files_limit
from .gcpause import freeze_reloaded, freeze_start_up, reload_collector
from .http.h2.select import Codec, alpn_protocols
from .http.server import LISTEN_BACKLOG, HttpServer
from .http.upstream import ConnectionPool
from .observability.dependencies import Observer, TimedStore
from .observability.health_listener import serve_health
from .observability.logs import AccessLog, setup_logging
from .observability.metrics import (
    Metrics,
    cleanup_multiprocess,
    get_metrics,
    mark_worker_dead,
    prepare_multiprocess,
    serve_metrics,
)
from .observability.metrics_tls import metrics_tls_context
from .proxy.pipeline import Pipeline
from .proxy.responses import error_response
from .proxy.state import ProxyState, Services, build_state, build_state_steps, retired_parts
from .timeslice import Steps, release, run_sliced
from .tls.hardening import set_alpn_protocols
from .tls.redirect import RedirectServer
from .tls.service import TLSService, prepare_fallback

if TYPE_CHECKING:  # the built-in IdP is imported when a config uses it (start-up time)
    from .idp.store import StateStore

log = logging.getLogger("gatehouse")

#: How often each worker checks the config file for changes, seconds.
RELOAD_POLL_INTERVAL_S = 1.0
#: The longest a reload keeps the event loop between two turns of it, seconds: a request
#: arriving mid-reload waits about this long. Measured (bench/scaling_bench.py --rows
#: reload, 10,000 routes): 0.25 ms kept the reload-window p99 within 0.9-1.8x of the
#: steady one (0.5 ms: 1.7-2.3x), and a reload still took ~0.25 s.
RELOAD_SLICE_S = 0.00025
#: A worker that dies sooner than this after start is restarted only after a pause, seconds.
WORKER_RESTART_BACKOFF_S = 1.0
#: A worker's exit status when its config cannot start (sysexits' EX_CONFIG): restarting
#: it would fail the same way, so the supervisor stops instead.
EXIT_CONFIG = 78

StateBuilder = Callable[[LoadedConfig, Services | None], ProxyState]


def bind_socket(options: Options, address: str | None = None) -> socket.socket:
    """Bind the listening socket (``address``, or the given one); port 0 picks a free port."""
    address = address or options.address
    host = address.rpartition(":")[0].strip("[]") or None
    port = int(address.rpartition(":")[2])
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    if host is None:
        family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))  # noqa: S104
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


@dataclass
class Worker:
    """One serving process: server, pipeline, reload watcher."""

    config_path: str | None
    loaded: LoadedConfig
    build: StateBuilder = build_state
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    services: Services = field(default_factory=Services)
    #: Serve the metrics endpoint from this process (single-worker mode).
    serve_metrics: bool = True
    metrics: Metrics | None = None
    #: Set by SIGHUP: re-read the config file now, changed or not.
    reload_now: asyncio.Event = field(default_factory=asyncio.Event)
    #: The bound ``http_redirect_addr`` socket (redirects to HTTPS, ACME HTTP-01).
    redirect_sock: socket.socket | None = None
    tls: TLSService | None = None
    #: Forked by the supervisor (siblings reload on its SIGHUP).
    supervised: bool = False

    async def serve(self, sock: socket.socket) -> int:
        loop = asyncio.get_running_loop()
        options = self.loaded.options
        metrics = get_metrics() if options.metrics_address else None
        self.services = await start_services(
            options, metrics.dependency_call if metrics is not None else None
        )
        self.services.request_reload = self._request_reload
        self.services.current_digest = lambda: self.loaded.digest
        if metrics is not None:
            metrics.config_loaded(self.loaded.digest)
            self.services.session_event = lambda e: metrics.sessions.labels(e).inc()
            if self.serve_metrics:
                serve_metrics(
                    options.metrics_address or "",
                    options.metrics_credentials,
                    metrics_tls_context(options),
                )
        self.metrics = metrics
        state = self.build(self.loaded, self.services)
        pool = ConnectionPool(loop)
        access = AccessLog(enabled=options.access_log)
        pipeline = Pipeline(state, pool, access, metrics)
        server = HttpServer(
            pipeline, error_response, state.server_settings, loop, codec=options.codec_type
        )
        ssl_ctx = None
        if not options.insecure_server:
            set_alpn_protocols(alpn_protocols(Codec(options.codec_type)))
            self.tls = TLSService(options)
            ssl_ctx = self.tls.listener_context()
        addresses = await server.listen(
            None,
            0,
            ssl_context=ssl_ctx,
            sock=sock,
            ssl_handshake_timeout_s=options.timeout_tls_handshake,
        )
        redirect = await self._start_redirect(options, int(addresses[0][1]))
        if self.tls is not None:
            self.tls.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_now.set)
        scheme = "http" if options.insecure_server else "https"
        log.info(
            "listening",
            extra={
                "address": f"{addresses[0][0]}:{addresses[0][1]}",
                "scheme": scheme,
                "routes": len(state.router.routes),
                "config": self.loaded.source,
            },
        )
        del state  # the pipeline holds it; a reload's swap then frees its own parts
        # Everything built so far (config, templates, libraries) lives until a reload:
        # out of the collector's sight (gcpause), collections scan only what requests make.
        freeze_start_up()
        flusher = loop.create_task(self._flush_access(access))
        watcher = loop.create_task(self._watch(pipeline, server)) if self.config_path else None
        await self.stop.wait()
        log.info(
            "shutting down: draining in-flight requests",
            extra={"timeout_s": options.shutdown_timeout},
        )
        pipeline.ready = False
        cut = await server.shutdown(options.shutdown_timeout)
        if watcher is not None:
            watcher.cancel()
        flusher.cancel()
        access.flush()
        pool.close_all()
        if redirect is not None:
            await redirect.close()
        if self.tls is not None:
            await self.tls.close()
        await stop_services(self.services)
        log.info("stopped", extra={"connections_cut": cut})
        return 0

    async def _start_redirect(self, options: Options, https_port: int) -> RedirectServer | None:
        if self.redirect_sock is None:
            return None
        from .tls.acme import ca_directory

        challenges = ca_directory(options) if options.autocert else None
        redirect = RedirectServer(https_port, challenges)
        await redirect.start(self.redirect_sock)
        host, port = self.redirect_sock.getsockname()[:2]
        log.info("redirecting http to https", extra={"address": f"{host}:{port}"})
        return redirect

    def _request_reload(self) -> None:
        """Re-read the config now (the console's apply): here, and in every sibling worker
        through the supervisor's SIGHUP."""
        self.reload_now.set()
        if self.supervised:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(os.getppid(), signal.SIGHUP)

    def _count_reload(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(result).inc()

    async def _flush_access(self, access: AccessLog) -> None:
        while True:
            await asyncio.sleep(0.1)
            access.maybe_flush()

    async def _watch(self, pipeline: Pipeline, server: HttpServer) -> None:
        path = Path(self.config_path or "")
        # Compared with the stamp taken when the running config was read (by the
        # supervisor, before forking), so an edit made before this task starts is seen.
        last = self.loaded.stamp if self.loaded.stamp is not None else file_stamp(path)
        log.info(
            "watching the config", extra={"config": str(path), "poll_s": RELOAD_POLL_INTERVAL_S}
        )
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reload_now.wait(), RELOAD_POLL_INTERVAL_S)
            forced = self.reload_now.is_set()
            self.reload_now.clear()
            stamp = file_stamp(path)
            if stamp == last and not forced:
                continue
            last = stamp
            try:
                await self._reload(path, pipeline, server, forced)
            except ConfigError as exc:
                log.error(
                    "config reload failed; keeping the running config",
                    extra={"problems": exc.problems, "config": str(path)},
                )
                self._count_reload("failure")
            except Exception:
                log.exception("config reload failed; keeping the running config")
                self._count_reload("failure")

    async def _reload(
        self, path: Path, pipeline: Pipeline, server: HttpServer, forced: bool
    ) -> None:
        """Load ``path`` and, when it changed, build its state and swap it in, all in time
        slices on the loop; logs ``config reloaded`` with what each part cost.

        Raises:
            ConfigError: the config (or its state) is invalid; nothing was swapped.
        """
        with reload_collector() as collector:
            started = time.monotonic()
            loading = await run_sliced(load_file_steps(path), RELOAD_SLICE_S)
            loaded = loading.result
            load_s = time.monotonic() - started
            if loaded.digest == self.loaded.digest:
                if forced:
                    log.info("config unchanged", extra={"config": str(path)})
                return
            started = time.monotonic()
            building = await run_sliced(self._build_steps(loaded), RELOAD_SLICE_S)
            state = building.result
            build_s = time.monotonic() - started
            # From here on the reload cannot fail: swap, then free the old state.
            self._count_reload("success")
            if self.metrics is not None:
                self.metrics.config_loaded(loaded.digest)
            retired = retired_parts(pipeline.state, self.loaded)
            self.loaded = loaded
            pipeline.swap_state(state)
            server.update_settings(state.server_settings)
            started = time.monotonic()
            releasing = await run_sliced(release(retired), RELOAD_SLICE_S)
            release_s = time.monotonic() - started
            freeze_reloaded(collector)
        runs = (loading, building, releasing)
        log.info(
            "config reloaded",
            extra={
                "config": str(path),
                "digest": loaded.digest[:12],
                "routes": len(state.router.routes),
                "load_s": round(load_s, 3),
                "build_s": round(build_s, 3),
                "release_s": round(release_s, 3),
                "compiled": self.services.route_compiler.compiled_last,
                "slices": sum(r.slices for r in runs),
                "longest_slice_ms": round(max(r.longest_s for r in runs) * 1000, 2),
                "collect_ms": round(collector.collect_s * 1000, 2),
                "freeze_ms": round(collector.freeze_s * 1000, 2),
            },
        )

    def _build_steps(self, loaded: LoadedConfig) -> Steps[ProxyState]:
        """The state's build, then the certificates (both may refuse the config), sliced;
        a builder other than :func:`build_state` (tests) runs as one step."""
        if self.build is build_state:
            state = yield from build_state_steps(loaded, self.services)
        else:
            yield
            state = self.build(loaded, self.services)
        if self.tls is not None:
            yield from self.tls.apply_steps(loaded.options)
        return state


async def start_services(options: Options, observe: Observer | None = None) -> Services:
    """The worker's long-lived parts: session store (when sign-in is configured), IdP client.

    With ``observe`` (metrics on), every IdP and store call is timed and reported.
    """
    services = Services()
    if options.idp_provider is not None:
        from .authenticate import new_http_client
        from .authenticate.http_client import trusted_ca_pem
        from .sessions.manager import build_session_manager

        wrap = None if observe is None else functools.partial(TimedStore, observe=observe)
        services.sessions = build_session_manager(options, wrap_store=wrap)
        services.http_client = new_http_client(
            observe=observe, trusted_ca_pem=trusted_ca_pem(options)
        )
        if options.idp_provider == "builtin":
            services.idp_store = _idp_store(options)
        try:
            await services.sessions.start()
        except GatehouseError as exc:
            # Keep serving: requests needing a session get 503 until the store is back.
            log.error("session store unavailable at start: %s", exc)
    return services


def _idp_store(options: Options) -> StateStore:
    """The built-in provider's state, shared by every worker on this machine."""
    from .idp.store import MemoryStateStore, SQLiteStateStore

    if options.databroker_storage_type == "memory":
        return MemoryStateStore()
    return SQLiteStateStore(Path(options.data_dir).expanduser() / "idp.sqlite3")


async def stop_services(services: Services) -> None:
    if services.idp_store is not None:
        await services.idp_store.close()
    if services.sessions is not None:
        await services.sessions.close()
    if services.http_client is not None:
        await services.http_client.aclose()


def _install_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run_worker(
    config_path: str | None,
    loaded: LoadedConfig,
    sock: socket.socket,
    build: StateBuilder,
    serve_metrics_here: bool = True,
    redirect_sock: socket.socket | None = None,
) -> int:
    _install_loop()
    worker = Worker(
        config_path,
        loaded,
        build,
        serve_metrics=serve_metrics_here,
        redirect_sock=redirect_sock,
        supervised=not serve_metrics_here,
    )
    try:
        return asyncio.run(worker.serve(sock))
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config error: %s", problem)
        return EXIT_CONFIG
    finally:
        # Closing the loop put SIGTERM back to its default: a second one (a process
        # manager's retry) while the interpreter winds down would kill the process with
        # -15 after it has drained and logged "stopped". It is stopping already.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)


def run(
    config_path: str | None,
    loaded: LoadedConfig,
    build: StateBuilder = build_state,
    *,
    sock: socket.socket | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status (``sock``: already bound)."""
    options = loaded.options
    setup_logging(options.log_level)
    for warning in loaded.warnings:
        log.warning(warning)
    # Refuse, once and before binding or forking, what a worker could not start with:
    # the same checks as ``gatehouse check``.
    from .preflight import startup_problems

    problems = startup_problems(loaded)
    if build is not build_state:
        try:
            build(loaded, None)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        for problem in problems:
            log.error("config error: %s", problem)
        log.error("not starting: %d config problem%s", len(problems), "s" * (len(problems) != 1))
        return 1
    raise_open_files_limit()  # before forking: the workers inherit it
    if sock is None:
        try:
            sock = bind_socket(options)
        except OSError as exc:
            log.error("cannot listen on %s: %s", options.address, exc.strerror or exc)
            return 1
    redirect_sock = None
    if options.http_redirect_addr:
        try:
            redirect_sock = bind_socket(options, options.http_redirect_addr)
        except OSError as exc:
            log.error("cannot listen on %s: %s", options.http_redirect_addr, exc.strerror or exc)
            return 1
    # Before forking, so every worker serves the same generated certificate.
    prepare_fallback(options)
    if options.health_check_addr:
        try:
            serve_health(
                options.health_check_addr, sock.getsockname()[:2], not options.insecure_server
            )
        except OSError as exc:
            log.error("cannot listen on %s: %s", options.health_check_addr, exc.strerror or exc)
            return 1
    workers = options.workers or os.cpu_count() or 1
    if workers == 1:
        return _run_worker(config_path, loaded, sock, build, redirect_sock=redirect_sock)
    return _supervise(config_path, loaded, sock, build, workers, redirect_sock)


def _supervise(
    config_path: str | None,
    loaded: LoadedConfig,
    sock: socket.socket,
    build: StateBuilder,
    count: int,
    redirect_sock: socket.socket | None = None,
) -> int:
    children: dict[int, float] = {}
    stopping = False
    failed = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # child
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            try:
                code = _run_worker(
                    config_path,
                    loaded,
                    sock,
                    build,
                    serve_metrics_here=False,
                    redirect_sock=redirect_sock,
                )
            except BaseException:
                # os._exit below skips the interpreter's own report of the exception.
                log.exception("worker crashed")
            finally:
                os._exit(code)
        children[pid] = time.monotonic()

    def stop_all(signum: int = signal.SIGTERM) -> None:
        nonlocal stopping
        stopping = True
        # Stop listening at once: while any process holds the socket, the kernel keeps
        # accepting connections into the backlog, which are reset later instead of being
        # refused now (a load balancer then fails over only after its timeout).
        sock.close()
        if redirect_sock is not None:
            redirect_sock.close()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def on_signal(signum: int, _frame: object) -> None:
        stop_all()

    def on_hangup(signum: int, _frame: object) -> None:
        # SIGHUP reloads, as nginx and HAProxy users expect: each worker re-reads the file.
        log.info("SIGHUP: reloading the config in every worker")
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    metrics_dir = None
    metrics_server = None
    if loaded.options.metrics_address:
        metrics_dir = prepare_multiprocess()
        metrics_server = serve_metrics(
            loaded.options.metrics_address,
            loaded.options.metrics_credentials,
            metrics_tls_context(loaded.options),
        )
    for _ in range(count):
        spawn()
    gc.enable()  # off for start-up (cli); each worker turns its own on once it serves
    log.info("supervisor started", extra={"workers": count, "pids": list(children)})
    deadline: float | None = None
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if stopping and deadline is None:
                deadline = time.monotonic() + loaded.options.shutdown_timeout + 5
            if deadline is not None and time.monotonic() > deadline:
                for child in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
            time.sleep(0.05)
            continue
        started = children.pop(pid, time.monotonic())
        if metrics_dir is not None:
            mark_worker_dead(pid)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        if code == EXIT_CONFIG:
            log.error(
                "a worker could not start with this config (see its errors above); stopping",
                extra={"worker_pid": pid},
            )
            failed = True
            stop_all()
            continue
        log.error(
            "worker exited unexpectedly; starting a new one",
            extra={"worker_pid": pid, "exit": code},
        )
        if time.monotonic() - started < WORKER_RESTART_BACKOFF_S:
            time.sleep(WORKER_RESTART_BACKOFF_S)
        spawn()
    sock.close()
    if redirect_sock is not None:
        redirect_sock.close()
    if metrics_server is not None:
        metrics_server.shutdown()
    if metrics_dir is not None:
        cleanup_multiprocess(metrics_dir)
    log.info("stopped")
    return 1 if failed else 0


def load_or_exit(config_path: str) -> LoadedConfig:
    """Load a config for ``run``; print every problem and exit 1 when invalid."""
    try:
        return load_file(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1) from None
