"""The worker's copy of a chat (issue 10): what OPEN read is merged, the window and the text
budget hold, and the pending messages are decided as ChatLog.unanswered_until decides."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bus import Opening
from bus.schemas import MessagePosted
from worker.chat_cache import Begun, ConversationCache, open_answer
from worker.conversation import PromptRules, build_prompt


def msg(
    n: int, sender: str = "Visitor", reply_to: str | None = None, size: int = 1
) -> MessagePosted:
    return MessagePosted(
        id=f"m{n}",
        chatId="c",
        sender=sender,
        content="x" * size,
        createdAt="2026-01-01T00:00:00.000Z",
        replyTo=reply_to,
    )


def opening(*messages: MessagePosted, fresh: bool = False, first: int = 0) -> Opening:
    entries = [(f"{first + i}-0", m) for i, m in enumerate(messages)]
    return Opening("open", fresh=fresh, entries=entries[::-1])


def test_the_copy_grows_by_what_is_newer_and_keeps_the_window() -> None:
    cache = ConversationCache(window=5)
    copy = cache.update("c", opening(msg(1), msg(2, "Terra", "m1"), fresh=True))
    assert copy.whole
    assert copy.unanswered_until("m1") == []  # answered
    copy = cache.update("c", opening(msg(3), msg(4), msg(5), first=2))
    assert copy.whole
    assert [m.id for _, m in copy.unanswered_until("m4") or []] == ["m3", "m4"]
    copy = cache.update("c", opening(msg(6), first=5))
    assert [m.id for _, m in copy.entries] == ["m2", "m3", "m4", "m5", "m6"]
    assert not copy.whole
    assert copy.has("m6")
    assert not copy.has("m1")
    # m1 (answered, where the walk would stop) left the window: the copy cannot decide
    assert copy.unanswered_until("m4") is None


def test_the_copy_cannot_decide_past_its_window() -> None:
    cache = ConversationCache(window=3)
    copy = cache.update("c", opening(msg(1), msg(2), msg(3), msg(4), fresh=True))
    # every message unanswered and the window full: older ones may be waiting too
    assert copy.unanswered_until("m4") is None


def test_the_text_budget_drops_the_least_recently_used_chats() -> None:
    cache = ConversationCache(window=8, text=250)
    for chat in ("a", "b", "c"):
        cache.update(chat, opening(msg(1, size=100), fresh=True))
    assert cache.get("a") is None  # 300 characters: the oldest went
    assert cache.get("b") is not None
    assert cache.size == 200
    cache.update("c", opening(msg(2, size=100), first=1))
    assert cache.get("b") is None  # c grew; b was the least recently used
    assert cache.size == 200


class _Opener:
    """OPEN as the bus answers it: nothing newer in the log, no reply to the message."""

    def __init__(self, result: Opening) -> None:
        self.result = result

    async def open(self, chat_id: str, message_id: str, **_: object) -> Opening:
        return self.result


async def test_a_reply_the_bus_forgot_makes_the_message_waiting_again() -> None:
    """``terrarium-ops requeue`` drops a dead letter's apology from the chat's replies, so
    the job it adds finds no reply in OPEN: the copy, which saw the apology, must not
    count the message as answered (it did, and the requeued job answered nothing)."""
    cache = ConversationCache(window=8)
    cache.update("c", opening(msg(1), msg(2, "Terra", "m1"), fresh=True))
    nothing_newer = Opening("open", fresh=False, entries=[])
    opened = await open_answer(_Opener(nothing_newer), cache, "c", "m1")  # type: ignore[arg-type]
    assert opened is not None
    _, pending = opened
    assert [m.id for _, m in pending or []] == ["m1"]


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("max_turns", [1, 2, 3, 5, 16])
def test_the_prompt_from_the_copys_tail_is_the_prompt_from_the_whole_copy(
    seed: int, max_turns: int
) -> None:
    """prompt_sources hands build_prompt only the tail a prompt of max_turns can use
    (issue 10); the prompt is the same as from every Message held: questions answered,
    unanswered, answered with an error, replies out of order, tool memory."""
    rng = random.Random(seed)
    messages: list[MessagePosted] = []
    memory: dict[str, list[dict[str, Any]] | None] = {}
    questions: list[str] = []
    for n in range(rng.randint(1, 40)):
        if questions and rng.random() < 0.45:
            asked = rng.choice(questions[-3:])
            status = rng.choice(["complete", "complete", "error", "stopped"])
            reply = msg(n, "Terra", reply_to=asked, size=rng.randint(0, 3))
            messages.append(reply.model_copy(update={"status": status}))
        else:
            question = msg(n, size=rng.randint(1, 3))
            messages.append(question)
            questions.append(question.id)
            memory[question.id] = None
            if rng.random() < 0.3:
                memory[question.id] = [
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "id": f"t{n}",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": f"t{n}", "content": f"r{n}"},
                ]
    target = msg(99, size=2)
    messages.append(target)
    memory[target.id] = None
    cache = ConversationCache(window=64)
    copy = cache.update("c", opening(*messages, fresh=True))
    begun = Begun(copy, Opening("open", memory=memory))

    recent, saved = begun.prompt_sources(target.id, max_turns)

    assert saved is not None
    whole = [m for _, m in copy.entries]
    rules = PromptRules(tool_turns=True)
    expected = build_prompt(
        whole,
        target,
        system_prompt="S",
        max_turns=max_turns,
        tool_turns={k: v for k, v in memory.items() if v},
        rules=rules,
    )
    got = build_prompt(
        recent, target, system_prompt="S", max_turns=max_turns, tool_turns=saved, rules=rules
    )
    assert got == expected
