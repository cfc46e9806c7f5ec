"""Reading what the demo agent was asked (its ``/_demo/requests`` log)."""

from __future__ import annotations

from typing import Any

import aiohttp

__all__ = ["agent_requests", "all_agent_requests"]


async def all_agent_requests(agent_url: str) -> list[dict[str, Any]]:
    """Every completion request the demo agent at ``agent_url`` received, oldest first."""
    async with aiohttp.ClientSession() as http, http.get(f"{agent_url}/_demo/requests") as resp:
        return list((await resp.json())["requests"])


async def agent_requests(agent_url: str) -> list[dict[str, Any]]:
    """Completion requests the demo agent received, without the worker's health probes."""
    return [r for r in await all_agent_requests(agent_url) if r.get("max_tokens") != 4]
