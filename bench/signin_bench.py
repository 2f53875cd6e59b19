"""CPU that gatehouse spends on one full OpenID Connect sign-in, measured from /proc.

    python bench/signin_bench.py [--n 200] [--warmup 20] [--steps] [--profile]
                                 [--python PY [--python PY2 ...]] [--rounds R]

One sign-in is what a browser does: the route answers 302 to the authenticate service,
which sets its state and sends the browser to the IdP; the IdP (the red-team suite's
loopback provider, in this process, so its CPU is not counted) answers with a code; the
callback exchanges it, validates the ID token, writes the session and hands off to the
route host, which sets the cookie and sends the browser back to where it started. Printed:
gatehouse's user+system CPU per sign-in (the whole process tree, from ``/proc/<pid>/stat``),
the wall time per sign-in, with ``--steps`` the CPU and wall time of each request of the
flow (gatehouse's on-CPU nanoseconds from ``/proc/<pid>/task/*/schedstat`` read before and
after each request: work gatehouse does after answering is charged to the next step), and
with ``--profile`` the functions by cumulative and own time from a second gatehouse run
under cProfile, timed by the main thread's CPU clock (``time.thread_time``: time waiting
for the IdP or the store's thread is not charged to the coroutine that awaits it). The
issue's target: 2.5 ms of gatehouse CPU.

Which gatehouse runs: by default this interpreter's, with ``PYTHONPATH`` made absolute
(gatehouse starts in a temporary directory, where a relative ``src`` would silently fall
back to an installed build), so ``PYTHONPATH=src`` means the dev tree. ``--python PY``
runs the build installed in PY's environment (``PYTHONPATH`` cleared: a venv with the
compiled wheel, as users run it); repeat it, and add ``--dev`` for the dev tree, to compare
builds in one run (interleaved ``--rounds`` times); ``--src DIR`` (repeatable) runs
this interpreter with another source tree (``PYTHONPATH=DIR``, e.g. a checkout of the
commit before). The first lines printed name each side's gatehouse and its build.
"""

from __future__ import annotations

import argparse
import base64
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]  # the tests' loopback IdP, upstream and browser

