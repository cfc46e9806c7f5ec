"""What the worker knows of the agent and the model, for its heartbeat.

Same rules as the original worker: every ``STATUS_POLL_INTERVAL_SECONDS`` a GET of
``AGENT_HEALTH_URL`` (2xx online, other 4xx online with the status in ``detail``, >=500
degraded ``"HTTP n"``, no answer offline), with latency; an inference probe at most every
``LLM_STATUS_POLL_INTERVAL_SECONDS`` (``max_tokens`` 4). Each answer also tells: a
successful reply marks the model online (and postpones the next inference probe, the
GPU has just proved itself), a failed one offline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from bus.schemas import ComponentStatus, iso_now
from worker.aio import wait_event
from worker.errors import AgentError
from worker.llm import AgentClient

__all__ = ["HealthMonitor"]


class HealthMonitor:
    """Probes the agent and remembers the latest agent and LLM statuses."""

    def __init__(
        self,
        agent: AgentClient,
        health_url: str,
        *,
        interval_seconds: float,
        llm_interval_seconds: float,
        timeout_seconds: float = 10.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.agent_client = agent
        self.health_url = health_url
        self.interval = interval_seconds
        self.llm_interval = llm_interval_seconds
        self.timeout = timeout_seconds
        self.on_change = on_change
        self.agent = ComponentStatus()
        self.llm = ComponentStatus()
        self._llm_checked: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until ``stop`` is set (or cancelled); the first round runs at once."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                await self.check(session)
                await wait_event(stop, self.interval)

    async def check(self, session: aiohttp.ClientSession) -> None:
        """One round: the health URL, then the inference probe when due."""
        self.agent = await self.probe_agent(session)
        now = time.monotonic()
        if self._llm_checked is None or now - self._llm_checked >= self.llm_interval:
            self.llm = await self.agent_client.probe(timeout_seconds=max(self.timeout, 30.0))
            self._llm_checked = time.monotonic()
        self._changed()

    async def probe_agent(self, session: aiohttp.ClientSession) -> ComponentStatus:
        """GET the health URL; never raises."""
        started = time.monotonic()
        try:
            async with session.get(self.health_url, allow_redirects=False) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ComponentStatus(status="offline", detail=type(exc).__name__, checkedAt=iso_now())
        latency = round((time.monotonic() - started) * 1000, 1)
        if status >= 500:
            return ComponentStatus(
                status="degraded", detail=f"HTTP {status}", checkedAt=iso_now(), latencyMs=latency
            )
        detail = None if 200 <= status < 300 else f"HTTP {status}"
        return ComponentStatus(
            status="online", detail=detail, checkedAt=iso_now(), latencyMs=latency
        )

    def record_reply(self, latency_ms: float) -> None:
        """A reply succeeded: the model is online."""
        self.llm = ComponentStatus(
            status="online", checkedAt=iso_now(), latencyMs=round(latency_ms, 1)
        )
        self._llm_checked = time.monotonic()
        self._changed()

    def record_failure(self, error: AgentError) -> None:
        """A reply failed after its retries: the model is offline (as far as we know)."""
        if error.category == "circuit_open":
            return  # nothing new was learnt
        self.llm = ComponentStatus(status="offline", detail=error.detail, checkedAt=iso_now())
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
