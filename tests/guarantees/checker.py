"""The checks: what the fleet received and what Redis holds, against the promises of
docs/protocol.md. Pure functions over data collected at the end of a run.

- Every socket's frames, split at ``resync`` frames, are the chat's log in order: no gap,
  no duplicate, strictly increasing ``eventId``s, each frame equal to its stored event.
  v1 sockets see only the v1 types (a ``streamReset`` arrives as an empty done chunk).
- A ``resync`` needs a cause: the socket's last event is older than the log's first kept
  entry or its epoch (trimmed or recreated log). Any other resync is a violation.
- Every visitor message stored has exactly one reply; every accepted post (200) is stored,
  once, under one id; an apology (``status: "error"``) answers only a message whose agent
  request was made to fail; nothing is pending, dead-lettered or left ``queued`` at the end.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bus.chatlog import EventRecord, compare_ids
from bus.schemas import EVENT_TYPES_V1
from tests.guarantees.fleet import WALL_OFFSET, Post, Socket

__all__ = [
    "ChatSnapshot",
    "Findings",
    "JobsSnapshot",
    "Takeover",
    "Violation",
    "check_process_log",
    "check_run",
]

#: Events appended this long after a stream's connection was established must be in it.
_SLACK_MS = 50
#: Examples kept per kind of violation.
_EXAMPLES = 4


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    chat_id: str
    detail: str
    #: The scenario phase it traces back to, when known (say, the round a message was posted in).
    phase: str = ""


@dataclass
class ChatSnapshot:
    """One chat as Redis holds it at the end of the run."""

    chat_id: str
    events: list[EventRecord]
    #: Messages of the chat (``messages`` stream), as frames, oldest first.
    messages: list[dict[str, Any]]
    epoch: str | None
    state: str | None

    @property
    def first_id(self) -> str | None:
        return self.events[0].event_id if self.events else None


@dataclass
class JobsSnapshot:
    """The jobs stream at the end: pending entries, dead letters, queued message ids."""

    pending: list[str]
    dead_letters: list[dict[str, str]]
    queued_message_ids: set[str]


@dataclass(frozen=True, slots=True)
class Takeover:
    """A worker SIGKILLed while streaming a reply, and when the chat moved again."""

    chat_id: str
    worker: str
    seconds: float | None  # kill -> first event of the new attempt (None: never)


@dataclass
class Findings:
    """What the checks found; ``violations`` is empty when every promise held."""

    sockets: int = 0
    frames_checked: int = 0
    resyncs: int = 0
    messages_checked: int = 0
    violations: list[Violation] = field(default_factory=list)

    def add(self, kind: str, chat_id: str, detail: str, phase: str = "") -> None:
        self.violations.append(Violation(kind, chat_id, detail, phase))

    def by_kind(self) -> dict[str, list[Violation]]:
        kinds: dict[str, list[Violation]] = defaultdict(list)
        for violation in self.violations:
            kinds[violation.kind].append(violation)
        return dict(sorted(kinds.items()))

    def examples(self, kind: str) -> list[Violation]:
        return self.by_kind().get(kind, [])[:_EXAMPLES]


def check_run(
    chats: dict[str, ChatSnapshot],
    sockets: Iterable[Socket],
    posts: Iterable[Post],
    jobs: JobsSnapshot,
    takeovers: Iterable[Takeover],
    takeover_limit: float,
) -> Findings:
    """Run every check; the result lists each violation with the chat it concerns."""
    findings = Findings()
    posts = list(posts)
    for socket in sockets:
        check_socket(socket, chats[socket.chat_id], posts, findings)
    check_replies(chats, posts, findings)
    check_jobs(jobs, posts, chats, findings)
    for takeover in takeovers:
        if takeover.seconds is None or takeover.seconds > takeover_limit:
            shown = "never" if takeover.seconds is None else f"{takeover.seconds:.1f}s"
            findings.add(
                "slow takeover",
                takeover.chat_id,
                f"{takeover.worker} SIGKILLed mid-answer; next attempt after {shown} "
                f"(limit {takeover_limit:g}s)",
            )
    return findings


# --- sockets ------------------------------------------------------------------------------------


def _visible(socket: Socket, event: EventRecord) -> bool:
    return socket.v2 or event.type in EVENT_TYPES_V1 or event.type == "streamReset"


def _expected_frame(socket: Socket, event: EventRecord) -> dict[str, Any] | None:
    """The frame ``socket`` must receive for ``event`` (``None``: only its type is fixed)."""
    if not socket.v2 and event.type == "streamReset":
        return None
    return event.frame()


def _segments(socket: Socket) -> list[tuple[bool, list[dict[str, Any]]]]:
    """The socket's frames cut at each ``resync``: ``(after a resync, frames)``."""
    segments: list[tuple[bool, list[dict[str, Any]]]] = [(False, [])]
    for frame in socket.frames:
        if frame.type == "resync":
            segments.append((True, []))
        elif frame.event_id is not None:
            segments[-1][1].append(frame.data)
    return segments


