"""``replay --dry-run``: the request the worker would send for one visitor message, sent to
the agent, with the streamed answer and tool calls printed and nothing written to the chat.

The prompt is rebuilt with the worker's own code (``worker.conversation.build_prompt`` and
``tools.build_system_prompt``) from the worker's settings (``AGENT_*``, ``MAX_TURNS``,
``MAX_TOOL_ROUNDS``, ``SYSTEM_PROMPT``) and the tools' settings. It is the first request of
that answer: the tool turns saved for earlier questions are in it, those an attempt at this
one saved are not. Requested tool calls are printed, never run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI, OpenAIError

from bus.ops import Conversation
from ops.output import Output
from tools import ToolSettings, build_system_prompt, create_default_registry
from worker.conversation import build_prompt
from worker.settings import WorkerSettings

__all__ = ["AgentReply", "build_request", "send"]


def build_request(
    conversation: Conversation, settings: WorkerSettings, tool_settings: ToolSettings
) -> dict[str, Any]:
    """The chat-completions body the worker's first request for this message has."""
    registry = create_default_registry(tool_settings)
    system_prompt = settings.system_prompt or build_system_prompt(
        registry, tool_settings, max_tool_iterations=max(0, settings.max_tool_rounds - 1)
    )
    messages = build_prompt(
        conversation.messages,
        conversation.target,
        system_prompt=system_prompt,
        max_turns=settings.max_turns,
        tool_turns=conversation.tool_turns,
    )
    body: dict[str, Any] = {
        "model": settings.agent_model,
        "messages": messages,
        "temperature": settings.agent_temperature,
        "stream": True,
    }
    if settings.agent_max_tokens is not None:
        body["max_tokens"] = settings.agent_max_tokens
    if settings.max_tool_rounds > 1:  # the last round is offered no tools
        body["tools"] = registry.openai_tools()
        body["tool_choice"] = "auto"
    return body


@dataclass(slots=True)
class AgentReply:
    """What the agent streamed back."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    finish_reason: str | None = None


class AgentFailed(Exception):
    """The agent could not be reached or answered with an error (message is printable)."""


async def send(body: dict[str, Any], settings: WorkerSettings, out: Output) -> AgentReply:
    """Send ``body`` to the agent, printing content as it streams; the whole reply."""
    key = settings.agent_api_key.get_secret_value() if settings.agent_api_key else None
    client = AsyncOpenAI(
        base_url=settings.agent_base_url,
        api_key=key or "unused",
        timeout=settings.agent_timeout_seconds,
        max_retries=0,
    )
    reply = AgentReply()
    calls: dict[int, dict[str, str]] = {}
    content: list[str] = []
    try:
        stream = await client.chat.completions.create(**body)
        async for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.finish_reason:
                reply.finish_reason = choice.finish_reason
            thought = (choice.delta.model_extra or {}).get("reasoning_content")
            if isinstance(thought, str):
                reply.reasoning += thought
            for call in choice.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] = call.function.name or slot["name"]
                    slot["arguments"] += call.function.arguments or ""
            if choice.delta.content:
                content.append(choice.delta.content)
                out.stream.write(choice.delta.content)
                out.stream.flush()
    except OpenAIError as exc:
        raise AgentFailed(f"the agent failed: {type(exc).__name__}: {_short(exc)}") from None
    finally:
        await client.close()
    reply.content = "".join(content)
    reply.tool_calls = [calls[index] for index in sorted(calls)]
    return reply


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]


def describe_calls(reply: AgentReply) -> list[str]:
    """One line per requested tool call: ``name(arguments)``."""
    lines = []
    for call in reply.tool_calls:
        try:
            args = json.dumps(json.loads(call["arguments"] or "{}"), ensure_ascii=False)
        except ValueError:
            args = call["arguments"]
        lines.append(f"{call['name']}({args}) [{call['id']}]")
    return lines
