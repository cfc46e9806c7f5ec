"""A Lua script called by digest, loaded once however many callers find Redis without it.

redis-py's registered script answers ``NOSCRIPT`` by loading the script and calling again,
in every caller: on a Redis that just restarted (or failed over), 100 jobs starting at once
made 100 failed calls and 100 loads (issue 10). Here the callers that failed wait for one
load (a lock and a load counter: whoever finds the counter moved since its own call failed
just calls again), then call again once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

__all__ = ["SharedScript"]


class SharedScript:
    """``EVALSHA`` of ``script`` on ``redis``, loading it once on ``NOSCRIPT``."""

    def __init__(self, redis: Redis, script: str) -> None:
        self.redis = redis
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self._lock = asyncio.Lock()
        self._loads = 0

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply (redis errors raised as they come)."""
        seen = self._loads
        try:
            return await self._call(keys, args)
        except NoScriptError:
            async with self._lock:
                if self._loads == seen:  # nobody loaded it since this call failed
                    await self.redis.script_load(self.script)
                    self._loads += 1
            return await self._call(keys, args)

    async def _call(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        # execute_command, not evalsha(): a cluster client routes it by its keys.
        return await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "EVALSHA", self.sha, len(keys), *keys, *args
        )
