"""What the worker knows of the agent and the model, for its heartbeat.

Every ``STATUS_POLL_INTERVAL_SECONDS`` (a few seconds) one cheap probe: a GET of
``AGENT_HEALTH_URL`` (2xx online, other 4xx online with the status in ``detail``, >=500
degraded ``"HTTP n"``, no answer offline), with latency. A 404 there means the server has
no health route (llama.cpp, vLLM behind some proxies), not that it is online: the monitor
then probes ``/v1/models`` instead, and tries ``/health`` again after the next outage.

The model (the ``llm`` node):

- An unreachable agent makes the model offline at once, so an outage shows within one
  probe interval even with no visitor traffic.
- When the agent answers again after an outage (or for the first time), the inference
  probe (a tiny completion, :meth:`InferenceProbe.probe`) runs in the same round, so
  recovery shows as soon as a probe succeeds. Otherwise it runs every
  ``LLM_STATUS_POLL_INTERVAL_SECONDS``, or every :data:`RECOVERY_PROBE_SECONDS` at most
  while the model is not online (a failed answer with the agent reachable).
- Each answer also tells: a successful reply marks the model online (and postpones the
  next inference probe, the model has just proved itself), a failed one offline.

Whether the server takes tools on a stream is probed at start-up and again after each
outage, once the agent answers (``tool_probe``: :meth:`worker.agent_probes.AgentProbes.probe_tools`,
given only when the worker has tools), and learnt from answers too. When the model server
turns out not to stream tool calls (:meth:`HealthMonitor.record_tool_support`, logged once),
the ``llm`` node's detail says so while the worker answers without tools.

``/v1/models`` is also read once per reachable period for the model's context length
(vLLM's ``max_model_len``): :attr:`HealthMonitor.context_tokens`, for the prompt budget.

While an answer streams (``busy``), a round sends nothing: a streaming answer proves the
server is up, and llama-cpp-python (its default ``interrupt_requests``) ends the stream in
flight when any request that touches the model arrives, ``/v1/models`` included.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import structlog

from bus.schemas import ComponentStatus, iso_now
from worker.aio import wait_event
from worker.errors import AgentError

__all__ = [
    "NO_TOOLS_NOTE",
    "HealthMonitor",
    "InferenceProbe",
    "context_length",
    "derive_models_url",
]

logger = structlog.get_logger("worker")

#: While the model is not online and the agent answers, inference probes run this often.
RECOVERY_PROBE_SECONDS = 30.0

#: Added to the ``llm`` node's detail once the server proved it cannot stream tool calls.
NO_TOOLS_NOTE = "no streamed tool calls: answering without tools"


class InferenceProbe(Protocol):
    """The agent client's inference probe (:meth:`worker.llm.AgentClient.probe`)."""

    async def probe(self, timeout_seconds: float = 30.0) -> ComponentStatus:
        """A tiny completion; never raises: the result is the model's status."""
        ...


def derive_models_url(health_url: str) -> str:
    """``http://host:port/v1/models`` for a health URL ending in ``/health``."""
    base = health_url[: -len("/health")] if health_url.endswith("/health") else health_url
    return f"{base.rstrip('/')}/v1/models"


def context_length(models: Any, model: str | None) -> int | None:
    """The ``max_model_len`` a ``/v1/models`` body gives for ``model`` (None: not said).

    The entry whose ``id`` is ``model`` wins; else the smallest figure any entry gives.
    """
    data = models.get("data") if isinstance(models, Mapping) else None
    if not isinstance(data, list):
        return None
    found: dict[str, int] = {}
    for entry in data:
        if not isinstance(entry, Mapping):
            continue
        length = entry.get("max_model_len")
        if isinstance(length, int) and not isinstance(length, bool) and length > 0:
            found[str(entry.get("id"))] = length
    if model is not None and model in found:
        return found[model]
    return min(found.values()) if found else None