def _before(ids: list[str], event_id: str) -> str:
    """The id preceding ``event_id`` in ``ids`` (``0-0`` for the first)."""
    previous = "0-0"
    for candidate in ids:
        if compare_ids(candidate, event_id) >= 0:
            return previous
        previous = candidate
    return previous


def check_socket(socket: Socket, chat: ChatSnapshot, posts: list[Post], findings: Findings) -> None:
    """Frames of one socket against its chat's log."""
    findings.sockets += 1
    label = f"{socket.kind} socket"
    by_id = {e.event_id: e for e in chat.events}
    visible = [e for e in chat.events if _visible(socket, e)]
    visible_ids = [e.event_id for e in visible]
    last_seen: str | None = socket.after
    segments = _segments(socket)
    for index, (after_resync, frames) in enumerate(segments):
        if after_resync:
            findings.resyncs += 1
            if not _resync_has_cause(chat, last_seen):
                findings.add(
                    "spurious resync",
                    chat.chat_id,
                    f"{label}: resync after {last_seen or 'the handshake'}; the log kept "
                    f"everything from {chat.first_id} (epoch {chat.epoch}), no trim or restart",
                )
        ids = [str(f["eventId"]) for f in frames]
        findings.frames_checked += len(ids)
        _check_order(label, chat.chat_id, ids, findings)
        for frame in frames:
            event = by_id.get(str(frame["eventId"]))
            if event is None:
                findings.add("frame not in log", chat.chat_id, f"{label}: {frame['eventId']}")
                continue
            if not _visible(socket, event):
                findings.add(
                    "v2 frame on a v1 socket",
                    chat.chat_id,
                    f"{label}: {event.type} {event.event_id}",
                )
                continue
            expected = _expected_frame(socket, event)
            if expected is None:
                ok = frame.get("type") == "assistantChunk" and frame.get("done") is True
            else:
                ok = frame == expected
            if not ok:
                findings.add(
                    "frame differs from log",
                    chat.chat_id,
                    f"{label}: got {frame} for {event.event_id} ({event.type})",
                )
        if ids:
            last_seen = max(ids, key=_sort_key)
        if index == 0 and socket.after is not None:
            early = [i for i in ids if compare_ids(i, socket.after) <= 0]
            if early:
                findings.add(
                    "frame before resume point",
                    chat.chat_id,
                    f"{label}: {len(early)} frames at or before lastEventId {socket.after}",
                )
        start = _segment_start(socket, index, ids, visible_ids, chat, posts)
        final = index == len(segments) - 1
        if final and visible_ids:
            end: str | None = visible_ids[-1]
        else:
            end = max(ids, key=_sort_key) if ids else None
        if start is None or end is None:
            continue
        seen = set(ids)
        missing = [
            i
            for i in visible_ids
            if compare_ids(i, start) > 0 and compare_ids(i, end) <= 0 and i not in seen
        ]
        if missing:
            findings.add(
                "gap",
                chat.chat_id,
                f"{label} ({socket.drops} drops, {len(socket.connects)} connections): "
                f"{len(missing)} of the events after {start} never arrived, first {missing[0]}",
            )


