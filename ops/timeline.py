"""A chat's event log as a timeline: one line per message, state change, tool call and reply.

The chunks of a reply (and the model's reasoning pieces around them) fold into one
``stream`` line with their count, size and duration, unless ``chunks=True``. Times are UTC,
from the event ids (the append time in Redis); the gap is the time since the previous event
of the log, folded or not. :class:`Timeline` is fed events one at a time, so ``show`` and
``follow`` print the same lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus.chatlog import EventRecord, parse_id

__all__ = ["Line", "Timeline", "format_gap", "short_id"]

_STREAMED = ("assistantChunk", "reasoning")


def short_id(value: str | None) -> str:
    """The first 8 characters of an id (as the widget shows a chat id)."""
    return (value or "?")[:8]


def format_gap(ms: int) -> str:
    """A gap in a compact, fixed-precision form: ``+0.007s``, ``+1m05s``, ``+2h03m``."""
    if ms < 60_000:
        return f"+{ms / 1000:.3f}s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"+{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 100 * 3600:
        return f"+{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"+{seconds // 86400}d"


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(slots=True)
class Line:
    """One timeline line. ``kind`` is what happened, ``text`` its content (may hold newlines)."""

    ms: int
    gap_ms: int | None
    kind: str
    text: str
    event_ids: list[str]
    data: dict[str, Any]
    #: A date line before this one, when the day changed (or at the start).
    new_day: str | None = None
    #: Nothing a person needs to read (kept for the JSON lines, which list every event).
    quiet: bool = False

    def render(self) -> str:
        """The line as plain text; continuation lines are indented under the text."""
        clock = _time(self.ms).strftime("%H:%M:%S.%f")[:-3]
        gap = format_gap(self.gap_ms) if self.gap_ms is not None else ""
        head = f"{clock}  {gap:>9}  {self.kind:<8}  "
        first, *rest = self.text.split("\n")
        lines = [head + first] + [" " * len(head) + more for more in rest]
        return "\n".join(line.rstrip() for line in lines)

    def as_json(self) -> dict[str, Any]:
        """The line as a JSON object: the event's fields, its time, gap and every event id."""
        out = dict(self.data)
        out["at"] = _time(self.ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out["gapMs"] = self.gap_ms
        out["eventIds"] = list(self.event_ids)
        return out


@dataclass(slots=True)
class _Run:
    """Consecutive chunks and reasoning pieces of one reply."""

    reply_to: str | None
    first_ms: int
    gap_ms: int | None
    last_ms: int
    event_ids: list[str] = field(default_factory=list)
    chunks: int = 0
    text: list[str] = field(default_factory=list)
    reasoning: int = 0
    reasoning_chars: int = 0
    done: bool = False
    restarted: bool = False


class Timeline:
    """Turns events into :class:`Line` s (``feed`` then ``flush``)."""

    def __init__(self, *, chunks: bool = False) -> None:
        self.chunks = chunks
        self._last_ms: int | None = None
        self._day: str | None = None
        self._run: _Run | None = None

    def feed(self, record: EventRecord) -> list[Line]:
        """Lines completed by this event (a folded reply is emitted when its run ends)."""
        ms = parse_id(record.event_id)[0]
        gap = None if self._last_ms is None else max(0, ms - self._last_ms)
        self._last_ms = ms
        fields = record.fields
        kind = record.type
        if not self.chunks and kind in _STREAMED:
            reply_to = fields.get("replyTo")
            out = []
            if self._run is not None and self._run.reply_to != reply_to:
                out = self.flush()
            if self._run is None:
                self._run = _Run(reply_to, ms, gap, ms)
            self._absorb(self._run, record, ms)
            return out
        run = self._run
        if run is not None and fields.get("replyTo") == run.reply_to:
            if kind == "message":
                run.done = True  # the final Message ends the stream
            elif kind == "streamReset":
                run.restarted = True
        return [*self.flush(), self._line(ms, gap, record)]

    def flush(self) -> list[Line]:
        """The pending folded reply, if any (call at the end of the input)."""
        run, self._run = self._run, None
        if run is None:
            return []
        text = "".join(run.text)
        parts = [f"{run.chunks} chunk{'s' if run.chunks != 1 else ''}, {len(text)} chars"]
        if run.reasoning:
            parts.append(f"{run.reasoning} reasoning ({run.reasoning_chars} chars)")
        summary = (
            f"{_re(run.reply_to)} {' + '.join(parts)} over "
            f"{(run.last_ms - run.first_ms) / 1000:.3f}s"
        )
        if run.restarted:
            summary += " (dropped: the reply starts again)"
        elif not run.done:
            summary += " (not finished)"
        data = {
            "type": "stream",
            "replyTo": run.reply_to,
            "chunks": run.chunks,
            "content": text,
            "reasoningPieces": run.reasoning,
            "durationMs": run.last_ms - run.first_ms,
            "done": run.done,
        }
        line = Line(run.first_ms, run.gap_ms, "stream", summary, run.event_ids, data)
        # The empty ``done`` chunk written after a final Message: JSON lines only.
        line.quiet = run.chunks == 0 and run.reasoning == 0
        return [self._dated(line)]

    @staticmethod
    def _absorb(run: _Run, record: EventRecord, ms: int) -> None:
        fields = record.fields
        run.event_ids.append(record.event_id)
        run.last_ms = ms
        content = str(fields.get("content") or "")
        if record.type == "reasoning":
            run.reasoning += 1
            run.reasoning_chars += len(content)
            return
        run.done = run.done or bool(fields.get("done"))
        if content or not fields.get("done"):
            run.chunks += 1
            run.text.append(content)

    def _line(self, ms: int, gap: int | None, record: EventRecord) -> Line:
        fields = record.fields
        kind, text = _describe(record.type, fields)
        frame = record.frame()
        return self._dated(Line(ms, gap, kind, text, [record.event_id], frame))

    def _dated(self, line: Line) -> Line:
        day = _time(line.ms).strftime("%Y-%m-%d")
        if day != self._day:
            self._day = day
            line.new_day = day
        return line


def _re(reply_to: str | None) -> str:
    return f"[re:{short_id(reply_to)}]"


def _describe(kind: str, f: dict[str, Any]) -> tuple[str, str]:
    """``(kind column, text)`` of one event."""
    if kind == "message":
        if f.get("sender") == "Visitor":
            return "visitor", f"[{short_id(f.get('id'))}] {f.get('content', '')}"
        status = f.get("status")
        mark = f"({status}) " if status else ""
        return "terra", f"{_re(f.get('replyTo'))} {mark}{f.get('content', '')}"
    if kind == "workerState":
        detail = f.get("detail")
        return "state", f"{f.get('state')}" + (f": {detail}" if detail else "")
    if kind == "assistantChunk":
        done = " (done)" if f.get("done") else ""
        content = json.dumps(f.get("content", ""), ensure_ascii=False)
        return "chunk", f"{_re(f.get('replyTo'))} {content}{done}"
    if kind == "reasoning":
        content = json.dumps(f.get("content", ""), ensure_ascii=False)
        return "thinking", f"{_re(f.get('replyTo'))} {content}"
    if kind == "streamReset":
        return "reset", f"{_re(f.get('replyTo'))} the reply starts again ({f.get('reason')})"
    if kind == "toolActivity":
        detail = f.get("detail")
        text = f"{_re(f.get('replyTo'))} {f.get('name')} {f.get('status')}"
        return "tool", text + (f" ({detail})" if detail else "")
    return kind, json.dumps(f, ensure_ascii=False, sort_keys=True)
