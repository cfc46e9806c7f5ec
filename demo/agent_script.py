"""What the offline demo agent says: request schema, directives and reply planning.

Pure functions, no I/O; `demo.agent` serves the plans over HTTP. The directive grammar is
documented in `demo.agent`'s module docstring.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "QUIRKS",
    "ChatMessage",
    "CompletionRequest",
    "DirectiveError",
    "Directives",
    "PlannedToolCall",
    "Quirk",
    "ReplyPlan",
    "ScriptedCall",
    "describe_validation_error",
    "fragment_arguments",
    "last_user_directives",
    "parse_directives",
    "plan_reply",
    "prompt_tokens",
    "request_rejection",
    "split_tokens",
    "text_tokens",
]

FinishReason = Literal["stop", "length", "tool_calls"]
StreamFailure = Literal["error", "disconnect", "no_done"]
#: Behaviours of real servers the demo agent can imitate (see `demo.agent`'s docstring).
Quirk = Literal[
    "strict_roles",
    "no_system_role",
    "no_done",
    "empty_tool_stream",
    "empty_errors",
    "no_health",
    "hide_context_length",
    "no_tokenizer",
    "interrupt_requests",
]
QUIRKS: tuple[Quirk, ...] = get_args(Quirk)

_DIRECTIVE_RE = re.compile(r"\[\[demo:([a-z0-9_]+)(?:=(.*?))?\]\]", re.DOTALL)
_TOKEN_RE = re.compile(r"\s*\S+|\s+")
_TRIGGER_RE = re.compile(
    r"\b(projects?|site|website|portfolio|works?|working|built|build(?:ing)?)\b", re.IGNORECASE
)
_TOOL_RESULT_RE = re.compile(r"^\s*<tool_result[^>]*>\s*(.*?)\s*</tool_result>\s*$", re.DOTALL)
_RESULTS_TEXT_RE = re.compile(r"(?:\s*<tool_result[^>]*>.*?</tool_result>\s*)+", re.DOTALL)
_SNIPPET_KEYS = ("snippet", "content", "result", "text", "error")
_FILLER = (" moss", " fern", " pebble", " dew", " lichen", " sprout", " glass", " soil")
_OPENERS = ("Hi there! 🌱", "Hello from the terrarium!", "Hey! Pull up a pebble.")
_FLAGS = frozenset({"error", "disconnect", "no_done", "reasoning", "think", "echo"})
_MAX_PIECE = 8
_MAX_TOKENS_DIRECTIVE = 100_000
_DEFAULT_STALL_SECONDS = 5.0
#: Prompt tokens the demo charges per message on top of its text (role, template markers).
_MESSAGE_OVERHEAD_TOKENS = 4
_ROLES_MUST_ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."
_NO_SYSTEM_ROLE = "System role not supported"


class DirectiveError(ValueError):
    """A `[[demo:...]]` directive is unknown or malformed (the server answers 400)."""


class ChatMessage(BaseModel):
    """One message as terrarium-agent accepts it: `content` must be a string, never null."""

    model_config = ConfigDict(extra="allow", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ToolFunction(BaseModel):
    """The `function` part of an offered tool."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(BaseModel):
    """An offered tool (`{"type": "function", "function": {...}}`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["function"]
    function: ToolFunction


class StreamOptions(BaseModel):
    """OpenAI `stream_options`; only `include_usage` means anything here."""

    model_config = ConfigDict(extra="allow", frozen=True)

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """`POST /v1/chat/completions` body, checked strictly (validate from JSON text)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: str | list[str] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stream_options: StreamOptions | None = None


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's report into one readable line: `messages.1.content: ...; ...`."""
    parts: list[str] = []
    for item in error.errors()[:3]:
        where = ".".join(str(loc) for loc in item["loc"]) or "body"
        message = item["msg"]
        if item["loc"] and item["loc"][-1] == "content" and item.get("input", "") is None:
            message = 'must be a string; terrarium-agent rejects null content (send "")'
        parts.append(f"{where}: {message}")
    more = len(error.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """A tool call asked for by a directive; `arguments` None means "pick defaults"."""

    name: str
    arguments: dict[str, Any] | None = None
    raw_arguments: str | None = None


@dataclass(frozen=True, slots=True)
class Directives:
    """Everything the `[[demo:...]]` directives of one message asked for."""

    text: str = ""
    tokens: int | None = None
    delay_ms: float | None = None
    error: bool = False
    http_status: int | None = None
    disconnect: bool = False
    no_done: bool = False
    stall_seconds: float | None = None
    reasoning: bool = False
    think: bool = False
    echo: bool = False
    tools: tuple[ScriptedCall, ...] = ()
    tools2: tuple[ScriptedCall, ...] = ()
    textual_tool: ScriptedCall | None = None
    quirks: frozenset[Quirk] = frozenset()
    context_tokens: int | None = None


def parse_directives(text: str) -> Directives:
    """Read the directives in `text`; `Directives.text` is `text` without them, stripped.

    Raises `DirectiveError` for an unknown name or a bad value.
    """
    found: dict[str, Any] = {"tools": [], "tools2": [], "quirks": set()}
    for match in _DIRECTIVE_RE.finditer(text):
        name, value = match.group(1), match.group(2)
        _apply_directive(found, name, value.strip() if value is not None else None)
    found["tools"] = tuple(found["tools"])
    found["tools2"] = tuple(found["tools2"])
    found["quirks"] = frozenset(found["quirks"])
    clean = _DIRECTIVE_RE.sub("", text).strip()
    return Directives(text=clean, **found)


def _apply_directive(found: dict[str, Any], name: str, value: str | None) -> None:
    if name in _FLAGS:
        if value is not None:
            raise DirectiveError(f"[[demo:{name}]] takes no value")
        found[name] = True
    elif name == "tokens":
        found["tokens"] = int(_number(name, value, low=0, high=_MAX_TOKENS_DIRECTIVE))
    elif name == "delay":
        found["delay_ms"] = _number(name, value, low=0, high=60_000)
    elif name == "http":
        found["http_status"] = int(_number(name, value, low=400, high=599))
    elif name == "stall":
        seconds = _DEFAULT_STALL_SECONDS if value is None else _number(name, value, 0, 3600)
        found["stall_seconds"] = seconds
    elif name in ("tool", "tool2"):
        found["tools" if name == "tool" else "tools2"].append(_scripted_call(name, value))
    elif name == "textual_tool":
        # NAME may spell "_" as "-": the worker runs no textual call of a tool the visitor
        # named, and the directive is part of the visitor's message.
        call = _scripted_call(name, value)
        found["textual_tool"] = ScriptedCall(call.name.replace("-", "_"), call.arguments)
    elif name == "quirk":
        if value not in QUIRKS:
            raise DirectiveError(f"[[demo:quirk={value}]]: quirks are {', '.join(QUIRKS)}")
        found["quirks"].add(value)
    elif name == "context":
        found["context_tokens"] = int(_number(name, value, low=1, high=10_000_000))
    elif name == "badargs":
        call = _scripted_call(name, value)
        if call.arguments is not None:
            raise DirectiveError("[[demo:badargs=NAME]] takes only a tool name")
        found["tools"].append(ScriptedCall(call.name, raw_arguments='{"query": "unfinished'))
    else:
        raise DirectiveError(f"unknown directive [[demo:{name}]]")


def _number(name: str, value: str | None, low: float, high: float) -> float:
    if value is None:
        raise DirectiveError(f"[[demo:{name}=N]] needs a number")
    try:
        number = float(value)
    except ValueError:
        raise DirectiveError(f"[[demo:{name}={value}]]: {value!r} is not a number") from None
    if not low <= number <= high:
        raise DirectiveError(f"[[demo:{name}={value}]]: must be between {low:g} and {high:g}")
    return number


def _scripted_call(name: str, value: str | None) -> ScriptedCall:
    if not value:
        raise DirectiveError(f"[[demo:{name}=NAME {{json}}]] needs a tool name")
    tool, _, rest = value.partition(" ")
    rest = rest.strip()
    if not rest:
        return ScriptedCall(tool)
    try:
        arguments = json.loads(rest)
    except json.JSONDecodeError as exc:
        raise DirectiveError(f"[[demo:{name}={value}]]: arguments are not JSON ({exc})") from None
    if not isinstance(arguments, dict):
        raise DirectiveError(f"[[demo:{name}={value}]]: arguments must be a JSON object")
    return ScriptedCall(tool, arguments)


def split_tokens(text: str) -> list[str]:
    """Cut text into word pieces (leading whitespace kept); joining them gives `text` back."""
    pieces: list[str] = []
    for word in _TOKEN_RE.findall(text):
        pieces.extend(word[i : i + _MAX_PIECE] for i in range(0, len(word), _MAX_PIECE))
    return pieces


def fragment_arguments(arguments: str) -> list[str]:
    """Cut a JSON argument string into the several fragments a streamed call carries."""
    if len(arguments) < 2:
        return [arguments]
    size = max(1, min(7, len(arguments) // 2))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def last_user_directives(request: CompletionRequest) -> Directives:
    """The directives of the request's last user message (none without one).

    Raises `DirectiveError`.
    """
    for message in reversed(request.messages):
        if message.role == "user" and not _is_result_text(message):
            return parse_directives(message.content)
    return Directives()


def _is_result_text(message: ChatMessage) -> bool:
    """A user turn made only of ``<tool_result>`` blocks: tool results sent as text."""
    return message.role == "user" and _RESULTS_TEXT_RE.fullmatch(message.content) is not None


def _is_result(message: ChatMessage) -> bool:
    return message.role == "tool" or _is_result_text(message)


def text_tokens(text: str) -> int:
    """The demo's token count of a text: a quarter of its characters, rounded up."""
    return -(-len(text) // 4)


def prompt_tokens(request: CompletionRequest) -> int:
    """The demo's token count of a prompt: `text_tokens` of each message plus 4 per
    message. Real tokenizers vary; this one only has to be stable."""
    total = 0
    for message in request.messages:
        text = message.content + (json.dumps(message.tool_calls) if message.tool_calls else "")
        total += text_tokens(text) + _MESSAGE_OVERHEAD_TOKENS
    return total


def request_rejection(
    request: CompletionRequest, *, quirks: frozenset[Quirk], context_tokens: int | None
) -> str | None:
    """The error message a real server with these quirks answers `request` with, or None.

    - ``no_system_role``: any ``system`` message is refused (Gemma 2 / Mistral templates).
    - ``strict_roles``: after an optional leading ``system`` message, roles must be
      ``user``, ``assistant``, ``user``... (Gemma 3, Mistral, Llama 2 chat templates; a
      ``tool`` message or a later ``system`` message breaks the pattern).
    - ``context_tokens``: prompt tokens (`prompt_tokens`) plus ``max_tokens`` must fit,
      worded as vLLM words it.
    """
    messages = list(request.messages)
    if "no_system_role" in quirks and any(m.role == "system" for m in messages):
        return _NO_SYSTEM_ROLE
    if "strict_roles" in quirks:
        turns = messages[1:] if messages and messages[0].role == "system" else messages
        for index, message in enumerate(turns):
            if message.role != ("user" if index % 2 == 0 else "assistant"):
                return _ROLES_MUST_ALTERNATE
    if context_tokens is not None:
        prompt = prompt_tokens(request)
        if request.max_tokens is None and prompt > context_tokens:
            return (
                f"This model's maximum context length is {context_tokens} tokens. However, "
                f"your request has {prompt} input tokens. Please reduce the length of the "
                "input messages."
            )
        wanted = prompt + (request.max_tokens or 0)
        if wanted > context_tokens:
            return (
                f"This model's maximum context length is {context_tokens} tokens. However, "
                f"you requested {wanted} tokens ({prompt} in the messages, "
                f"{request.max_tokens} in the completion). Please reduce the length of the "
                "messages or completion."
            )
    return None


@dataclass(frozen=True, slots=True)
class PlannedToolCall:
    """A tool call the reply will make; `arguments` is raw JSON text (invalid for badargs)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """One completion: pieces to stream, tool calls, pacing and scripted failures."""

    content: tuple[str, ...] = ()
    reasoning: tuple[str, ...] = ()
    tool_calls: tuple[PlannedToolCall, ...] = ()
    finish_reason: FinishReason = "stop"
    delay_ms: float | None = None
    stall_seconds: float | None = None
    failure: StreamFailure | None = None
    http_status: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def plan_reply(request: CompletionRequest) -> ReplyPlan:
    """Decide the deterministic reply to `request`.

    Directives are read from the last user message only. Tool rounds are counted as runs of
    `role: "tool"` messages after that user message. Raises `DirectiveError`.
    """
    messages = request.messages
    last_user = max(
        (i for i, m in enumerate(messages) if m.role == "user" and not _is_result_text(m)),
        default=-1,
    )
    directives = parse_directives(messages[last_user].content) if last_user >= 0 else Directives()
    after = messages[last_user + 1 :]
    results = [m for m in after if _is_result(m)]
    rounds = _count_tool_rounds(after)
    question = directives.text
    seed = f"{last_user}|{messages[last_user].content if last_user >= 0 else ''}"
    offered = {tool.function.name: tool for tool in request.tools or []}

    calls = _choose_calls(request, directives, rounds, offered)
    textual = directives.textual_tool if rounds == 0 and not calls else None
    reasoning: list[str] = []
    if calls:
        names = ", ".join(dict.fromkeys(call.name for call in calls))
        thought = f"This looks like a job for {names}, so I'll call it before answering."
        planned = tuple(
            _plan_call(call, index, rounds, seed, question, offered)
            for index, call in enumerate(calls)
        )
        content: list[str] = []
        finish: FinishReason = "tool_calls"
    else:
        planned = ()
        if textual is not None:
            thought = f"I'll write out a {textual.name} call as plain text."
            arguments = _default_arguments(textual, question, offered)
            rendered = ", ".join(f"{k}={json.dumps(v)}" for k, v in arguments.items())
            text = f"{textual.name}({rendered})"
        elif directives.echo:
            thought = "The script says to echo the visitor word for word."
            text = question
        elif results:
            thought = f"I have {len(results)} tool result(s); I'll quote the first one."
            text = _answer_from_results(results, messages[: last_user + 1] + after)
        else:
            thought = f"The visitor asked {_quote(question)}. No model here, so I'll say so."
            text = _greeting(question)
        content = split_tokens(text)
        if directives.tokens is not None:
            content = _resize(content, directives.tokens)
        finish = "stop"
    if directives.reasoning:
        reasoning = split_tokens(thought)
    if directives.think:
        content = ["<think>", *split_tokens(thought), "</think>", "\n\n", *content]
    if request.max_tokens is not None and len(content) > request.max_tokens:
        content = content[: request.max_tokens]
        finish = "length" if finish == "stop" else finish
    failure: StreamFailure | None = None
    if directives.error:
        failure = "error"
    elif directives.disconnect:
        failure = "disconnect"
    elif directives.no_done:
        failure = "no_done"
    return ReplyPlan(
        content=tuple(content),
        reasoning=tuple(reasoning),
        tool_calls=planned,
        finish_reason=finish,
        delay_ms=directives.delay_ms,
        stall_seconds=directives.stall_seconds,
        failure=failure,
        http_status=directives.http_status,
        notes={"round": rounds, "question": question},
    )


def _count_tool_rounds(messages: Sequence[ChatMessage]) -> int:
    rounds, inside = 0, False
    for message in messages:
        if _is_result(message) and not inside:
            rounds += 1
        inside = _is_result(message)
    return rounds


def _choose_calls(
    request: CompletionRequest,
    directives: Directives,
    rounds: int,
    offered: dict[str, ToolDefinition],
) -> tuple[ScriptedCall, ...]:
    if rounds == 1:
        return directives.tools2
    if rounds > 1:
        return ()
    if directives.tools:
        return directives.tools
    natural = (
        directives.textual_tool is None
        and not directives.echo
        and request.tool_choice != "none"
        and "search_site" in offered
        and _TRIGGER_RE.search(directives.text) is not None
    )
    return (ScriptedCall("search_site"),) if natural else ()


def _plan_call(
    call: ScriptedCall,
    index: int,
    rounds: int,
    seed: str,
    question: str,
    offered: dict[str, ToolDefinition],
) -> PlannedToolCall:
    digest = hashlib.sha256(f"{seed}|{rounds}|{index}|{call.name}".encode()).hexdigest()
    if call.raw_arguments is not None:
        arguments = call.raw_arguments
    else:
        arguments = json.dumps(_default_arguments(call, question, offered), ensure_ascii=False)
    return PlannedToolCall(id=f"chatcmpl-tool-{digest[:16]}", name=call.name, arguments=arguments)


def _default_arguments(
    call: ScriptedCall, question: str, offered: dict[str, ToolDefinition]
) -> dict[str, Any]:
    if call.arguments is not None:
        return call.arguments
    tool = offered.get(call.name)
    properties = (tool.function.parameters or {}).get("properties", {}) if tool else {}
    if "query" in properties or (tool is None and call.name == "search_site"):
        return {"query": question[:120] or "terrarium"}
    return {}


def _quote(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    if not text:
        return "your message"
    return f"“{text if len(text) <= limit else text[: limit - 1] + '…'}”"


def _greeting(question: str) -> str:
    opener = _OPENERS[int(hashlib.sha256(question.encode()).hexdigest(), 16) % len(_OPENERS)]
    return (
        f"{opener} I'm Terra's offline demo agent: there's no real model behind me, so I "
        f"can't truly answer {_quote(question)}. But your message made the whole trip "
        "through the relay and back, so the plumbing works!"
    )


def _answer_from_results(results: Sequence[ChatMessage], messages: Sequence[ChatMessage]) -> str:
    first = results[0]
    name = first.name or _tool_name_for(first.tool_call_id, messages) or "the tool"
    snippet = _snippet(first.content)
    extra = f" ({len(results)} tool results in all.)" if len(results) > 1 else ""
    return (
        f"Here's what {name} turned up: {_quote(snippet, 160)}.{extra} I'm Terra's offline "
        "demo agent with no real model, so that's a straight quote rather than a summary."
    )


def _tool_name_for(call_id: str | None, messages: Sequence[ChatMessage]) -> str | None:
    for message in messages:
        for call in message.tool_calls or []:
            function = call.get("function")
            if call.get("id") == call_id and isinstance(function, dict):
                name = function.get("name")
                return name if isinstance(name, str) else None
    return None


def _snippet(content: str) -> str:
    match = _TOOL_RESULT_RE.match(content)
    body = match.group(1) if match else content
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return body
    for key in _SNIPPET_KEYS:
        if (found := _find_text(data, key)) is not None:
            return found
    return _find_text(data, None) or body


def _find_text(data: Any, key: str | None) -> str | None:
    """Depth-first: the first non-empty string under `key` (any string when `key` is None)."""
    if isinstance(data, str):
        return data if key is None and data else None
    if isinstance(data, dict):
        value = data.get(key) if key is not None else None
        if isinstance(value, str) and value:
            return value
        children: list[Any] = list(data.values())
    elif isinstance(data, list):
        children = data
    else:
        return None
    for child in children:
        if (found := _find_text(child, key)) is not None:
            return found
    return None


def _resize(pieces: list[str], count: int) -> list[str]:
    if count <= len(pieces):
        return pieces[:count]
    extra = count - len(pieces)
    return pieces + [_FILLER[i % len(_FILLER)] for i in range(extra)]
