"""Hypothesis against the bus schemas (issue 11, "hypothesis for the bus schemas"): whatever
bytes sit in an event log or the jobs stream (a bug, a hand edit, another version), decoding
either gives a model or raises SchemaError, never anything else, and what decodes
re-encodes to itself and renders to a JSON frame without the internal ``v``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.errors import SchemaError
from bus.schemas import (
    AnswerMessage,
    ChunkProduced,
    MessagePosted,
    WorkerStateChanged,
    decode_event,
    decode_job,
    encode,
    render_frame,
)

pytestmark = pytest.mark.integration

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

T = "2026-12-03T10:00:00.000Z"
VALID_EVENTS: list[dict[str, Any]] = [
    json.loads(encode(model))
    for model in (
        MessagePosted(id="m1", chatId="c", sender="Visitor", content="hi", createdAt=T),
        WorkerStateChanged(chatId="c", state="queued", updatedAt=T),
        ChunkProduced(chatId="c", content="x", done=False, emittedAt=T, replyTo="m1"),
    )
]
VALID_JOB: dict[str, Any] = json.loads(
    encode(AnswerMessage(job_id="j", chat_id="c", message_id="m1", request_id="r", enqueued_at=1.5))
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def _mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from([*base, "type", "v", "extra"])
    return st.builds(lambda k, v: {**base, k: v}, keys, json_values)


def _decode(decoder: Any, raw: str | bytes) -> Any:
    try:
        return decoder(raw)
    except SchemaError:
        return None


@SETTINGS
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_decode_or_raise_schema_error(raw: bytes) -> None:
    _decode(decode_event, raw)
    _decode(decode_job, raw)


@SETTINGS
@given(st.one_of(*[_mutated(event) for event in VALID_EVENTS]) | json_values)
def test_a_decoded_event_round_trips_and_renders(value: Any) -> None:
    raw = json.dumps(value)
    event = _decode(decode_event, raw)
    if event is None:
        return
    assert decode_event(encode(event)) == event
    frame = render_frame(encode(event), "1-0")
    assert frame["eventId"] == "1-0"
    assert "v" not in frame
    json.dumps(frame)


@SETTINGS
@given(_mutated(VALID_JOB) | json_values)
def test_a_decoded_job_round_trips(value: Any) -> None:
    job = _decode(decode_job, json.dumps(value))
    if job is not None:
        assert decode_job(encode(job)) == job


def test_the_valid_examples_decode() -> None:
    for event in VALID_EVENTS:
        assert decode_event(json.dumps(event)) is not None
    assert decode_job(json.dumps(VALID_JOB)) is not None
