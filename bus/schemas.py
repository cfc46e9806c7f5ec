"""Versioned messages that cross Redis.

Events live in a chat's event log and are what visitors receive as frames; their field
names are the wire names of docs/protocol.md, so rendering a frame is adding ``eventId``
(and dropping the internal ``type``/``v`` where the wire has none). Jobs and heartbeats
are internal to the project. Every model is frozen, carries a literal ``type`` and a
literal ``v``, and ignores unknown fields so producers may add optional ones.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bus.errors import SchemaError

__all__ = [
    "EVENT_TYPES_V1",
    "AnswerMessage",
    "ChunkProduced",
    "ComponentStatus",
    "Event",
    "MessagePosted",
    "ReasoningProduced",
    "StreamReset",
    "ToolCallUpdated",
    "WorkerHeartbeat",
    "WorkerStateChanged",
    "decode_event",
    "decode_job",
    "encode",
    "iso_at_ns",
    "iso_now",
    "render_frame",
]

Sender = Literal["Visitor", "Terra"]
WorkerState = Literal["idle", "queued", "processing", "responded", "error"]
ReplyStatus = Literal["complete", "stopped", "error", "truncated"]
HealthStatus = Literal["online", "degraded", "offline", "unknown"]
ToolCallStatus = Literal["started", "done", "failed"]

#: Frame types the original front end understands; anything else is v=2 only.
EVENT_TYPES_V1 = frozenset({"message", "workerState", "assistantChunk"})


def iso_now() -> str:
    """Current UTC time as ISO 8601 with milliseconds and ``Z`` (as JavaScript prints it)."""
    return iso_at_ns(time.time_ns())


_second_text: tuple[int, str] = (-1, "")


def iso_at_ns(ns: int) -> str:
    """``ns`` (nanoseconds since the epoch) as :func:`iso_now` prints it.

    The date and time up to the second are formatted once per second (a stamp goes on
    every event the worker writes, issue 10); milliseconds are truncated, as datetime's.
    """
    global _second_text
    second, rest = divmod(ns, 1_000_000_000)
    if _second_text[0] != second:
        stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_text = (second, stamp)
    return f"{_second_text[1]}.{rest // 1_000_000:03d}Z"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# --- events (the chat's event log; frames on the wire) --------------------------------


class MessagePosted(_Model):
    """A visitor or Terra message was stored. Frame: a Message (no ``type`` on the wire)."""

    type: Literal["message"] = "message"
    v: Literal[1] = 1
    id: str
    chatId: str
    sender: Sender
    content: str
    createdAt: str
    replyTo: str | None = None
    status: ReplyStatus | None = None
    #: Bring-your-own-model chats (docs/protocol.md 9.10): the provider's display name and
    #: the model, on the visitor's messages and on the answers the gateway streamed.
    provider: str | None = None
    model: str | None = None


class WorkerStateChanged(_Model):
    """The worker's state for a chat changed."""

    type: Literal["workerState"] = "workerState"
    v: Literal[1] = 1
    chatId: str
    state: WorkerState
    detail: str | None = None
    updatedAt: str


class ChunkProduced(_Model):
    """A piece of Terra's reply being generated; ``done`` ends a reply's stream."""

    type: Literal["assistantChunk"] = "assistantChunk"
    v: Literal[1] = 1
    chatId: str
    content: str
    done: bool
    emittedAt: str
    replyTo: str | None = None


class StreamReset(_Model):
    """v=2: the reply to ``replyTo`` is generated again from the start (a worker died or
    Redis failed mid-answer); clients drop the partial text they showed of it. v1 clients
    receive it as an empty ``assistantChunk`` with ``done: true`` (docs/protocol.md 9.7)."""

    type: Literal["streamReset"] = "streamReset"
    v: Literal[1] = 1
    chatId: str
    replyTo: str
    reason: str
    emittedAt: str


class ToolCallUpdated(_Model):
    """v=2 frame ``toolActivity``: Terra started, finished or failed a tool call.

    Only the tool's name, the call id and a short ``detail`` (duration, or what went
    wrong) travel: never the arguments, which are visitor-derived (docs/protocol.md 9.6).
    """

    type: Literal["toolActivity"] = "toolActivity"
    v: Literal[1] = 1
    chatId: str
    replyTo: str
    callId: str
    name: str
    status: ToolCallStatus
    detail: str | None = None


class ReasoningProduced(_Model):
    """v=2 frame ``reasoning``: a piece of the model's ``reasoning_content`` for a reply."""

    type: Literal["reasoning"] = "reasoning"
    v: Literal[1] = 1
    chatId: str
    replyTo: str
    content: str


Event = Annotated[
    MessagePosted
    | WorkerStateChanged
    | ChunkProduced
    | StreamReset
    | ToolCallUpdated
    | ReasoningProduced,
    Field(discriminator="type"),
]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


# --- jobs and heartbeats (internal) ---------------------------------------------------


class AnswerMessage(_Model):
    """Command: answer the visitor message ``message_id`` of ``chat_id``."""

    type: Literal["answerMessage"] = "answerMessage"
    v: Literal[1] = 1
    job_id: str
    chat_id: str
    message_id: str
    request_id: str
    enqueued_at: float = Field(description="Unix time in seconds when the job was enqueued")


class ComponentStatus(_Model):
    """Health of one node of the chain, as the worker observed it."""

    status: HealthStatus = "unknown"
    detail: str | None = None
    checkedAt: str | None = None
    latencyMs: float | None = None


class WorkerHeartbeat(_Model):
    """A worker's periodic sign of life, with what it knows of the agent and the model."""

    type: Literal["workerHeartbeat"] = "workerHeartbeat"
    v: Literal[1] = 1
    consumer: str
    seen_at_ms: int
    agent: ComponentStatus = ComponentStatus()
    llm: ComponentStatus = ComponentStatus()
    active_jobs: int = 0
    capacity: int = 0


_JOB_ADAPTER: TypeAdapter[AnswerMessage] = TypeAdapter(AnswerMessage)


def encode(model: BaseModel) -> str:
    """Compact JSON of a model, as stored in Redis."""
    return model.model_dump_json(exclude_none=False)


def decode_event(raw: str | bytes) -> Event:
    """Parse an event log entry. Raises :class:`SchemaError` on anything malformed."""
    try:
        return _EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise SchemaError(f"malformed event: {exc.error_count()} error(s)") from exc


def decode_job(raw: str | bytes) -> AnswerMessage:
    """Parse a job stream entry. Raises :class:`SchemaError` on anything malformed."""
    try:
        return _JOB_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise SchemaError(f"malformed job: {exc.error_count()} error(s)") from exc


def render_frame(data: str | dict[str, Any], event_id: str) -> dict[str, Any]:
    """The wire frame of a stored event: its fields plus ``eventId``.

    Messages carry no ``type`` (the original front end treats type-less frames as
    Messages); no frame carries the internal schema version ``v``. ``None``-valued
    optional extension fields are dropped so v1 frames keep their original shape.
    """
    fields: dict[str, Any] = json.loads(data) if isinstance(data, str | bytes) else dict(data)
    fields.pop("v", None)
    if fields.get("type") == "message":
        del fields["type"]
        for optional in ("replyTo", "status", "provider", "model"):
            if fields.get(optional) is None:
                fields.pop(optional, None)
    elif fields.get("type") == "assistantChunk" and fields.get("replyTo") is None:
        fields.pop("replyTo", None)
    elif fields.get("type") == "toolActivity" and fields.get("detail") is None:
        fields.pop("detail", None)
    fields["eventId"] = event_id
    return fields
