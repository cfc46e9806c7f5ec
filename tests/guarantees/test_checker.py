"""The checks and the report, on hand-made frames and logs: each promise's breach is caught."""

from __future__ import annotations

import json
from typing import Any

from bus.chatlog import EventRecord
from tests.guarantees.checker import (
    ChatSnapshot,
    Findings,
    JobsSnapshot,
    Takeover,
    check_process_log,
    check_run,
)
from tests.guarantees.fleet import WALL_OFFSET, Post, Socket, SocketKind
from tests.guarantees.plan import SHORT
from tests.guarantees.report import render
from tests.guarantees.scenario import Activity, Outcome
from tests.support.clients import Frame

CHAT = "c1"


def _event(event_id: str, kind: str, **fields: Any) -> EventRecord:
    return EventRecord(event_id, json.dumps({"type": kind, "v": 1, "chatId": CHAT, **fields}))


def _message(event_id: str, mid: str, sender: str, **extra: Any) -> EventRecord:
    return _event(
        event_id,
        "message",
        id=mid,
        sender=sender,
        content=extra.pop("content", f"text of {mid}"),
        createdAt="2026-01-01T00:00:00.000Z",
        **extra,
    )


def _chunk(event_id: str, text: str, done: bool = False) -> EventRecord:
    return _event(
        event_id, "assistantChunk", content=text, done=done, emittedAt="2026-01-01T00:00:00Z"
    )


LOG = [
    _message("1-0", "m1", "Visitor"),
    _chunk("2-0", "Hel"),
    _event("3-0", "streamReset", replyTo="m1", reason="retry", emittedAt="x"),
    _event("4-0", "reasoning", replyTo="m1", content="hmm"),
    _chunk("5-0", "Hello"),
    _message("6-0", "t1", "Terra", replyTo="m1"),
]


def _snapshot(events: list[EventRecord] = LOG, epoch: str | None = "1-0") -> ChatSnapshot:
    messages = [e.frame() for e in events if e.type == "message"]
    return ChatSnapshot(CHAT, events, messages, epoch, "responded")


def _socket(
    frames: list[dict[str, Any]], kind: SocketKind = "ws-v2", after: str | None = "0-0"
) -> Socket:
    socket = Socket(ports=[1], chat_id=CHAT, v2=kind.endswith("v2"), after=after, kind=kind)
    socket.fresh_starts.append(0.0)
    socket.frames = [Frame(data, at=1.0 + i, connection=1) for i, data in enumerate(frames)]
    return socket


def _frames(*ids: str, log: list[EventRecord] = LOG) -> list[dict[str, Any]]:
    by_id = {e.event_id: e for e in log}
    return [by_id[i].frame() for i in ids]


def _check(
    sockets: list[Socket],
    chat: ChatSnapshot | None = None,
    posts: list[Post] | None = None,
    jobs: JobsSnapshot | None = None,
    takeovers: list[Takeover] | None = None,
) -> Findings:
    chat = chat or _snapshot()
    return check_run(
        {CHAT: chat},
        sockets,
        posts or [],
        jobs or JobsSnapshot([], [], set()),
        takeovers or [],
        takeover_limit=10,
    )


def _kinds(findings: Findings) -> dict[str, int]:
    return {kind: len(items) for kind, items in findings.by_kind().items()}


def test_an_exact_stream_passes() -> None:
    findings = _check([_socket(_frames("1-0", "2-0", "3-0", "4-0", "5-0", "6-0"))])
    assert findings.violations == []
    assert findings.frames_checked == 6
    assert findings.messages_checked == 1


def test_a_missing_frame_is_a_gap() -> None:
    findings = _check([_socket(_frames("1-0", "2-0", "4-0", "5-0", "6-0"))])
    assert _kinds(findings) == {"gap": 1}
    assert "3-0" in findings.violations[0].detail