def _sort_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def _check_order(label: str, chat_id: str, ids: list[str], findings: Findings) -> None:
    counts = Counter(ids)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    if duplicated:
        first = next(i for i, n in counts.items() if n > 1)
        findings.add("duplicate frame", chat_id, f"{label}: {duplicated} duplicates, e.g. {first}")
    backwards = [(a, b) for a, b in itertools.pairwise(ids) if compare_ids(b, a) < 0]
    if backwards:
        a, b = backwards[0]
        findings.add(
            "out of order", chat_id, f"{label}: {len(backwards)} times, e.g. {b} after {a}"
        )


def _resync_has_cause(chat: ChatSnapshot, last_seen: str | None) -> bool:
    """True when the log no longer covers what follows ``last_seen`` (trimmed or recreated)."""
    if last_seen is None or last_seen == "0-0":
        return False
    first = chat.first_id
    if first is None:
        return True  # the log is gone
    trimmed = compare_ids(first, last_seen) > 0
    recreated = chat.epoch is not None and compare_ids(chat.epoch, last_seen) > 0
    return trimmed or recreated


def _segment_start(
    socket: Socket,
    index: int,
    ids: list[str],
    visible_ids: list[str],
    chat: ChatSnapshot,
    posts: list[Post],
) -> str | None:
    """The last event the segment did NOT need to deliver (``None``: nothing to check)."""
    if index == 0 and socket.after is not None:
        return socket.after
    first = min(ids, key=_sort_key) if ids else None
    if index == 0:
        # From the handshake: at the latest, the first message posted once it was connected
        # (a post sent while the upgrade was under way may precede the handshake point).
        done_ms = socket.handshake_done_ms()
        own = [
            mid
            for post in posts
            if post.chat_id == socket.chat_id
            and done_ms is not None
            and (post.started_at + WALL_OFFSET) * 1000 >= done_ms
            for mid in post.accepted_ids[:1]
        ]
        own_ids = [e["eventId"] for e in chat.messages if e.get("id") in set(own)]
        later = [
            i for i in visible_ids if done_ms is not None and _sort_key(i)[0] > done_ms + _SLACK_MS
        ]
        candidates = [i for i in [first, *own_ids, *later[:1]] if i is not None]
        if not candidates:
            return None
        return _before(visible_ids, min(candidates, key=_sort_key))
    return _before(visible_ids, first) if first is not None else None


# --- replies ------------------------------------------------------------------------------------


