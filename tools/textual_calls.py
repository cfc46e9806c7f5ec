"""Recognise tool calls a model wrote as text instead of using the function-calling API.

Some models (and some vLLM parser failures) leave a call in the message content, e.g.
``search_site(query="dice roller", max_results=2)``, sometimes wrapped in
``<tool_result tool="...">`` or ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.
terrarium-irc falls back to such calls when no structured ``tool_calls`` arrived; the worker
does the same with ``parse_textual_tool_calls``. Only names of known tools are considered,
and only literal arguments are accepted: nothing is evaluated.

The fallback is on, but runs only calls the model could not have copied (issue 11): a call of
a tool whose name appears in text the model was given rather than wrote (the visitor's
messages, tool results: ``copied_from``) is dropped, since a model echoing a visitor's
``write_enhancement_request(...)`` lines used to run every one of them. Structured calls are
unaffected; models that need the fallback write calls nobody spelled out for them.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["TextualToolCall", "names_mentioned", "parse_textual_tool_calls"]

_MAX_CALL_CHARS = 4000
_JSON_CALL_OPEN = re.compile(r"<tool_call>\s*", re.IGNORECASE)
_JSON_CALL_CLOSE = re.compile(r"\s*</tool_call>", re.IGNORECASE)
_LITERAL_NAMES = {"true": True, "false": False, "null": None, "none": None}


@dataclass(frozen=True, slots=True)
class TextualToolCall:
    """A call found in text. ``start``/``end`` delimit it in the text (to strip it)."""

    id: str
    name: str
    arguments: dict[str, Any]
    start: int
    end: int

    def renamed(self, name: str) -> TextualToolCall:
        return replace(self, name=name)

    def as_openai(self) -> dict[str, Any]:
        """The call as an assistant message's ``tool_calls`` entry."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }


def _new_id() -> str:
    return f"fallback_{uuid.uuid4().hex[:12]}"


def _closing_paren(text: str, open_at: int) -> int | None:
    """Index of the parenthesis closing the one at ``open_at``, honouring quotes."""
    depth = 0
    quote: str | None = None
    i = open_at
    limit = min(len(text), open_at + _MAX_CALL_CHARS)
    while i < limit:
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i if ch == ")" else None
        i += 1
    return None


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Name) and node.id.lower() in _LITERAL_NAMES:
        return _LITERAL_NAMES[node.id.lower()]
    if isinstance(node, ast.List):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("dict unpacking")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    return ast.literal_eval(node)


def _arguments_from_call(source: str, params: Sequence[str]) -> dict[str, Any] | None:
    try:
        tree = ast.parse(source.replace("\n", " "), mode="eval")
    except SyntaxError:
        return None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        return None
    try:
        positional = [_literal(arg) for arg in call.args]
        arguments: dict[str, Any] = {}
        for keyword in call.keywords:
            if keyword.arg is None:
                return None
            arguments[keyword.arg] = _literal(keyword.value)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None
    if len(positional) == 1 and not arguments and isinstance(positional[0], dict):
        return {str(k): v for k, v in positional[0].items()}
    if len(positional) > len(params):
        return None
    for name, value in zip(params, positional, strict=False):
        if name in arguments:
            return None
        arguments[name] = value
    return arguments


def _json_calls(text: str, known: Mapping[str, Sequence[str]]) -> list[TextualToolCall]:
    calls: list[TextualToolCall] = []
    decoder = json.JSONDecoder()
    for match in _JSON_CALL_OPEN.finditer(text):
        try:
            value, end = decoder.raw_decode(text, match.end())
        except json.JSONDecodeError:
            continue
        if not isinstance(value, dict) or value.get("name") not in known:
            continue
        arguments = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                continue
        if not isinstance(arguments, dict):
            continue
        closing = _JSON_CALL_CLOSE.match(text, end)
        end = closing.end() if closing else end
        calls.append(TextualToolCall(_new_id(), value["name"], arguments, match.start(), end))
    return calls


def names_mentioned(texts: Iterable[str], names: Iterable[str]) -> set[str]:
    """Those of ``names`` that appear as a word (not inside a longer name) in ``texts``."""
    wanted = sorted(set(names), key=len, reverse=True)
    if not wanted:
        return set()
    pattern = re.compile(rf"(?<![\w.])(?:{'|'.join(map(re.escape, wanted))})(?!\w)")
    return {match.group(0) for text in texts for match in pattern.finditer(text)}


def parse_textual_tool_calls(
    text: str, known: Mapping[str, Sequence[str]], copied_from: Iterable[str] = ()
) -> list[TextualToolCall]:
    """Find calls of known tools in ``text``, in order of appearance.

    ``known`` maps tool names to their parameter names in order (positional arguments are
    mapped onto them). Recognised forms: ``name(key="v", n=2)``, ``name("v")``,
    ``name({"key": "v"})`` and ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.
    Arguments must be literals; anything else is skipped. Identical calls are returned once.
    Each call gets a fresh id ``fallback_<hex>``. Calls of names :func:`names_mentioned` in
    ``copied_from`` (text the model read but did not write) are left out. Never raises.
    """
    copied = names_mentioned(copied_from, known)
    known = {name: params for name, params in known.items() if name not in copied}
    if not known or not text:
        return []
    found = _json_calls(text, known)
    taken = [(call.start, call.end) for call in found]
    names = "|".join(re.escape(name) for name in sorted(known, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.])(?:{names})(?=\s*\()")
    for match in pattern.finditer(text):
        start = match.start()
        if any(a <= start < b for a, b in taken):
            continue
        open_at = text.index("(", match.end())
        close_at = _closing_paren(text, open_at)
        if close_at is None:
            continue
        name = match.group(0)
        arguments = _arguments_from_call(name + text[open_at : close_at + 1], known[name])
        if arguments is None:
            continue
        found.append(TextualToolCall(_new_id(), name, arguments, start, close_at + 1))
        taken.append((start, close_at + 1))
    found.sort(key=lambda call: call.start)
    unique: list[TextualToolCall] = []
    seen: set[str] = set()
    for call in found:
        key = call.name + json.dumps(call.arguments, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            unique.append(call)
    return unique