def test_a_missing_tail_is_a_gap() -> None:
    assert _kinds(_check([_socket(_frames("1-0", "2-0", "3-0", "4-0"))])) == {"gap": 1}


def test_duplicates_and_reordering_are_caught() -> None:
    frames = _frames("1-0", "2-0", "3-0", "2-0", "4-0", "5-0", "6-0")
    assert _kinds(_check([_socket(frames)])) == {"duplicate frame": 1, "out of order": 1}


def test_a_resync_without_a_trim_or_restart_is_spurious() -> None:
    frames = _frames("1-0", "2-0")
    frames.append({"type": "resync", "chatId": CHAT, "reason": "log restarted"})
    frames += _frames("1-0", "2-0", "3-0", "4-0", "5-0", "6-0")
    findings = _check([_socket(frames)])
    assert _kinds(findings) == {"spurious resync": 1}
    assert findings.resyncs == 1


def test_a_resync_past_a_trimmed_log_is_legitimate() -> None:
    trimmed = LOG[3:]
    frames = [{"type": "resync", "chatId": CHAT, "reason": "gone"}, *_frames("4-0", "5-0", "6-0")]
    findings = _check(
        [_socket(frames, after="2-0")], chat=_snapshot(trimmed, epoch="1-0"), posts=[]
    )
    assert "spurious resync" not in _kinds(findings)


def test_v1_sees_v1_types_and_a_reset_as_an_empty_done_chunk() -> None:
    reset_as_chunk = {
        "type": "assistantChunk",
        "chatId": CHAT,
        "content": "",
        "done": True,
        "emittedAt": "x",
        "replyTo": "m1",
        "eventId": "3-0",
    }
    frames = [*_frames("1-0", "2-0"), reset_as_chunk, *_frames("5-0", "6-0")]
    assert _check([_socket(frames, kind="ws-v1")]).violations == []
    # a v2-only frame sent to a v1 socket is not what the log says it should get
    leaked = [*frames[:3], *_frames("4-0"), *frames[3:]]
    assert _kinds(_check([_socket(leaked, kind="ws-v1")])) == {"v2 frame on a v1 socket": 1}
    assert _kinds(_check([_socket(frames[:-1], kind="sse-v1")])) == {"gap": 1}


def test_a_frame_that_differs_from_its_event_is_caught() -> None:
    frames = _frames("1-0", "2-0", "3-0", "4-0", "5-0", "6-0")
    frames[1] = {**frames[1], "content": "Hex"}
    assert _kinds(_check([_socket(frames)])) == {"frame differs from log": 1}


def test_a_handshake_stream_must_include_the_message_posted_after_it() -> None:
    socket = _socket(_frames("2-0", "3-0", "4-0", "5-0", "6-0"), after=None)
    socket.connects.append((1, 0.2))  # attempt at 0.0, connected at 0.2
    post = Post(CHAT, "text of m1", "cm-1", started_at=0.5, accepted_ids=["m1"])
    assert _kinds(_check([socket], posts=[post])) == {"gap": 1}
    # posted while the upgrade was under way, or before: starting later is the protocol (9.2)
    for started in (0.1, -1.0):
        early = Post(CHAT, "text of m1", "cm-1", started_at=started, accepted_ids=["m1"])
        assert _check([socket], posts=[early]).violations == []


def test_replies_exactly_once_and_apologies_only_with_a_cause() -> None:
    log = [
        _message("1-0", "m1", "Visitor"),
        _message("2-0", "m2", "Visitor"),
        _message("3-0", "m3", "Visitor"),
        _message("4-0", "t1", "Terra", replyTo="m1"),
        _message("5-0", "t1b", "Terra", replyTo="m1"),
        _message("6-0", "t3", "Terra", replyTo="m3", status="error"),
    ]
    findings = _check([], chat=_snapshot(log))
    assert _kinds(findings) == {"answered twice": 1, "unanswered": 1, "apology without cause": 1}
    poisoned = Post(CHAT, "text of m3", "cm-3", poisoned=True, accepted_ids=["m3"])
    assert "apology without cause" not in _kinds(_check([], _snapshot(log), [poisoned]))


