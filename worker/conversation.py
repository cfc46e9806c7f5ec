"""Rebuilding the conversation the agent sees, from the chat's Messages.

The chat's Messages stream is the only memory: nothing is kept in the worker, so a
restart or another worker sees the same conversation. Rules (each fixes a seed bug):

- Every Message appears once (they are read from the log, never appended locally).
- Visitor messages newer than the one being answered are left out: an answer only knows
  what came before its question.
- Terra's reply follows the visitor message it answers (``replyTo``), even when it was
  written after later visitor messages (quick messages answered one by one).
- Roles always alternate ``user``, ``assistant``, ``user``... ending with the message being
  answered, because the chat templates of Gemma, Mistral and Llama 2 (in vLLM, llama.cpp,
  transformers) refuse anything else, and one refused prompt used to break a chat for good.
  A visitor message whose reply failed (status ``error``: canned apologies are not the
  model's words and would teach it to apologise), was stopped before any text, or is
  missing gets :data:`NO_REPLY` as its assistant turn. A reply whose question is no longer
  in view is left out.
- The system prompt is the first message, or, for servers whose template has no system role
  (``AGENT_SYSTEM_ROLE=false``), the start of the first user turn (as Gemma's own template
  places it). Later notes to the model (:func:`worker.template_shapes.fold_system_note`)
  join it there, never between turns.
- At most ``max_turns`` turns, and with a context budget (:class:`PromptRules`) only as many
  whole exchanges (a question and its reply), newest first, as fit the model's context
  minus the answer's ``max_tokens``, counted by ``PromptRules.count``: the server's own
  tokenizer when it has one (:mod:`worker.tokenizer`), else :func:`estimate_tokens`. When the
  message being answered does not fit on its own, :class:`MessageTooLong` says so in one
  sentence.
- Tool turns (the chat's memory, ``ChatLog.tool_turns``: assistant ``tool_calls`` messages
  with content ``""`` and ``tool`` messages with their ``tool_call_id``) follow the visitor
  message they belong to, before Terra's reply, and do not count as turns: an exchange is
  cut whole, so no ``tool`` message ever loses its call. They are kept only for questions
  whose reply is in the prompt, and for the message being answered (an earlier attempt's
  rounds, which the tool loop continues), and only when the server takes tool turns
  (``PromptRules.tool_turns``). Incomplete or malformed tool turns are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from openai.types.chat import ChatCompletionMessageParam

from bus.schemas import MessagePosted
from worker.errors import WorkerError
from worker.saved_turns import clean_tool_turns
from worker.template_shapes import fold_system_note

__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "DEFAULT_SYSTEM_PROMPT",
    "NO_REPLY",
    "TOO_LONG_SENTENCE",
    "MessageTooLong",
    "OverBudget",
    "PromptRules",
    "ToolTurns",
    "build_prompt",
    "clean_tool_turns",
    "estimate_tokens",
    "prompt_texts",
    "prompt_tokens",
]

#: Saved tool turns by visitor message id.
ToolTurns = Mapping[str, Sequence[Mapping[str, Any]]]

DEFAULT_SYSTEM_PROMPT = (
    "You are Terra, the assistant of this website, chatting with its visitors in a small "
    "chat window. The visitors are members of the public, not the site's owner. Be "
    "yourself: friendly, direct and curious. Default to short answers, and say plainly "
    "when you do not know something rather than guessing. Help visitors find their way "
    "around the site and its projects, and feel free to simply chat."
)

#: The assistant turn of a visitor message that got no answer from the model.
NO_REPLY = "(No answer was given to this message.)"

#: The model's context length when neither the server nor ``AGENT_CONTEXT_TOKENS`` says.
DEFAULT_CONTEXT_TOKENS = 4096

#: Tokens counted per message for its role and the template's markers.
MESSAGE_OVERHEAD_TOKENS = 8

#: Share of the context the estimate may use: real tokenizers sometimes beat the estimate.
CONTEXT_SAFETY = 0.9

#: What the visitor reads when their message alone is too long for the model.
TOO_LONG_SENTENCE = (
    "Your message is too long for me to read in one go. Could you shorten it, or send it "
    "in a few smaller parts?"
)


class MessageTooLong(WorkerError):
    """The message being answered does not fit the model's context even on its own.

    ``sentence`` is what the visitor should read instead of an answer; retrying is useless.
    """

    def __init__(self, needed_tokens: int, budget_tokens: int) -> None:
        super().__init__(
            f"the message needs about {needed_tokens} tokens; the prompt budget is {budget_tokens}"
        )
        self.needed_tokens = needed_tokens
        self.budget_tokens = budget_tokens
        self.sentence = TOO_LONG_SENTENCE


class OverBudget(WorkerError):
    """By the estimate, the prompt would have to leave something out for the budget
    (``build_prompt(trim=False)``): worth counting exactly before trimming."""

    def __init__(self, needed_tokens: int, budget_tokens: int) -> None:
        super().__init__(f"about {needed_tokens} tokens for a budget of {budget_tokens}")
        self.needed_tokens = needed_tokens
        self.budget_tokens = budget_tokens


@dataclass(frozen=True, slots=True)
class PromptRules:
    """What the model server accepts; the defaults change nothing but role order.

    ``context_tokens`` is the model's context length (None: no budget); ``answer_tokens``
    is kept free for the answer (the request's ``max_tokens``), at most half the context.
    ``count`` gives a text's tokens (the server's tokenizer's counts, or the estimate).
    """

    system_role: bool = True
    tool_turns: bool = True
    context_tokens: int | None = None
    answer_tokens: int = 0
    count: Callable[[str], int] = field(default=lambda text: estimate_tokens(text))

    def __post_init__(self) -> None:
        if self.context_tokens is not None and self.context_tokens < 1:
            raise ValueError("context_tokens must be >= 1")
        if self.answer_tokens < 0:
            raise ValueError("answer_tokens must be >= 0")

    @classmethod
    def for_server(
        cls,
        *,
        server_context_tokens: int | None,
        setting_context_tokens: int | None,
        max_tokens: int | None,
        system_role: bool = True,
        tool_turns: bool = True,
    ) -> PromptRules:
        """Rules from what the server said (``max_model_len``) and the settings.

        The context is the server's when it says, capped by ``AGENT_CONTEXT_TOKENS`` when
        that is set too; else the setting; else :data:`DEFAULT_CONTEXT_TOKENS`.
        """
        known = [t for t in (server_context_tokens, setting_context_tokens) if t is not None]
        context = min(known) if known else DEFAULT_CONTEXT_TOKENS
        return cls(
            system_role=system_role,
            tool_turns=tool_turns,
            context_tokens=context,
            answer_tokens=max_tokens or 0,
        )

    def with_counts(self, counts: Mapping[str, int]) -> PromptRules:
        """These rules counting with ``counts`` (a tokenizer's; other texts: the estimate)."""
        known = dict(counts)
        return replace(self, count=lambda text: known.get(text) or estimate_tokens(text))

    def may_trim(self, texts: Sequence[str]) -> bool:
        """Whether, by the estimate, a prompt made of ``texts`` may not fit the budget.

        When it may not, counting exactly is worth a request to the server's tokenizer.
        """
        budget = self.budget_tokens
        total = sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(text) for text in texts)
        return budget is not None and total > budget

    @property
    def budget_tokens(self) -> int | None:
        """Tokens the prompt may use (None: unlimited)."""
        if self.context_tokens is None:
            return None
        reserve = min(self.answer_tokens, self.context_tokens // 2)
        return int(self.context_tokens * CONTEXT_SAFETY) - reserve


def estimate_tokens(text: str) -> int:
    """A conservative token count: a token for every 3 bytes of UTF-8, rounded up.

    Tokenizers of current models average about 4 characters of English per token and about
    one token per CJK character (3 bytes), so this over-counts rather than under-counts.
    """
    return -(-len(text.encode()) // 3)


def prompt_tokens(
    messages: Sequence[Mapping[str, Any]], count: Callable[[str], int] = estimate_tokens
) -> int:
    """Tokens of a request's messages by ``count``, with a per-message overhead."""
    total = 0
    for message in messages:
        content = message.get("content")
        total += MESSAGE_OVERHEAD_TOKENS + count(content if isinstance(content, str) else "")
        for call in message.get("tool_calls") or ():
            function = call.get("function", {}) if isinstance(call, Mapping) else {}
            total += count(str(function.get("name", "")))
            total += count(str(function.get("arguments", "")))
    return total


def prompt_texts(
    messages: Sequence[MessagePosted], system_prompt: str, tool_turns: ToolTurns | None = None
) -> list[str]:
    """Every text a prompt built from these may contain, to count with a tokenizer."""
    texts = [system_prompt, NO_REPLY, *(m.content for m in messages)]
    for turns in (tool_turns or {}).values():
        for turn in turns:
            texts.append(str(turn.get("content") or ""))
            for call in turn.get("tool_calls") or ():
                function = call.get("function", {}) if isinstance(call, Mapping) else {}
                texts += [str(function.get("name", "")), str(function.get("arguments", ""))]
    return [text for text in dict.fromkeys(texts) if text]


@dataclass(slots=True)
class _Exchange:
    """A visitor message, its tool turns and Terra's reply (None: the one being answered)."""

    question: str
    tools: list[ChatCompletionMessageParam] = field(default_factory=list)
    reply: str | None = None

    def messages(self) -> list[ChatCompletionMessageParam]:
        out: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": self.question},
            *self.tools,
        ]
        if self.reply is not None:
            out.append({"role": "assistant", "content": self.reply})
        return out

    @property
    def turns(self) -> int:
        return 1 if self.reply is None else 2


def build_prompt(
    messages: Sequence[MessagePosted],
    target: MessagePosted,
    *,
    system_prompt: str,
    max_turns: int,
    tool_turns: ToolTurns | None = None,
    rules: PromptRules | None = None,
    trim: bool = True,
) -> list[ChatCompletionMessageParam]:
    """The request messages for answering ``target``.

    ``messages`` are the chat's Messages in log order; they may include messages newer
    than ``target`` (they are filtered as described in the module doc). ``tool_turns``
    are the saved tool turns by visitor message id. Raises :class:`MessageTooLong` when
    ``rules`` set a budget that ``target`` alone exceeds; with ``trim=False``,
    :class:`OverBudget` as soon as anything would have to be left out for the budget.
    """
    rules = rules or PromptRules()
    saved = tool_turns if rules.tool_turns and tool_turns else {}
    end = len(messages)  # the target is usually the newest Message: look from the end
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].id == target.id:
            end = index
            break
    replies: dict[str, MessagePosted] = {}
    for m in reversed(messages):  # the earliest reply to a question wins
        if m.sender == "Terra" and m.replyTo is not None:
            replies[m.replyTo] = m

    # Newest first, only as many exchanges as ``max_turns`` may keep (the copy holds up
    # to four times more): the older ones would be cut anyway.
    newest_first: list[_Exchange] = []
    turns = 1  # the current exchange: the question
    seen: set[str] = set()
    for index in range(end - 1, -1, -1):
        m = messages[index]
        if m.sender != "Visitor" or m.id in seen or m.id == target.id:
            continue  # replies are placed with their question; orphans are left out
        seen.add(m.id)
        turns += 2
        if turns > max_turns:
            break
        reply = replies.get(m.id)
        answered = reply is not None and reply.status != "error" and bool(reply.content)
        newest_first.append(
            _Exchange(
                question=m.content,
                tools=clean_tool_turns(saved.get(m.id, ())) if answered else [],
                reply=reply.content if answered and reply is not None else NO_REPLY,
            )
        )
    current = _Exchange(question=target.content, tools=clean_tool_turns(saved.get(target.id, ())))
    return _fit(newest_first[::-1], current, system_prompt, max_turns, rules, trim)


def _fit(
    history: list[_Exchange],
    current: _Exchange,
    system_prompt: str,
    max_turns: int,
    rules: PromptRules,
    trim: bool = True,
) -> list[ChatCompletionMessageParam]:
    """The newest exchanges that fit ``max_turns`` and the token budget, rendered."""
    kept: list[_Exchange] = []
    turns = current.turns
    for exchange in reversed(history):
        turns += exchange.turns
        if turns > max_turns:
            break
        kept.insert(0, exchange)
    budget = rules.budget_tokens
    if budget is None:
        return _render([*kept, current], system_prompt, rules)
    # Counted by part (the system prompt, each exchange): the same sum as the rendered
    # prompt's, also when the system prompt is folded into the first user turn.
    fixed = MESSAGE_OVERHEAD_TOKENS + rules.count(system_prompt)
    sizes = [prompt_tokens(e.messages(), rules.count) for e in kept]
    needed = fixed + sum(sizes) + prompt_tokens(current.messages(), rules.count)
    if needed > budget and not trim:
        raise OverBudget(needed, budget)
    while needed > budget and kept:
        kept.pop(0)
        needed -= sizes.pop(0)
    if needed > budget and current.tools:
        # An earlier attempt's tool rounds: the tool loop can do them again.
        current = _Exchange(question=current.question)
        needed = fixed + prompt_tokens(current.messages(), rules.count)
    if needed > budget:
        raise MessageTooLong(needed, budget)
    return _render([*kept, current], system_prompt, rules)


def _render(
    exchanges: Sequence[_Exchange], system_prompt: str, rules: PromptRules
) -> list[ChatCompletionMessageParam]:
    turns = [message for exchange in exchanges for message in exchange.messages()]
    if rules.system_role:
        return [{"role": "system", "content": system_prompt}, *turns]
    return fold_system_note(turns, system_prompt)