from security.idp import CLIENT_ID, CLIENT_SECRET, HostileIdp  # noqa: E402
from support.gatehouse import GatehouseProcess  # noqa: E402
from support.loop import LoopThread  # noqa: E402
from support.upstream import Upstream  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its descendants (a supervisor and workers)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def tree_runtime_ns(pid: int) -> int:
    """On-CPU nanoseconds of every thread of ``pid`` and its descendants (schedstat's
    first field: finer than the clock ticks of ``stat``, for one request's worth)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


#: The flow's requests, by path, in the order a sign-in makes them.
STEPS = {
    "/": "route (302 to sign in)",
    "/.pomerium/sign_in": "/.pomerium/sign_in (302 to IdP)",
    "/authorize": "IdP /authorize (not gatehouse)",
    "/oauth2/callback": "/oauth2/callback (token, ID token, session)",
    "/.pomerium/callback/": "/.pomerium/callback/ (hand-off, cookie)",
}
#: ``(step, cpu_ns, wall_ns)`` per request of a sign-in.
StepSink = Callable[[str, int, int], None]


def config(idp: HostileIdp, upstream: Upstream) -> dict[str, Any]:
    def secret() -> str:
        return base64.b64encode(os.urandom(32)).decode()

    return {
        "authenticate_service_url": "http://authenticate.localhost",
        "idp_provider": "oidc",
        "idp_provider_url": idp.issuer,
        "idp_client_id": CLIENT_ID,
        "idp_client_secret": CLIENT_SECRET,
        "idp_scopes": ["openid", "profile", "email"],
        "shared_secret": secret(),
        "cookie_secret": secret(),
        "workers": 1,
        "access_log": False,
        "routes": [
            {
                "from": "http://app.localhost",
                "to": upstream.url,
                "policy": [{"allow": {"or": [{"email": {"is": "alice@example.com"}}]}}],
                "pass_identity_headers": True,
            }
        ],
    }


def absolute_pythonpath() -> None:
    """Make ``PYTHONPATH`` absolute: gatehouse starts in a temporary directory, where a
    relative ``src`` would silently fall back to whatever build is installed."""
    value = os.environ.get("PYTHONPATH")
    if value:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            str(Path(p).resolve()) for p in value.split(os.pathsep) if p
        )


#: ``PYTHONPATH`` for a ``--python`` side: none, so its installed build is the one run.
INSTALLED_ENV = {"PYTHONPATH": ""}


def which_gatehouse(python: str, env: dict[str, str]) -> str:
    """Where ``python`` imports gatehouse from, and whether that build is compiled."""
    probe = "import gatehouse; print(gatehouse.__file__, '-', gatehouse.build_kind())"
    done = subprocess.run(
        [python, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, **env},
    )
    return done.stdout.strip() or f"cannot import gatehouse: {done.stderr.strip()[-200:]}"


#: Runs ``python PROFILER OUT -m gatehouse ...``: cProfile on the main thread's CPU clock.
PROFILER = """
import cProfile, runpy, sys, time
out, module = sys.argv[1], sys.argv[3]
sys.argv = [module, *sys.argv[4:]]
profile = cProfile.Profile(time.thread_time)
profile.enable()
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(out)
"""


def sign_in(client: httpx.Client, port: int, pid: int = 0, steps: StepSink | None = None) -> None:
    """One browser's sign-in: its own cookies, over kept-alive connections as a browser's.

    With ``steps``, each request's CPU of process tree ``pid`` and wall time go to it."""
    jar: dict[str, dict[str, str]] = {}
    url = "http://app.localhost/"
    signed_in = False
    for _ in range(10):
        parts = urlsplit(url)
        host = parts.hostname or ""
        headers = {"Accept": "text/html"}
        if jar.get(host):
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar[host].items())
        target = url
        if host.endswith(".localhost"):
            headers["Host"] = parts.netloc
            target = f"http://127.0.0.1:{port}{parts.path or '/'}" + (
                f"?{parts.query}" if parts.query else ""
            )
        if steps is not None:
            cpu0, wall0 = tree_runtime_ns(pid), time.perf_counter_ns()
        response = client.get(target, headers=headers)
        if steps is not None:
            cpu1, wall1 = tree_runtime_ns(pid), time.perf_counter_ns()
            step = STEPS.get(parts.path or "/", parts.path)
            if step == STEPS["/"] and signed_in:
                step = "route again (200, signed in)"
            steps(step, cpu1 - cpu0, wall1 - wall0)
        signed_in = parts.path == "/.pomerium/callback/"
        client.cookies.clear()  # each sign-in is a new browser: only ``jar`` holds cookies
        for header in response.headers.get_list("set-cookie"):
            name, _, value = header.split(";", 1)[0].strip().partition("=")
            if value and "max-age=0" not in header.lower():
                jar.setdefault(host, {})[name] = value
            else:
                jar.get(host, {}).pop(name, None)
        if response.status_code not in (302, 303):
            break
        url = urljoin(url, response.headers["location"])
    if response.status_code != 200 or "_gatehouse" not in jar.get("app.localhost", {}):
        raise SystemExit(f"sign-in failed: {response.status_code} {response.text[:200]}")