def test_accepted_posts_are_stored_once_under_one_id() -> None:
    lost = Post(CHAT, "never stored", "cm-9", accepted_ids=["m9"])
    forked = Post(CHAT, "text of m1", "cm-1", accepted_ids=["m1", "m1-again"])
    log = [*LOG, _message("7-0", "m1-again", "Visitor", content="text of m1")]
    log.append(_message("8-0", "t2", "Terra", replyTo="m1-again"))
    kinds = _kinds(_check([], _snapshot(log), [lost, forked]))
    assert kinds["accepted message lost"] == 1
    assert kinds["idempotency broken"] == 2  # two ids returned, and stored twice
    assert kinds["job lost"] == 1  # m9: never answered and no job for it


def test_jobs_left_pending_or_dead_lettered_twice() -> None:
    letter = {"entry_id": "9-0", "reason": "delivered 4 times", "d": '{"messageId": "m1"}'}
    jobs = JobsSnapshot(["10-0"], [letter, dict(letter)], {"m1"})
    kinds = _kinds(_check([], jobs=jobs))
    assert kinds == {"job still pending": 1, "dead-lettered": 2, "dead-lettered twice": 1}


def test_a_slow_or_missing_takeover_is_a_violation() -> None:
    slow = [Takeover(CHAT, "w1", 31.0), Takeover(CHAT, "w2", None), Takeover(CHAT, "w3", 2.0)]
    assert _kinds(_check([], takeovers=slow)) == {"slow takeover": 2}


def test_a_handshake_stream_that_never_receives_later_events_has_a_gap() -> None:
    log = [_message("100-0", "m1", "Visitor"), _message("200-0", "t1", "Terra", replyTo="m1")]
    socket = _socket([], after=None)
    socket.fresh_starts[:] = [-WALL_OFFSET]
    socket.connects.append((1, -WALL_OFFSET + 0.010))  # established at Unix ms 10
    assert _kinds(_check([socket], chat=_snapshot(log))) == {"gap": 1}
    socket.connects[0] = (1, -WALL_OFFSET + 0.300)  # established after both events
    assert _check([socket], chat=_snapshot(log)).violations == []


def test_an_error_in_a_gateway_log_is_a_violation() -> None:
    findings = Findings()
    log = "\n".join(
        [
            "======== Running on http://127.0.0.1:1 ========",
            json.dumps({"event": "gateway.redis_unavailable", "level": "warning"}),
            json.dumps(
                {
                    "event": "gateway.request_failed",
                    "level": "error",
                    "path": "/api/chat/c1/events",
                    "exception": "Traceback ...\nAssertionError",
                }
            ),
        ]
    )
    check_process_log("gateway0", log, findings)
    assert [v.kind for v in findings.violations] == ["error logged"]
    assert "AssertionError" in findings.violations[0].detail


def test_the_report_lists_what_was_done_and_each_kind_found() -> None:
    findings = Findings(sockets=1, frames_checked=6)
    findings.add("apology without cause", CHAT, "message m2", "round 7 (agent stopped)")
    findings.add("gap", CHAT, "ws-v2 socket: 1 of the events after 0-0 never arrived")
    activity = Activity()
    activity.faults["redis restart"] += 2
    activity.takeovers.append(Takeover(CHAT, "worker1", 31.5))
    outcome = Outcome(SHORT, activity, findings, [], [], chats=1, events=6, seconds=1.0)
    text = render(outcome)
    assert "fault: redis restart" in text
    assert "31.5s (worker1" in text
    assert "What it found: 2 violations" in text
    assert "round 7 (agent stopped): 1" in text
    assert "[gap] chat c1" in text
    assert "no violation" in render(Outcome(SHORT, Activity(), Findings(), [], [], 0, 0, 0.0))
