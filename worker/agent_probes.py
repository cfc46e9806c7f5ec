"""The agent's probes: the health check's tiny completion and the tool-support probe.

A mixin of :class:`worker.llm.AgentClient` (kept apart so the streaming client stays
readable): :meth:`AgentProbes.probe` is the health chain's inference probe (the ``openai``
client's plain call; it bypasses the circuit breaker and never raises), and
:meth:`AgentProbes.probe_tools` asks, before any visitor does, whether the server takes a
streamed request with tools (issue 16): one that cannot is answered without tools.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from openai import AsyncOpenAI

from bus.schemas import ComponentStatus, iso_now
from worker.agent_failures import classify_error
from worker.agent_stream import AgentStreamer
from worker.errors import AgentError

__all__ = ["PROBE_SYSTEM_PROMPT", "PROBE_TOOL", "AgentProbes"]

logger = structlog.get_logger("worker.llm")

PROBE_SYSTEM_PROMPT = "You are a health check. Reply with the single word: pong."

#: The one tool the start-up capability probe offers (:meth:`AgentClient.probe_tools`).
PROBE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "ping",
        "description": "Answers pong.",
        "parameters": {"type": "object", "properties": {}},
    },
}


class AgentProbes:
    """The probes of :class:`worker.llm.AgentClient`, which sets these attributes."""

    model: str
    system_role: bool
    #: Whether the server streams tool calls: None until it showed one way or the other.
    tools_streamed: bool | None
    #: Told what was learnt about tool support (the health monitor's detail).
    on_tool_support: Callable[[bool], None] | None
    _client: AsyncOpenAI
    _streamer: AgentStreamer

    async def probe_tools(self) -> bool | None:
        """Whether the server takes a streamed request with tools: one tiny request.

        ``False`` for an empty 200 stream (llama-cpp-python's ``chatml-function-calling``)
        or a 400 (vLLM without ``--enable-auto-tool-choice``): learnt as after a failed
        answer, so answers go without tools. ``True`` once an event arrives (tools offered
        again if they had been dropped). ``None`` when it could not tell (unreachable, 5xx).
        Bypasses the breaker; never raises.
        """
        request = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Ping"}],
            "tools": [PROBE_TOOL],
            "tool_choice": "auto",
            "stream": True,
            "max_tokens": 4,
            "temperature": 0,
        }
        stream = self._streamer.events(orjson.dumps(request))
        try:
            answered = await anext(stream, None) is not None
        except AgentError as exc:
            if exc.status != 400:
                return None
            answered = False
        finally:
            await stream.aclose()
        if not answered:
            if self.tools_streamed is not False:
                self._learn_tool_support(False)
        elif self.tools_streamed is False:
            self.tools_streamed = None  # offered again; an answer tells more
            if self.on_tool_support is not None:
                self.on_tool_support(True)
        return answered

    def _learn_tool_support(self, streamed: bool) -> None:
        self.tools_streamed = streamed
        if not streamed:
            logger.warning(
                "worker.agent_tools_unsupported",
                hint="the server gives empty streams for requests with tools; answering without",
            )
        if self.on_tool_support is not None:
            self.on_tool_support(streamed)

    async def probe(self, timeout_seconds: float = 30.0) -> ComponentStatus:
        """Inference probe: a tiny non-streaming completion (max_tokens 4, temperature 0).

        Bypasses the circuit breaker and never raises: the result is the LLM's status.
        """
        started = time.monotonic()
        try:
            await self._client.with_options(timeout=timeout_seconds).chat.completions.create(
                model=self.model,
                messages=(
                    [
                        {"role": "system", "content": PROBE_SYSTEM_PROMPT},
                        {"role": "user", "content": "Ping"},
                    ]
                    if self.system_role
                    else [{"role": "user", "content": f"{PROBE_SYSTEM_PROMPT}\n\nPing"}]
                ),
                temperature=0,
                max_tokens=4,
                stream=False,
            )
        except Exception as exc:
            err = classify_error(exc)
            return ComponentStatus(status="offline", detail=err.detail, checkedAt=iso_now())
        latency = round((time.monotonic() - started) * 1000, 1)
        return ComponentStatus(status="online", checkedAt=iso_now(), latencyMs=latency)
