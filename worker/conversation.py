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
"""

from __future__ import annotations

from collections.abc import Sequence

from openai.types.chat import ChatCompletionMessageParam

from bus.schemas import MessagePosted

__all__ = ["DEFAULT_SYSTEM_PROMPT", "build_prompt"]

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
) -> list[ChatCompletionMessageParam]:
    """The request messages for answering ``target``.

    ``messages`` are the chat's Messages in log order; they may include messages newer
    than ``target`` (they are filtered as described in the module doc).
    """
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

    turns: list[ChatCompletionMessageParam] = []
    seen: set[str] = set()
    for m in ordered:
        if m.id in seen or m.id == target.id:
            continue
        seen.add(m.id)
        if m.sender == "Visitor":
            turns.append({"role": "user", "content": m.content})
        else:
            turns.append({"role": "assistant", "content": m.content})
    turns.append({"role": "user", "content": target.content})
    return [{"role": "system", "content": system_prompt}, *turns[-max_turns:]]
