"""Sinks between the agent's token stream and the visitor's chunks.

:class:`AttemptSink` remembers whether an attempt showed anything (only then is a retry
unsafe); :class:`AnswerSink` joins the rounds of a tool-using answer; :class:`HoldBack`
pauses streaming where text might be a textual tool call, then drops or releases it.
"""

from __future__ import annotations

import functools
import re

from worker.ports import DeltaSink

__all__ = ["AnswerSink", "AttemptSink", "HoldBack", "without_think"]


class AttemptSink:
    """Passes deltas on; ``emitted`` says whether *this attempt* pushed anything."""

    def __init__(self, sink: DeltaSink) -> None:
        self._sink = sink
        self.emitted = False

    def push(self, text: str) -> bool:
        if text:
            self.emitted = True
        return self._sink.push(text)


class AnswerSink:
    """The visible answer across rounds: a blank line between rounds' texts, kept in order."""

    def __init__(self, sink: DeltaSink) -> None:
        self._sink = sink
        self._parts: list[str] = []
        self._separate = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def emitted(self) -> bool:
        return bool(self._parts)

    def new_round(self) -> None:
        """The next text starts a new paragraph (if anything was shown before)."""
        self._separate = bool(self._parts)

    def push(self, text: str) -> bool:
        if self._separate:
            if not text.strip():
                return True  # no leading blank text for a round
            self._separate = False
            shown = self.text
            gap = "" if shown.endswith("\n\n") else "\n" if shown.endswith("\n") else "\n\n"
            text = gap + text
        if text:
            self._parts.append(text)
        return self._sink.push(text)


_TOOL_CALL_TAG = "<tool_call>"
_NAME_CHAR = re.compile(r"[\w.]")
_WORD_TAIL = re.compile(r"(\w+)(\s*)")
#: The last word of a text and the blank after it, if the text ends so.
_LAST_WORD = re.compile(r"(\w+)(\s*)\Z")
#: How far back from the end of the undecided text a possible call start is looked for.
_TAIL_SLACK = 32


@functools.lru_cache(maxsize=64)
def _call_start(names: frozenset[str]) -> tuple[re.Pattern[str], int]:
    """The pattern of a call start of one of ``names``, and the look-back window (built once
    per set of names, not per answer: issue 10)."""
    alternation = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.])(?:{alternation})\s*\(|(?i:<tool_call>)")
    return pattern, max(len(n) for n in names) + _TAIL_SLACK


class HoldBack:
    """Forwards content, holding back what may be a textual call of a known tool.

    From a confirmed call start (``name(`` at a word start, or ``<tool_call>``) everything is
    held until :meth:`finish`; a tail that may still become one waits for more text.
    """

    def __init__(self, sink: DeltaSink, names: frozenset[str]) -> None:
        self._sink = sink
        self._names = names
        self._start, self._window = _call_start(names)
        self._pending = ""
        self._last = ""
        self._holding = False
        self._held: list[str] = []

    @property
    def emitted(self) -> bool:
        return self._sink.emitted

    def push(self, text: str) -> bool:
        if self._holding:
            self._held.append(text)
            return True
        buffer = self._pending + text
        # One forwarded character of context keeps the word-start rule exact.
        match = self._start.search(self._last + buffer)
        if match is not None:
            cut = max(0, match.start() - len(self._last))
            self._holding = True
            self._held.append(buffer[cut:])
            self._pending = ""
            return self._forward(buffer[:cut])
        keep = self._undecided_tail(buffer)
        self._pending = buffer[len(buffer) - keep :]
        return self._forward(buffer[: len(buffer) - keep])

    def finish(self) -> str:
        """End of the stream: release undecided text; return what was held back."""
        if self._pending:
            self._forward(self._pending)
            self._pending = ""
        return "".join(self._held)

    def _forward(self, text: str) -> bool:
        if not text:
            return True
        self._last = text[-1]
        return self._sink.push(text)

    def _undecided_tail(self, buffer: str) -> int:
        """Length of the tail of ``buffer`` that may still become a call start: from the
        leftmost ``<`` that starts ``<tool_call>``'s prefix, or the last word (and the blank
        after it) if it begins a word and is, or may become, a tool's name."""
        size = len(buffer)
        start = max(0, size - self._window)
        best = 0
        pos = buffer.find("<", max(start, size - len(_TOOL_CALL_TAG)))
        while pos >= 0:
            if _TOOL_CALL_TAG.startswith(buffer[pos:].lower()):
                best = size - pos
                break
            pos = buffer.find("<", pos + 1)
        tail = _LAST_WORD.search(buffer, start)
        if tail is None or size - tail.start() <= best:
            return best
        pos = tail.start()
        before = buffer[pos - 1] if pos else self._last
        if before and _NAME_CHAR.match(before):
            return best
        word, space = tail.groups()
        if word in self._names if space else any(n.startswith(word) for n in self._names):
            return size - pos
        return best


_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)


def without_think(text: str) -> str:
    """``text`` without ``<think>`` blocks (an unclosed one runs to the end; text before a
    lone ``</think>`` is a thought too, as some models omit the opening tag)."""
    head, close, tail = text.partition("</think>")
    if close and "<think>" not in head.lower():
        text = tail
    return _THINK_BLOCK.sub("", text)
