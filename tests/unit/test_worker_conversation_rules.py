"""Prompts every mainstream chat template accepts, within the model's context (issue 16).

The checker is the demo agent's own request check (`demo.agent_script.request_rejection`,
the rules of Gemma 3's template and vLLM's context limit), run on seeded random chats.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from bus.schemas import MessagePosted
from demo.agent_script import CompletionRequest, Quirk, request_rejection
from demo.agent_script import prompt_tokens as demo_prompt_tokens
from worker.conversation import (
    DEFAULT_CONTEXT_TOKENS,
    NO_REPLY,
    MessageTooLong,
    PromptRules,
    build_prompt,
    estimate_tokens,
    prompt_tokens,
)
from worker.template_shapes import fold_system_note, tool_turns_as_text

_ids = itertools.count()


def visitor(content: str) -> MessagePosted:
    return MessagePosted(
        id=f"v{next(_ids)}",
        chatId="c",
        sender="Visitor",
        content=content,
        createdAt="2025-01-01T00:00:00.000Z",
    )


def terra(reply_to: MessagePosted, content: str, status: Any = None) -> MessagePosted:
    return MessagePosted(
        id=f"t{next(_ids)}",
        chatId="c",
        sender="Terra",
        content=content,
        createdAt="2025-01-01T00:00:00.000Z",
        replyTo=reply_to.id,
        status=status,
    )


def turns(prompt: list[Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in prompt]


def round_of(call_id: str) -> list[dict[str, Any]]:
    call = {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
    return [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "R"},
    ]


def as_request(prompt: list[Any], max_tokens: int | None = None) -> CompletionRequest:
    body: dict[str, Any] = {"messages": prompt}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return CompletionRequest.model_validate_json(json.dumps(body))


# --- roles alternate ------------------------------------------------------------------------


def test_a_reply_stopped_before_any_text_leaves_a_placeholder() -> None:
    q1, q2 = visitor("one"), visitor("two")
    prompt = build_prompt(
        [q1, terra(q1, "", status="stopped"), q2], q2, system_prompt="S", max_turns=16
    )
    assert turns(prompt) == [
        ("system", "S"),
        ("user", "one"),
        ("assistant", NO_REPLY),
        ("user", "two"),
    ]


def test_a_message_with_no_reply_at_all_leaves_a_placeholder() -> None:
    q1, q2 = visitor("one"), visitor("two")
    prompt = build_prompt([q1, q2], q2, system_prompt="S", max_turns=16)
    assert turns(prompt)[1:] == [("user", "one"), ("assistant", NO_REPLY), ("user", "two")]


def test_one_failed_answer_does_not_break_the_chat_for_good() -> None:
    """The issue's story: after a failure every later prompt had one more user turn."""
    log: list[MessagePosted] = []
    for index in range(5):
        question = visitor(f"q{index}")
        log.append(question)
        prompt = build_prompt(log, question, system_prompt="S", max_turns=16)
        strict: frozenset[Quirk] = frozenset({"strict_roles"})
        assert request_rejection(as_request(prompt), quirks=strict, context_tokens=None) is None
        log.append(terra(question, "sorry", status="error" if index < 3 else None))


def test_without_a_system_role_the_prompt_opens_the_first_user_turn() -> None:
    q1, q2 = visitor("one"), visitor("two")
    rules = PromptRules(system_role=False)
    prompt = build_prompt(
        [q1, terra(q1, "1"), q2], q2, system_prompt="S", max_turns=16, rules=rules
    )
    assert turns(prompt) == [("user", "S\n\none"), ("assistant", "1"), ("user", "two")]
    no_system: frozenset[Quirk] = frozenset({"no_system_role", "strict_roles"})
    assert request_rejection(as_request(prompt), quirks=no_system, context_tokens=None) is None


def test_notes_join_the_system_content_never_a_turn_between() -> None:
    q1, q2 = visitor("one"), visitor("two")
    log = [q1, terra(q1, "1"), q2]
    with_role = build_prompt(log, q2, system_prompt="S", max_turns=16)
    assert turns(fold_system_note(with_role, "N"))[0] == ("system", "S\n\nN")
    without = build_prompt(
        log, q2, system_prompt="S", max_turns=16, rules=PromptRules(system_role=False)
    )
    folded = fold_system_note(without, "N")
    assert turns(folded)[0] == ("user", "N\n\nS\n\none")
    assert [m["role"] for m in folded] == ["user", "assistant", "user"]
    assert turns(with_role)[0] == ("system", "S")  # the input is left alone


def test_tool_turns_are_left_out_for_servers_without_tools() -> None:
    q1, q2 = visitor("one"), visitor("two")
    memory = {q1.id: round_of("a"), q2.id: round_of("b")}
    rules = PromptRules(tool_turns=False)
    prompt = build_prompt(
        [q1, terra(q1, "1"), q2],
        q2,
        system_prompt="S",
        max_turns=16,
        tool_turns=memory,
        rules=rules,
    )
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]


# --- the context budget ---------------------------------------------------------------------


def test_estimate_never_counts_fewer_tokens_than_the_demo_agent() -> None:
    for text in ("hello world " * 50, "木漏れ日" * 40, "🌱🪴" * 30, "x", ""):
        message = [{"role": "user", "content": text}]
        assert prompt_tokens(message) >= demo_prompt_tokens(as_request(message))
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 2


