"""Reshaping request messages for strict chat templates (Gemma 3, Mistral, Llama 2).

Such templates refuse a ``system`` turn anywhere but first (some refuse it there too) and
know no ``tool`` role, so: notes to the model join the system content
(:func:`fold_system_note`), and tool rounds can be written as plain alternating turns
(:func:`tool_turns_as_text`). Pure functions; the input is never changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from openai.types.chat import ChatCompletionMessageParam

__all__ = ["fold_system_note", "tool_turns_as_text"]


def fold_system_note(
    messages: Sequence[ChatCompletionMessageParam], note: str
) -> list[ChatCompletionMessageParam]:
    """``messages`` with ``note`` added to the system content, never as a turn of its own.

    The note joins the leading ``system`` message, or, when the system prompt lives in the
    first user turn (no system role), goes in front of that turn.
    """
    folded = [cast(dict[str, Any], dict(m)) for m in messages]
    if folded and folded[0].get("role") == "system":
        folded[0]["content"] = f"{folded[0].get('content') or ''}\n\n{note}"
    else:
        first_user = next((m for m in folded if m.get("role") == "user"), None)
        if first_user is None:
            folded.insert(0, {"role": "user", "content": note})
        else:
            first_user["content"] = f"{note}\n\n{first_user.get('content') or ''}"
    return cast(list[ChatCompletionMessageParam], folded)


def tool_turns_as_text(
    messages: Sequence[ChatCompletionMessageParam],
) -> list[ChatCompletionMessageParam]:
    """``messages`` with tool rounds written as plain turns, for templates with no tool roles.

    An assistant ``tool_calls`` message becomes assistant text naming each call, the ``tool``
    results after it one user turn; consecutive turns of one role are then merged, so roles
    alternate as strict templates (Gemma 3) require.
    """
    plain: list[dict[str, Any]] = []
    for raw in messages:
        message = cast(Mapping[str, Any], raw)
        role, content = message.get("role"), message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = [
                f"[called {call['function']['name']} with {call['function']['arguments'] or '{}'}]"
                for call in message["tool_calls"]
            ]
            text = "\n".join([content, *calls] if content else calls)
            plain.append({"role": "assistant", "content": text})
        elif role == "tool":
            plain.append({"role": "user", "content": str(content)})
        else:
            plain.append(dict(message))
    merged: list[dict[str, Any]] = []
    for message in plain:
        if merged and message["role"] == merged[-1]["role"] and message["role"] != "system":
            merged[-1]["content"] = f"{merged[-1]['content']}\n\n{message['content']}"
        else:
            merged.append(message)
    return cast(list[ChatCompletionMessageParam], merged)