class HealthMonitor:
    """Probes the agent and remembers the latest agent and LLM statuses (module doc)."""

    def __init__(
        self,
        agent: InferenceProbe,
        health_url: str,
        *,
        interval_seconds: float,
        llm_interval_seconds: float,
        timeout_seconds: float = 10.0,
        on_change: Callable[[], None] | None = None,
        models_url: str | None = None,
        model: str | None = None,
        tool_probe: Callable[[], Awaitable[bool | None]] | None = None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.agent_client = agent
        self.health_url = health_url
        self.models_url = models_url or derive_models_url(health_url)
        self.model = model if model is not None else getattr(agent, "model", None)
        self.interval = interval_seconds
        self.llm_interval = llm_interval_seconds
        self.timeout = timeout_seconds
        self.on_change = on_change
        self.agent = ComponentStatus()
        self._llm = ComponentStatus()
        #: False once the server proved it cannot stream tool calls; None: not known.
        self.tools_supported: bool | None = None
        #: False once ``/health`` answered 404 (until the next outage); None: not known yet.
        self.health_route: bool | None = None
        #: The model's context length from ``/v1/models``, when the server says it.
        self.context_tokens: int | None = None
        self._models_read = False
        #: Asks the server whether it takes tools on a stream (None: the worker has no tools).
        self.tool_probe = tool_probe
        self._tools_probed = False
        #: True while an answer streams from the server: the round is skipped.
        self.busy = busy
        self._llm_checked: float | None = None
        self._unreachable = True

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until ``stop`` is set (or cancelled); the first round runs at once."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                await self.check(session)
                await wait_event(stop, self.interval)

    async def check(self, session: aiohttp.ClientSession) -> None:
        """One round: the cheap probe, then the inference probe when due (module doc)."""
        if self.busy():
            return  # an answer is streaming: it speaks for the server (module doc)
        self.agent = await self.probe_agent(session)
        if self.agent.status == "offline":
            self._unreachable = True
            self.health_route = None
            self._models_read = False
            self._tools_probed = False
            if self.llm.status != "offline":
                self.llm = ComponentStatus(
                    status="offline",
                    detail=f"network: agent unreachable ({self.agent.detail})",
                    checkedAt=iso_now(),
                )
        elif not self.busy():  # (an answer may have started meanwhile)
            if not self._models_read:
                await self._read_models(session)
            if self._inference_probe_due():
                self.llm = await self.agent_client.probe(timeout_seconds=max(self.timeout, 30.0))
                self._llm_checked = time.monotonic()
            if self.tool_probe is not None and not self._tools_probed:
                # once per reachable period; what it learns reaches record_tool_support
                self._tools_probed = await self.tool_probe() is not None
            self._unreachable = False
        self._changed()

    def _inference_probe_due(self) -> bool:
        if self._unreachable or self._llm_checked is None:
            return True
        interval = self.llm_interval
        if self.llm.status != "online":
            interval = min(interval, RECOVERY_PROBE_SECONDS)
        return time.monotonic() - self._llm_checked >= interval

    async def probe_agent(self, session: aiohttp.ClientSession) -> ComponentStatus:
        """GET the health URL, or ``/v1/models`` when there is no health route; never raises."""
        if self.health_route is not False:
            status = await self._get(session, self.health_url)
            if status.detail != "HTTP 404":
                if status.status != "offline":
                    self.health_route = True
                return status
            self.health_route = False
            logger.info("worker.agent_health_route_missing", fallback="/v1/models")
        status = await self._get(session, self.models_url, models=True)
        if status.status == "online" and status.detail is None:
            return status.model_copy(update={"detail": "no health route; /v1/models answers"})
        return status

    async def _get(
        self, session: aiohttp.ClientSession, url: str, *, models: bool = False
    ) -> ComponentStatus:
        started = time.monotonic()
        try:
            async with session.get(url, allow_redirects=False) as response:
                status = response.status
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ComponentStatus(status="offline", detail=type(exc).__name__, checkedAt=iso_now())
        latency = round((time.monotonic() - started) * 1000, 1)
        if models and 200 <= status < 300:
            self._learn_context(body)
        if status >= 500 or (models and status == 404):
            return ComponentStatus(
                status="degraded", detail=f"HTTP {status}", checkedAt=iso_now(), latencyMs=latency
            )
        detail = None if 200 <= status < 300 else f"HTTP {status}"
        return ComponentStatus(
            status="online", detail=detail, checkedAt=iso_now(), latencyMs=latency
        )

    async def _read_models(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.models_url, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    self._learn_context(await response.read())
        except (aiohttp.ClientError, TimeoutError):
            return  # the cheap probe reports reachability; this only reads a figure

    def _learn_context(self, body: bytes) -> None:
        self._models_read = True
        try:
            length = context_length(json.loads(body), self.model)
        except ValueError:
            return
        if length != self.context_tokens:
            self.context_tokens = length
            logger.info("worker.model_context_read", context_tokens=length)

    @property
    def llm(self) -> ComponentStatus:
        """The model's latest status, with :data:`NO_TOOLS_NOTE` when tools are off."""
        if self.tools_supported is not False:
            return self._llm
        detail = f"{self._llm.detail}; {NO_TOOLS_NOTE}" if self._llm.detail else NO_TOOLS_NOTE
        return self._llm.model_copy(update={"detail": detail})

    @llm.setter
    def llm(self, status: ComponentStatus) -> None:
        self._llm = status

    def record_tool_support(self, supported: bool) -> None:
        """What the agent client learnt: whether the server streams tool calls."""
        if supported != self.tools_supported:
            self.tools_supported = supported
            logger.info("worker.model_tool_support", streamed_tool_calls=supported)
            self._changed()

    def record_reply(self, latency_ms: float) -> None:
        """A reply succeeded: the model is online (a heartbeat goes out at once only if that
        is news; otherwise the timer's beat carries the latency)."""
        was_online = self.llm.status == "online"
        self.llm = ComponentStatus(
            status="online", checkedAt=iso_now(), latencyMs=round(latency_ms, 1)
        )
        self._llm_checked = time.monotonic()
        if not was_online:
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
