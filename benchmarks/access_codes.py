"""Access codes and session tokens (issue 11): what a check costs, and how soon a change holds.

``.venv/bin/python -m benchmarks.access_codes [--rounds 5] [--json]``

1. In process: the cost of one check of a session token, of a ``CHAT_PASSWORD`` code, of a
   stored code among 1,000 and of a wrong code (all in memory, per request), and of
   deriving the default signing secret (once per process).
2. A private redis-server and a gateway process with default settings (through
   ``demo.launcher``): a code stored as ``terrarium-ops codes add`` stores it, then revoked;
   seconds until the gateway first accepts it, and until it first refuses it again
   (bounded by ``ACCESS_CODES_REFRESH_SECONDS``, 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import timeit
from typing import Any

import aiohttp

from bus import BusKeys
from bus.access_codes import AccessCode, AccessCodeStore, code_digest
from bus.client import create_redis
from demo.launcher import Launcher, LaunchOptions, free_port, redis_url
from gateway.session_gate import AccessGate
from gateway.session_tokens import SessionTokens, derive_secret

CODE = "benchmark-code"


def check_costs(number: int = 100_000) -> dict[str, float]:
    """Microseconds per check, and milliseconds to derive the default secret."""
    codes = [CODE.encode(), b"rotated-code"]
    started = time.perf_counter()
    derive_secret([b"fresh-" + code for code in codes])  # not cached yet
    derive_ms = (time.perf_counter() - started) * 1000
    gate = AccessGate(codes, SessionTokens([derive_secret(codes)], 3600))
    stored = [AccessCode(f"{i:08x}", code_digest(f"stored-{i}"), "", 0, None) for i in range(1000)]
    gate.replace_stored(stored)
    now = time.time()
    code_id = gate.code_id(CODE, now)
    assert code_id is not None
    token, _ = gate.tokens.issue(code_id, now)
    checks = {
        "token_check_us": lambda: gate.check_token(token, now),
        "chat_password_check_us": lambda: gate.code_id("rotated-code", now),
        "stored_code_check_us": lambda: gate.code_id("stored-999", now),
        "wrong_code_check_us": lambda: gate.code_id("nope", now),
    }
    figures = {
        name: round(timeit.timeit(fn, number=number) / number * 1e6, 2)
        for name, fn in checks.items()
    }
    return {**figures, "derive_secret_ms": round(derive_ms, 1)}


async def lifecycle(rounds: int) -> dict[str, Any]:
    """Seconds from storing a code to its first acceptance, and from revoking to refusal."""
    launcher = Launcher(LaunchOptions(access_code=CODE, quiet=True))
    try:
        url = redis_url(launcher.add_redis(appendonly=False))
        launcher.redis_url = url
        port = free_port()
        launcher.add_gateway(
            "gateway",
            port,
            {
                "BASE_PATH": "",
                "RATE_LIMIT_FAILED_CODES_PER_IP": "100000",
                "RATE_LIMIT_READS_PER_IP": "100000",
            },
        )
        redis = create_redis(url, client_name="benchmark")
        store = AccessCodeStore(redis, BusKeys())
        target = f"http://127.0.0.1:{port}/api/chat/bench/messages"
        accepted: list[float] = []
        refused: list[float] = []
        async with aiohttp.ClientSession() as session:

            async def until(code: str, status: int) -> float:
                started = time.perf_counter()
                while True:
                    async with session.get(target, params={"accessCode": code}) as response:
                        if response.status == status:
                            return time.perf_counter() - started
                    await asyncio.sleep(0.05)

            for i in range(rounds):
                code = f"bench-{i}-" + "x" * 16
                record = await store.add(code, label="", created_ms=0, expires_ms=None)
                accepted.append(await until(code, 200))
                await store.revoke(record.code_id)
                refused.append(await until(code, 401))
        await redis.aclose()
        return {
            "rounds": rounds,
            "added_to_accepted_s_max": round(max(accepted), 2),
            "revoked_to_refused_s_max": round(max(refused), 2),
            "revoked_to_refused_s_mean": round(sum(refused) / len(refused), 2),
        }
    finally:
        launcher.stop()


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = {**check_costs(), **asyncio.run(lifecycle(args.rounds))}
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value}")


if __name__ == "__main__":
    main()
