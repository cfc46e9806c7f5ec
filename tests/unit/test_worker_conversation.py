"""Rebuilding the agent's conversation from the chat's Messages (pure, no I/O)."""

from __future__ import annotations

import itertools
from typing import Any

from bus.schemas import MessagePosted
from worker.conversation import DEFAULT_SYSTEM_PROMPT, NO_REPLY, build_prompt

_ids = itertools.count()


def visitor(content: str) -> MessagePosted:
    return MessagePosted(
        id=f"v{next(_ids)}",
        chatId="c",
        sender="Visitor",
        content=content,
        createdAt="2025-01-01T00:00:00.000Z",
    )


def terra(reply_to: MessagePosted | None, content: str, status: Any = None) -> MessagePosted:
    return MessagePosted(
        id=f"t{next(_ids)}",
        chatId="c",
        sender="Terra",
        content=content,
        createdAt="2025-01-01T00:00:00.000Z",
        replyTo=reply_to.id if reply_to else None,
        status=status,
    )


def turns(prompt: list[Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in prompt]


def test_first_message_gets_system_prompt_and_question() -> None:
    q = visitor("hi")
    prompt = build_prompt([q], q, system_prompt="SYS", max_turns=16)
    assert turns(prompt) == [("system", "SYS"), ("user", "hi")]


def test_later_visitor_messages_are_left_out() -> None:
    q1, q2, q3 = visitor("one"), visitor("two"), visitor("three")
    prompt = build_prompt([q1, q2, q3], q1, system_prompt="SYS", max_turns=16)
    assert turns(prompt) == [("system", "SYS"), ("user", "one")]


def test_a_reply_written_after_later_questions_follows_its_own_question() -> None:
    q1, q2 = visitor("one"), visitor("two")
    r1 = terra(q1, "answer one")
    # log order: q1, q2, r1 (q2 arrived while q1 was being answered)
    prompt = build_prompt([q1, q2, r1], q2, system_prompt="SYS", max_turns=16)
    assert turns(prompt)[1:] == [("user", "one"), ("assistant", "answer one"), ("user", "two")]


def test_no_duplicates_and_apologies_replaced_by_a_placeholder_turn() -> None:
    q1, q2, q3 = visitor("one"), visitor("two"), visitor("three")
    r1 = terra(q1, "answer one")
    r2 = terra(q2, "I had trouble talking to Terra's core service.", status="error")
    prompt = build_prompt([q1, r1, q2, r2, q3], q3, system_prompt="SYS", max_turns=16)
    assert turns(prompt)[1:] == [
        ("user", "one"),
        ("assistant", "answer one"),
        ("user", "two"),
        ("assistant", NO_REPLY),
        ("user", "three"),
    ]


def test_stopped_replies_are_kept() -> None:
    q1, q2 = visitor("one"), visitor("two")
    r1 = terra(q1, "partial ans", status="stopped")
    prompt = build_prompt([q1, r1, q2], q2, system_prompt="SYS", max_turns=16)
    assert ("assistant", "partial ans") in turns(prompt)


def test_only_the_last_max_turns_are_kept() -> None:
    log: list[MessagePosted] = []
    for i in range(10):
        q = visitor(f"q{i}")
        log += [q, terra(q, f"a{i}")]
    target = visitor("last")
    log.append(target)
    prompt = build_prompt(log, target, system_prompt=DEFAULT_SYSTEM_PROMPT, max_turns=4)
    # whole exchanges only: a lone "a8" first would break strict chat templates
    assert turns(prompt) == [
        ("system", DEFAULT_SYSTEM_PROMPT),
        ("user", "q9"),
        ("assistant", "a9"),
        ("user", "last"),
    ]


def test_a_reply_whose_question_scrolled_out_is_left_out() -> None:
    q1 = visitor("old")
    r1 = terra(q1, "old answer")
    q2 = visitor("new")
    prompt = build_prompt([r1, q2], q2, system_prompt="SYS", max_turns=16)
    assert turns(prompt)[1:] == [("user", "new")]  # an assistant turn first breaks templates


def test_target_missing_from_the_window_is_still_asked() -> None:
    q1 = visitor("seen")
    target = visitor("not in the window")
    prompt = build_prompt([q1], target, system_prompt="SYS", max_turns=16)
    assert turns(prompt)[-1] == ("user", "not in the window")