def run(
    n: int,
    warmup: int,
    profile: Path | None,
    steps: StepSink | None = None,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> tuple[float, float]:
    loop = LoopThread()
    idp = HostileIdp().start()
    upstream = Upstream(loop, "app")
    with tempfile.TemporaryDirectory() as tmp:
        launcher = None
        if profile:
            (Path(tmp) / "profiler.py").write_text(PROFILER)
            launcher = [str(Path(tmp) / "profiler.py"), str(profile)]
        gh = GatehouseProcess(config(idp, upstream), Path(tmp), python_args=launcher, python=python)
        gh.start()
        try:
            assert gh.proc is not None
            with httpx.Client(timeout=15) as client:
                for _ in range(warmup):
                    sign_in(client, gh.port)
                cpu0, wall0 = tree_cpu_s(gh.proc.pid), time.perf_counter()
                for _ in range(n):
                    sign_in(client, gh.port)
                cpu1, wall1 = tree_cpu_s(gh.proc.pid), time.perf_counter()
                if steps is not None:  # after the measured run, so it does not count
                    for _ in range(n):
                        sign_in(client, gh.port, gh.proc.pid, steps)
        finally:
            gh.stop()
    return (cpu1 - cpu0) / n * 1e3, (wall1 - wall0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="measured sign-ins")
    ap.add_argument("--warmup", type=int, default=20, help="sign-ins before measuring")
    ap.add_argument(
        "--steps", action="store_true", help="then as many sign-ins, timed request by request"
    )
    ap.add_argument("--profile", action="store_true", help="then one run under cProfile")
    ap.add_argument("--top", type=int, default=30, help="functions shown by --profile")
    ap.add_argument(
        "--python",
        action="append",
        default=[],
        help="run the gatehouse installed for this interpreter (repeat to compare builds)",
    )
    ap.add_argument(
        "--dev", action="store_true", help="with --python/--src: also this interpreter's own"
    )
    ap.add_argument(
        "--src",
        action="append",
        default=[],
        type=Path,
        help="run this interpreter with PYTHONPATH=SRC (repeat to compare source trees)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="runs per interpreter, interleaved")
    args = ap.parse_args()
    absolute_pythonpath()
    sides: list[tuple[str, dict[str, str]]] = [
        (sys.executable, {"PYTHONPATH": str(src.resolve())}) for src in args.src
    ]
    sides += [(p, INSTALLED_ENV) for p in args.python]
    if args.dev or not sides:
        sides.insert(0, (sys.executable, {}))
    pythons = [p for p, _ in sides]
    for i, (python, env) in enumerate(sides):
        print(f"[{i}] {python}: {which_gatehouse(python, env)}")
    totals: list[list[tuple[float, float]]] = [[] for _ in pythons]
    per_step: list[dict[str, list[int]]] = [defaultdict(lambda: [0, 0, 0]) for _ in pythons]
    for _ in range(args.rounds):
        for i, (python, env) in enumerate(sides):

            def add(step: str, cpu_ns: int, wall_ns: int, into: int = i) -> None:
                counts = per_step[into][step]
                counts[0] += 1
                counts[1] += cpu_ns
                counts[2] += wall_ns

            sink = add if args.steps else None
            totals[i].append(run(args.n, args.warmup, None, sink, python, env))
    for i, runs in enumerate(totals):
        cpu_ms = sum(c for c, _ in runs) / len(runs)
        wall_ms = sum(w for _, w in runs) / len(runs)
        each = ", ".join(f"{c:.2f}" for c, _ in runs)
        print(
            f"[{i}] gatehouse CPU per sign-in: {cpu_ms:.2f} ms (runs: {each})   "
            f"wall per sign-in: {wall_ms:.2f} ms   "
            f"target <= 2.5 ms: {'met' if cpu_ms <= 2.5 else 'NOT met'}"
        )
    if args.steps:
        heads = "".join(f" {f'[{i}] CPU':>9} {f'[{i}] wall':>9}" for i in range(len(pythons)))
        print(f"{'step (ms per request)':<50}{heads}")
        for step in per_step[0]:
            cells = ""
            for table in per_step:
                count, cpu_ns, wall_ns = table.get(step, [0, 0, 0])
                count = max(count, 1)
                cells += f" {cpu_ns / count / 1e6:>9.3f} {wall_ns / count / 1e6:>9.3f}"
            print(f"{step:<50}{cells}")
        sums = "".join(
            f" {sum(c for _, c, _ in t.values()) / (args.n * args.rounds) / 1e6:>9.3f} {'':>9}"
            for t in per_step
        )
        print(f"{'sum per sign-in (schedstat)':<50}{sums}")
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "signin.cprofile"
            run(args.n, args.warmup, out, python=sides[-1][0], env=sides[-1][1])
            stats = pstats.Stats(str(out))
            stats.sort_stats("cumulative").print_stats(args.top)
            stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
