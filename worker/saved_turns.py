"""Saved tool turns (the tool loop's memory of a question) as request messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from openai.types.chat import ChatCompletionMessageParam

__all__ = ["clean_tool_turns"]


def _tool_call(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    function = raw.get("function")
    call_id = raw.get("id")
    if not isinstance(function, Mapping) or not isinstance(call_id, str) or not call_id:
        return None
    name, arguments = function.get("name"), function.get("arguments", "")
    if not isinstance(name, str) or not isinstance(arguments, str):
        return None
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def clean_tool_turns(raw: Sequence[Mapping[str, Any]]) -> list[ChatCompletionMessageParam]:
    """Saved tool turns as request messages: complete rounds only, oldest first.

    A round is an assistant message with ``tool_calls`` (its content sent as ``""``: the
    agent rejects null) followed by one ``tool`` message per call. Reading stops at the
    first round that is malformed or misses a result.
    """
    cleaned: list[ChatCompletionMessageParam] = []
    index = 0
    while index < len(raw):
        head = raw[index]
        calls = head.get("tool_calls") if head.get("role") == "assistant" else None
        if not isinstance(calls, list) or not calls:
            break
        parsed = [_tool_call(call) for call in calls]
        wanted = [call["id"] for call in parsed if call is not None]
        if len(wanted) != len(parsed):
            break
        results: dict[str, dict[str, Any]] = {}
        index += 1
        while index < len(raw) and raw[index].get("role") == "tool":
            reply = raw[index]
            call_id, content = reply.get("tool_call_id"), reply.get("content")
            if isinstance(call_id, str) and isinstance(content, str) and call_id in wanted:
                result: dict[str, Any] = {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": content,
                }
                if isinstance(reply.get("name"), str):
                    result["name"] = reply["name"]
                results.setdefault(call_id, result)
            index += 1
        if set(results) != set(wanted):
            break
        cleaned.append(
            cast(
                ChatCompletionMessageParam,
                {"role": "assistant", "content": "", "tool_calls": parsed},
            )
        )
        cleaned += [
            cast(ChatCompletionMessageParam, results[call_id]) for call_id in dict.fromkeys(wanted)
        ]
    return cleaned
