"""Build: the request's hot path is compiled to C with mypyc; everything else stays Python.

The modules listed in ``COMPILED`` run for every proxied request. mypyc compiles the same
typed source (no second implementation, no C of our own) and halves their CPU time; see
``bench/proxy_bench.py`` and docs/operations.md ("Performance"). Set
``GATEHOUSE_PURE_PYTHON=1`` to install without compiling (any platform, no C compiler);
behaviour is the same, only slower.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

from build_backend import will_compile

#: Modules on the path of every request, in the order a request meets them.
COMPILED = [
    "src/gatehouse/http/connection.py",
    "src/gatehouse/http/messages.py",
    "src/gatehouse/http/server.py",
    "src/gatehouse/http/exchange.py",
    # An HTTP/2 stream's exchange subclasses Exchange, which only a compiled class may do.
    "src/gatehouse/http/h2/stream.py",
    # The rest of the HTTP/2 front: the h2 library is pure Python, so every microsecond
    # of our own per-frame and per-stream work shows (bench/h2_bench.py).
    "src/gatehouse/http/h2/protocol.py",
    "src/gatehouse/http/h2/flow.py",
    "src/gatehouse/http/h2/hpack_encoder.py",
    "src/gatehouse/http/h2/frames.py",
    "src/gatehouse/http/h2/hpack_decoder.py",
    "src/gatehouse/http/h2/inbound.py",
    "src/gatehouse/http/h2/fields.py",
    "src/gatehouse/proxy/paths.py",
    "src/gatehouse/proxy/router.py",
    "src/gatehouse/proxy/route_index.py",
    "src/gatehouse/proxy/balancer.py",
    "src/gatehouse/proxy/headers.py",
    "src/gatehouse/proxy/forward.py",
    "src/gatehouse/proxy/pipeline.py",
    "src/gatehouse/http/upstream.py",
    "src/gatehouse/observability/logs.py",
    # Signed-in requests: session cookie and cache, policy, identity assertion.
    "src/gatehouse/sessions/model.py",
    "src/gatehouse/sessions/cookie.py",
    "src/gatehouse/sessions/cache.py",
    "src/gatehouse/sessions/stamp.py",
    "src/gatehouse/sessions/manager.py",
    "src/gatehouse/authorize/input.py",
    "src/gatehouse/authorize/decision.py",
    "src/gatehouse/authorize/matchers.py",
    "src/gatehouse/authorize/criteria/base.py",
    "src/gatehouse/authorize/criteria/claims.py",
    "src/gatehouse/authorize/criteria/request.py",
    "src/gatehouse/authorize/criteria/simple.py",
    "src/gatehouse/authorize/criteria/user.py",
    "src/gatehouse/authorize/clause_index.py",
    "src/gatehouse/authorize/policy.py",
    "src/gatehouse/identity/keys.py",
    "src/gatehouse/identity/assertion.py",
]


#: mypy options of the compile, before the paths (mypycify reads them as mypy's command line).
BUILD_MYPY_OPTIONS = ["--no-warn-unused-ignores"]


def _extensions() -> list[object]:
    if not will_compile():
        if os.environ.get("GATEHOUSE_PURE_PYTHON", "") not in ("", "0"):
            return []
        print(
            "gatehouse: no C compiler found; installing the pure-Python build "
            "(same behaviour, about half the proxy throughput)",
            file=sys.stderr,
        )
        return []
    from mypyc.build import mypycify

    # The compile type-checks against whatever releases of the dependencies pip picked;
    # an ignore that a newer release's annotations made unneeded is a lint finding (the
    # project's own mypy run reports it), not a reason to fail a user's install.
    return list(mypycify([*BUILD_MYPY_OPTIONS, *COMPILED], opt_level="3", debug_level="0"))


setup(ext_modules=_extensions())
