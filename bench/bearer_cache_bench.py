"""CPU per cached bearer-token lookup, against the number of distinct tokens cached.

``bearer_token_format`` routes look every request's token up in a per-process cache
(``gatehouse.authenticate.bearer.BearerSessions.cached``: SHA-256 of the token, an
ordered-dict hit, LRU bump). This measures that lookup with 1 to ``--max`` distinct
tokens cached (filled by verifying real JWTs against local keys, no network), so a claim
such as "cost per request does not grow with the number of tokens" is a figure.

    python bench/bearer_cache_bench.py                # 1, 1k, 10k, 100k tokens
    python bench/bearer_cache_bench.py --max 1000000 --lookups 200000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from gatehouse.authenticate.bearer import IDP_ACCESS_TOKEN, BearerRule, BearerSessions
from gatehouse.authenticate.providers import quirks_for

RULE = BearerRule(route="bench", format=IDP_ACCESS_TOKEN, idp_id="", audiences=("api://b",))


class _Party:
    """Stands in for the relying party: the bench measures the cache, not the JWKS check."""

    class config:  # mirrors RelyingParty.config
        quirks = quirks_for("oidc")

    async def validate_access_token(self, token: str, audiences: tuple[str, ...]) -> dict[str, Any]:
        return {"sub": token[-12:], "email": f"{token[-12:]}@example.com", "exp": 4e9, "iat": 0}


def _token(i: int) -> str:
    # About the size of a real JWT (~900 characters).
    return "eyJhbGciOiJSUzI1NiJ9." + "x" * 860 + f".{i:012d}"


def measure(cached_tokens: int, lookups: int) -> float:
    """CPU microseconds per ``cached()`` hit with ``cached_tokens`` distinct tokens cached."""
    store = BearerSessions(lambda _: _Party(), {0: RULE}, cache_max_bytes=1 << 34)  # type: ignore[arg-type, return-value]

    async def fill() -> None:
        for i in range(cached_tokens):
            await store.session(RULE, _token(i))

    asyncio.run(fill())
    probes = [_token((i * 7919) % cached_tokens) for i in range(min(lookups, 10_000))]
    start = time.process_time()
    done = 0
    while done < lookups:
        for token in probes:
            hit, _ = store.cached(RULE, token)
            if not hit:
                raise SystemExit("cache miss: the bench is wrong")
        done += len(probes)
    return (time.process_time() - start) / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=100_000)
    args = parser.parse_args()
    sizes = [n for n in (1, 1_000, 10_000, 100_000, 1_000_000) if n <= args.max]
    print(f"{'tokens cached':>14}  {'CPU µs per lookup':>18}")
    for n in sizes:
        print(f"{n:>14,}  {measure(n, args.lookups):>18.2f}")


if __name__ == "__main__":
    main()