def test_rules_take_the_servers_context_capped_by_the_setting() -> None:
    def context(server: int | None, setting: int | None) -> int | None:
        rules = PromptRules.for_server(
            server_context_tokens=server, setting_context_tokens=setting, max_tokens=100
        )
        return rules.context_tokens

    assert context(32768, None) == 32768
    assert context(32768, 8192) == 8192
    assert context(None, 8192) == 8192
    assert context(None, None) == DEFAULT_CONTEXT_TOKENS
    assert PromptRules(context_tokens=1000, answer_tokens=100).budget_tokens == 800
    assert PromptRules(context_tokens=1000, answer_tokens=900).budget_tokens == 400


def test_history_is_trimmed_oldest_first_to_fit_the_budget() -> None:
    log: list[MessagePosted] = []
    for index in range(6):
        question = visitor(f"q{index} " + "x" * 300)
        log += [question, terra(question, f"a{index} " + "y" * 300)]
    target = visitor("last")
    log.append(target)
    rules = PromptRules(context_tokens=1000, answer_tokens=200)
    prompt = build_prompt(log, target, system_prompt="S", max_turns=50, rules=rules)
    assert prompt_tokens(prompt) <= 700
    kept = [content.split()[0] for _, content in turns(prompt)[1:]]
    assert kept == ["q3", "a3", "q4", "a4", "q5", "a5", "last"]
    # and the real (demo) server accepts it with the answer's max_tokens
    assert (
        request_rejection(as_request(prompt, 200), quirks=frozenset(), context_tokens=1000) is None
    )


def test_a_message_too_long_on_its_own_gets_a_sentence_not_a_retry() -> None:
    target = visitor("z" * 5000)
    rules = PromptRules(context_tokens=1000, answer_tokens=200)
    with pytest.raises(MessageTooLong) as caught:
        build_prompt([target], target, system_prompt="S", max_turns=16, rules=rules)
    assert "too long" in caught.value.sentence
    assert caught.value.needed_tokens > caught.value.budget_tokens == 700


def test_the_targets_old_tool_rounds_go_before_the_target_itself() -> None:
    target = visitor("short question")
    big_round = round_of("a")
    big_round[1]["content"] = "R" * 3000
    rules = PromptRules(context_tokens=1000, answer_tokens=200)
    prompt = build_prompt(
        [target],
        target,
        system_prompt="S",
        max_turns=16,
        tool_turns={target.id: big_round},
        rules=rules,
    )
    assert turns(prompt) == [("system", "S"), ("user", "short question")]


@pytest.mark.parametrize("system_role", [True, False])
def test_random_chats_always_pass_strict_templates_and_the_context_limit(system_role: bool) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    wanted: set[Quirk] = {"strict_roles"} if system_role else {"strict_roles", "no_system_role"}
    strict = frozenset(wanted)
    for case in range(150):
        log: list[MessagePosted] = []
        questions: list[MessagePosted] = []
        memory: dict[str, list[dict[str, Any]]] = {}
        for _ in range(rng.randrange(1, 14)):
            question = visitor("q" * rng.randrange(1, 900))
            log.append(question)
            questions.append(question)
            if rng.random() < 0.2:
                memory[question.id] = round_of(question.id)
            kind = rng.choice(["ok", "ok", "error", "stopped", "empty", "none"])
            if kind == "ok":
                log.append(terra(question, "a" * rng.randrange(1, 900)))
            elif kind == "error":
                log.append(terra(question, "sorry", status="error"))
            elif kind == "stopped":
                log.append(terra(question, "part", status="stopped"))
            elif kind == "empty":
                log.append(terra(question, "", status="stopped"))
        target = rng.choice(questions)
        context, answer = rng.choice([(1200, 200), (2048, 512), (4096, 1024)])
        rules = PromptRules(
            system_role=system_role, tool_turns=False, context_tokens=context, answer_tokens=answer
        )
        try:
            prompt = build_prompt(
                log,
                target,
                system_prompt="S" * 200,
                max_turns=rng.randrange(1, 20),
                tool_turns=memory,
                rules=rules,
            )
        except MessageTooLong:
            continue
        request = as_request(prompt, answer)
        rejection = request_rejection(request, quirks=strict, context_tokens=context)
        assert rejection is None, f"seed={seed} case={case}: {rejection}"
        assert prompt[-1]["role"] == "user", f"seed={seed} case={case}"


def test_tool_rounds_as_text_alternate_for_templates_without_tool_roles() -> None:
    call = {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"q": 1}'}}
    prompt: list[Any] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "let me look", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "a", "content": "R1"},
        {"role": "tool", "tool_call_id": "b", "content": "R2"},
    ]
    plain = tool_turns_as_text(prompt)
    assert turns(plain) == [
        ("system", "S"),
        ("user", "Q"),
        ("assistant", 'let me look\n[called f with {"q": 1}]'),
        ("user", "R1\n\nR2"),
    ]
    strict: frozenset[Quirk] = frozenset({"strict_roles"})
    assert request_rejection(as_request(plain), quirks=strict, context_tokens=None) is None
    assert request_rejection(as_request(prompt), quirks=strict, context_tokens=None) is not None
