"""One v1 translation (protocol 9.7) for both encoders (review F7): the WebSocket's
(:func:`gateway.outbox.frame_payload`, orjson) and SSE/replay's
(:func:`gateway.streaming.v1_frame_json`, json) both render :func:`gateway.streaming.v1_frame`,
so a v1-only rule added there reaches both transports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus import EventRecord
from gateway.outbox import frame_payload
from gateway.streaming import v1_frame, v1_frame_json

EVENTS: list[dict[str, Any]] = [
    {"type": "message", "chatId": "c", "sender": "Visitor", "content": "héllo ✓"},
    {"type": "workerState", "chatId": "c", "state": "processing"},
    {"type": "assistantChunk", "chatId": "c", "content": "Hi", "done": False, "replyTo": "r"},
    {
        "type": "streamReset",
        "chatId": "c",
        "emittedAt": "2026-12-03T10:00:00.000Z",
        "replyTo": "r-1",
        "reason": "retry",
    },
    {"type": "toolCall", "chatId": "c", "name": "search", "status": "started"},
    {"type": "health", "status": "online"},
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e["type"])
def test_websocket_and_sse_send_v1_clients_the_same_frame(event: dict[str, Any]) -> None:
    record = EventRecord("1700000000000-3", json.dumps(event))
    frame = v1_frame(record)
    text = v1_frame_json(record)
    payload = frame_payload(record, False)
    if frame is None:
        assert (text, payload) == (None, None)
        return
    assert text is not None
    assert payload is not None
    assert json.loads(text) == json.loads(payload) == frame
    assert payload == text.encode()


def test_a_stream_reset_clears_a_v1_bubble() -> None:
    event = EVENTS[3]
    record = EventRecord("1700000000000-3", json.dumps(event))
    assert v1_frame(record) == {
        "type": "assistantChunk",
        "chatId": "c",
        "content": "",
        "done": True,
        "emittedAt": event["emittedAt"],
        "replyTo": "r-1",
        "eventId": "1700000000000-3",
    }
    assert json.loads(frame_payload(record, True) or b"")["type"] == "streamReset"
