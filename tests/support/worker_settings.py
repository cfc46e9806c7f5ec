"""Worker settings for tests that run a worker in-process: no env file, short intervals.

::

    async with run_demo_agent(DemoAgentConfig(token_delay_ms=1)) as agent_url:
        settings = fast_settings(redis_server.url, agent_url, worker_name="w1")
        async with Worker(settings) as worker:
            ...  # enqueue with ChatLog.accept_visitor_message, then wait_until the reply
"""

from __future__ import annotations

from typing import Any

from worker.settings import WorkerSettings

__all__ = ["fast_settings"]


def fast_settings(redis_url: str, agent_url: str, **overrides: Any) -> WorkerSettings:
    """Worker settings for tests: no env file, short intervals, quick retries.

    ``agent_url`` is the agent's base URL (``http://host:port``); ``overrides`` are field
    names (``max_concurrent_chats=4``, ``worker_name="w2"``, ...).
    """
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "agent_api_url": f"{agent_url.rstrip('/')}/v1/chat/completions",
        "worker_name": "test-worker",
        "job_block_ms": 200,
        "reclaim_interval_ms": 200,
        "reclaim_min_idle_ms": 1500,
        "chat_lease_ms": 3000,
        "heartbeat_interval_ms": 200,
        "agent_timeout_seconds": 5.0,
        "agent_retry_base_seconds": 0.02,
        "shutdown_grace_seconds": 5.0,
        **overrides,
    }
    return WorkerSettings(_env_file=None, **values)
