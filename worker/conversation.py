"""Rebuilding the conversation the agent sees, from the chat's Messages.

The chat's Messages stream is the only memory: nothing is kept in the worker, so a
restart or another worker sees the same conversation. Rules (each fixes a seed bug):

- Every Message appears once (they are read from the log, never appended locally).
- Visitor messages newer than the one being answered are left out: an answer only knows
  what came before its question.
- Terra's reply follows the visitor message it answers (``replyTo``), even when it was
  written after later visitor messages (quick messages answered one by one).
- Canned apologies (replies with status ``error``) are left out: they are not the model's
  words and would teach it to apologise.
- The system prompt comes first, then at most ``max_turns`` turns, oldest first, ending
  with the message being answered.
- Tool turns (the chat's memory, ``ChatLog.tool_turns``: assistant ``tool_calls`` messages
  with content ``""`` and ``tool`` messages with their ``tool_call_id``) follow the visitor
  message they belong to, before Terra's reply, and do not count as turns: a turn is cut
  whole, so no ``tool`` message ever loses its call. They are kept only for questions whose
  reply is in the prompt, and for the message being answered (an earlier attempt's rounds,
  which the tool loop continues). Incomplete or malformed tool turns are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from openai.types.chat import ChatCompletionMessageParam

from bus.schemas import MessagePosted

__all__ = ["DEFAULT_SYSTEM_PROMPT", "ToolTurns", "build_prompt", "clean_tool_turns"]

#: Saved tool turns by visitor message id.
ToolTurns = Mapping[str, Sequence[Mapping[str, Any]]]

DEFAULT_SYSTEM_PROMPT = (
    "You are Terra, the assistant of this website, chatting with its visitors in a small "
    "chat window. The visitors are members of the public, not the site's owner. Be "
    "yourself: friendly, direct and curious. Default to short answers, and say plainly "
    "when you do not know something rather than guessing. Help visitors find their way "
    "around the site and its projects, and feel free to simply chat."
)


def build_prompt(
    messages: Sequence[MessagePosted],
    target: MessagePosted,
    *,
    system_prompt: str,
    max_turns: int,
    tool_turns: ToolTurns | None = None,
) -> list[ChatCompletionMessageParam]:
    """The request messages for answering ``target``.

    ``messages`` are the chat's Messages in log order; they may include messages newer
    than ``target`` (they are filtered as described in the module doc). ``tool_turns``
    are the saved tool turns by visitor message id.
    """
    saved = tool_turns or {}
    position = next((i for i, m in enumerate(messages) if m.id == target.id), None)
    before = list(messages[:position]) if position is not None else list(messages)
    after = list(messages[position + 1 :]) if position is not None else []
    visitors = {m.id for m in before if m.sender == "Visitor"} | {target.id}
    replies: dict[str, MessagePosted] = {}
    for m in [*before, *after]:
        if m.sender == "Terra" and m.replyTo in visitors and m.replyTo not in replies:
            replies[m.replyTo] = m

    ordered: list[MessagePosted] = []
    for m in before:
        if m.sender == "Visitor":
            ordered.append(m)
            reply = replies.get(m.id)
            if reply is not None:
                ordered.append(reply)
        elif m.replyTo not in visitors:
            ordered.append(m)  # a reply whose question is no longer in view
    ordered = [m for m in ordered if m.status != "error" and m.content]

    answered = {m.replyTo for m in ordered if m.sender == "Terra"}
    turns: list[list[ChatCompletionMessageParam]] = []
    seen: set[str] = set()
    for m in ordered:
        if m.id in seen or m.id == target.id:
            continue
        seen.add(m.id)
        if m.sender == "Visitor":
            tools = clean_tool_turns(saved.get(m.id, ())) if m.id in answered else []
            turns.append([{"role": "user", "content": m.content}, *tools])
        else:
            turns.append([{"role": "assistant", "content": m.content}])
    turns.append(
        [{"role": "user", "content": target.content}, *clean_tool_turns(saved.get(target.id, ()))]
    )
    kept = [message for turn in turns[-max_turns:] for message in turn]
    return [{"role": "system", "content": system_prompt}, *kept]


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