def check_replies(chats: dict[str, ChatSnapshot], posts: list[Post], findings: Findings) -> None:
    """Exactly one reply per stored visitor message; accepted posts stored once, one id."""
    stored_ids: dict[str, set[str]] = defaultdict(set)
    poisoned = {p.message_id for p in posts if p.poisoned and p.message_id}
    phases = {mid: p.phase for p in posts for mid in p.accepted_ids}
    for chat in chats.values():
        visitors = [m for m in chat.messages if m.get("sender") == "Visitor"]
        replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for message in chat.messages:
            if message.get("sender") == "Terra" and message.get("replyTo"):
                replies[str(message["replyTo"])].append(message)
        seen: Counter[str] = Counter()
        for visitor in visitors:
            mid = str(visitor["id"])
            seen[mid] += 1
            stored_ids[chat.chat_id].add(mid)
            findings.messages_checked += 1
            answers = replies.get(mid, [])
            if not answers:
                findings.add("unanswered", chat.chat_id, f"message {mid} ({visitor['eventId']})")
                continue
            if len(answers) > 1:
                findings.add("answered twice", chat.chat_id, f"message {mid}: {len(answers)}")
            for answer in answers:
                status = answer.get("status")
                if status == "error" and mid not in poisoned:
                    findings.add(
                        "apology without cause",
                        chat.chat_id,
                        f"message {mid} (posted in {phases.get(mid, '?')}) answered "
                        f"{answer['content'][:50]!r}",
                        phases.get(mid, ""),
                    )
                elif status not in (None, "error"):
                    findings.add("unexpected status", chat.chat_id, f"{mid}: {status}")
                if compare_ids(str(answer["eventId"]), str(visitor["eventId"])) <= 0:
                    findings.add("reply before message", chat.chat_id, f"message {mid}")
        for mid, count in seen.items():
            if count > 1:
                findings.add("message stored twice", chat.chat_id, f"{mid}: {count} times")
        if chat.state in ("queued", "processing"):
            findings.add("stuck state", chat.chat_id, f"worker state still {chat.state}")
    for post in posts:
        if len(set(post.accepted_ids)) > 1:
            findings.add(
                "idempotency broken",
                post.chat_id,
                f"clientMessageId {post.client_message_id}: ids {sorted(set(post.accepted_ids))}",
            )
        if post.accepted and post.message_id not in stored_ids.get(post.chat_id, set()):
            findings.add(
                "accepted message lost",
                post.chat_id,
                f"{post.message_id} got 200 ({post.attempts}) but is not in the chat",
            )
    by_content: Counter[tuple[str, str]] = Counter()
    for chat in chats.values():
        for message in chat.messages:
            if message.get("sender") == "Visitor":
                by_content[(chat.chat_id, str(message.get("content")))] += 1
    for post in posts:
        if post.client_message_id and by_content[(post.chat_id, post.content)] > 1:
            findings.add(
                "idempotency broken",
                post.chat_id,
                f"clientMessageId {post.client_message_id} stored "
                f"{by_content[(post.chat_id, post.content)]} times",
            )


# --- jobs ---------------------------------------------------------------------------------------


def check_jobs(
    jobs: JobsSnapshot, posts: list[Post], chats: dict[str, ChatSnapshot], findings: Findings
) -> None:
    """Nothing pending at the end; no dead letter (twice even less); no trimmed job."""
    for entry_id in jobs.pending:
        findings.add("job still pending", "-", entry_id)
    poisoned = {p.message_id for p in posts if p.poisoned and p.message_id}
    entries: Counter[str] = Counter()
    for letter in jobs.dead_letters:
        entries[letter.get("entry_id", "?")] += 1
        job = _job_fields(letter.get("d", "{}"))
        message_id = str(job.get("messageId") or job.get("message_id") or "?")
        chat_id = str(job.get("chatId") or job.get("chat_id") or "-")
        if message_id not in poisoned:
            findings.add("dead-lettered", chat_id, f"message {message_id}: {letter.get('reason')}")
    for entry_id, count in entries.items():
        if count > 1:
            findings.add("dead-lettered twice", "-", f"job {entry_id}: {count} dead letters")
    answered: set[str] = set()
    for chat in chats.values():
        answered.update(str(m["replyTo"]) for m in chat.messages if m.get("replyTo"))
    for post in posts:
        mid = post.message_id
        if mid and mid not in answered and mid not in jobs.queued_message_ids:
            findings.add(
                "job lost",
                post.chat_id,
                f"message {mid} accepted, never answered and no job for it in the stream",
            )


def _job_fields(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- process logs -------------------------------------------------------------------------------


def check_process_log(name: str, text: str, findings: Findings) -> None:
    """A gateway logs nothing at error level while visitors come and go (no 500s)."""
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("level") in ("error", "critical"):
            last = str(record.get("exception", "")).strip().splitlines()[-1:] or [""]
            findings.add(
                "error logged",
                "-",
                f"{name}: {record.get('event')} on {record.get('path', '-')}: {last[0][:120]}",
            )
