"""The console's pure parts: the timeline's folding and gaps, --since, job problems."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus.chatlog import EventRecord
from bus.ops import job_problems
from ops.cli import UsageError, parse_since
from ops.timeline import Timeline, format_gap

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def event(ms: int, seq: int = 0, **fields: Any) -> EventRecord:
    return EventRecord(f"{T0 + ms}-{seq}", json.dumps({"v": 1, "chatId": "c1", **fields}))


def chunk(ms: int, content: str, *, done: bool = False, seq: int = 0) -> EventRecord:
    return event(ms, seq, type="assistantChunk", content=content, done=done, replyTo="m1")


def render(records: list[EventRecord], *, chunks: bool = False) -> list[str]:
    timeline = Timeline(chunks=chunks)
    lines = [line for record in records for line in timeline.feed(record)]
    return [line.render() for line in [*lines, *timeline.flush()] if not line.quiet]


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "+0.000s"),
        (7, "+0.007s"),
        (59_999, "+59.999s"),
        (65_000, "+1m05s"),
        (7_380_000, "+2h03m"),
        (400 * 3_600_000, "+16d"),
    ],
)
def test_gaps_read_compactly(ms: int, text: str) -> None:
    assert format_gap(ms) == text


def test_a_reply_folds_into_one_line_with_count_size_and_duration() -> None:
    records = [
        event(0, type="message", id="m1", sender="Visitor", content="Hi", createdAt="x"),
        chunk(100, "Hel"),
        chunk(350, "lo"),
        event(
            400,
            type="message",
            id="r1",
            sender="Terra",
            content="Hello",
            replyTo="m1",
            createdAt="x",
        ),
        chunk(400, "", done=True, seq=1),
    ]
    assert render(records) == [
        "00:00:00.000             visitor   [m1] Hi",
        "00:00:00.100    +0.100s  stream    [re:m1] 2 chunks, 5 chars over 0.250s",
        "00:00:00.400    +0.050s  terra     [re:m1] Hello",
    ]
    unfolded = render(records, chunks=True)
    assert len(unfolded) == 5
    assert unfolded[-1].endswith('chunk     [re:m1] "" (done)')


def test_a_stream_without_its_message_says_so() -> None:
    lines = render([chunk(0, "a"), chunk(5, "b")])
    assert lines == [
        "00:00:00.000             stream    [re:m1] 2 chunks, 2 chars over 0.005s (not finished)"
    ]
    reset = render(
        [chunk(0, "a"), event(9, type="streamReset", replyTo="m1", reason="retry", emittedAt="x")]
    )
    assert reset[0].endswith("(dropped: the reply starts again)")
    assert reset[1].endswith("reset     [re:m1] the reply starts again (retry)")


def test_json_lines_carry_every_event_id_of_a_folded_reply() -> None:
    timeline = Timeline()
    for record in [chunk(0, "a"), chunk(1, "b")]:
        assert timeline.feed(record) == []
    (line,) = timeline.flush()
    assert line.as_json()["eventIds"] == [f"{T0}-0", f"{T0 + 1}-0"]
    assert line.as_json()["content"] == "ab"
    # The empty done chunk after a final Message: no text line, but its id is listed.
    (done,) = [*timeline.feed(chunk(2, "", done=True)), *timeline.flush()]
    assert done.quiet
    assert done.as_json()["eventIds"] == [f"{T0 + 2}-0"]


def test_since_takes_durations_and_iso_times() -> None:
    now = T0 / 1000
    assert parse_since("15m", now) == T0 - 15 * 60_000
    assert parse_since("2026-01-01T00:00", now) == T0
    assert parse_since("2026-01-01T01:00+01:00", now) == T0
    with pytest.raises(UsageError):
        parse_since("yesterday", now)


def test_a_malformed_job_has_its_problems_spelled_out() -> None:
    assert (
        job_problems(
            '{"type": "answerMessage", "v": 1, "job_id": "j", "chat_id": "c", '
            '"message_id": "m", "request_id": "r", "enqueued_at": 1.0}'
        )
        == []
    )
    problems = job_problems('{"type": "answerMessage", "v": 1, "chat_id": 5}')
    assert "chat_id: Input should be a valid string" in problems
    assert "job_id: Field required" in problems
    assert len(problems) == 5
    assert job_problems("{not json")[0].startswith("not JSON (")
