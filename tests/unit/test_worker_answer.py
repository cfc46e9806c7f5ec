"""The answer handler on in-memory fakes of its two ports (no Redis, no HTTP): a chat log
that keeps what it is given, and an agent that plays a script of completions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import Field

from bus import BusUnavailable
from bus.schemas import MessagePosted, WorkerState
from tools import Tool, ToolContext, ToolParams, ToolRegistry
from tools.base import JsonObject
from worker.answer import (
    AGENT_APOLOGY,
    AnswerHandler,
    AnswerInterrupted,
    AnswerProgress,
)
from worker.errors import AgentError
from worker.metrics import WorkerMetrics
from worker.patience import RECONNECTING_DETAIL
from worker.ports import AnswerLog, DeltaSink, ReasoningSink, ReplyStatus
from worker.settings import WorkerSettings
from worker.tokenizer import ServerTokenizer
from worker.toolkit import ToolKit
from worker.turns import AgentTurn, ToolCall

CHAT = "chat-1"


class MemoryLog:
    """The bus port in memory: one list of Messages, one of other events, per chat."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, MessagePosted]] = []
        self.events: list[dict[str, Any]] = []
        self.replies: dict[str, str] = {}
        self.streaming: str | None = None
        self.cancel: str | None = None
        self.memory: dict[str, list[dict[str, Any]]] = {}
        self.fail_chunks = False
        self._seq = 0

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self._seq}-0"

    def post(self, content: str) -> MessagePosted:
        """A visitor message, as the gateway would store it."""
        message = MessagePosted(
            id=f"m{self._seq + 1}",
            chatId=CHAT,
            sender="Visitor",
            content=content,
            createdAt="2026-01-01T00:00:00+00:00",
        )
        self.messages.append((self._next_id(), message))
        return message

    def terra(self) -> list[MessagePosted]:
        return [m for _, m in self.messages if m.sender == "Terra"]

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.events]

    # --- the AnswerLog port ---------------------------------------------------------

    async def append_chunk(self, chat_id: str, reply_to: str, content: str) -> tuple[str, bool]:
        if self.fail_chunks:
            raise BusUnavailable("Redis unreachable (ConnectionError)")
        self.streaming = reply_to
        self.events.append({"type": "assistantChunk", "replyTo": reply_to, "content": content})
        return self._next_id(), self.cancel == reply_to

    async def append_event(self, chat_id: str, data: str) -> str:
        self.events.append(json.loads(data))
        return self._next_id()

    async def messages_until(self, chat_id: str, event_id: str, count: int) -> list[MessagePosted]:
        upto = [m for i, m in self.messages if event_id == "+" or _seq(i) <= _seq(event_id)]
        return upto[-count:]

    async def save_tool_turns(
        self, chat_id: str, message_id: str, turns: Sequence[Mapping[str, Any]]
    ) -> None:
        self.memory[message_id] = [dict(t) for t in turns]

    async def cancel_requested(self, chat_id: str, message_id: str) -> bool:
        return self.cancel == message_id

    async def unanswered_until(
        self, chat_id: str, message_id: str
    ) -> list[tuple[str, MessagePosted]]:
        if message_id in self.replies or all(m.id != message_id for _, m in self.messages):
            return []
        pending: list[tuple[str, MessagePosted]] = []
        for event_id, m in self.messages:
            if m.sender == "Visitor" and m.id not in self.replies:
                pending.append((event_id, m))
            if m.id == message_id:
                break
        return pending

    async def reply_event_id(self, chat_id: str, message_id: str) -> str | None:
        return self.replies.get(message_id)

    async def set_worker_state(
        self, chat_id: str, state: WorkerState, detail: str | None = None
    ) -> str:
        self.events.append({"type": "workerState", "state": state, "detail": detail})
        return self._next_id()

    async def streaming_reply(self, chat_id: str) -> str | None:
        return self.streaming

    async def begin_reply(self, chat_id: str, reply_to: str) -> tuple[bool, bool]:
        await self.set_worker_state(chat_id, "processing")
        return self.streaming == reply_to, self.cancel == reply_to

    async def reset_stream(self, chat_id: str, reply_to: str, reason: str) -> str:
        self.events.append({"type": "streamReset", "replyTo": reply_to, "reason": reason})
        return self._next_id()

    async def tool_turns(
        self, chat_id: str, message_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        return {i: self.memory[i] for i in message_ids if i in self.memory}

    async def finish_reply(
        self,
        chat_id: str,
        reply_to: str,
        content: str,
        *,
        status: ReplyStatus,
        state: WorkerState,
        detail: str | None,
    ) -> tuple[dict[str, Any], bool]:
        if reply_to in self.replies:
            return {"replyTo": reply_to}, True
        reply = MessagePosted(
            id=f"r-{reply_to}",
            chatId=chat_id,
            sender="Terra",
            content=content,
            createdAt="2026-01-01T00:00:01+00:00",
            replyTo=reply_to,
            status=None if status == "complete" else status,
        )
        event_id = self._next_id()
        self.messages.append((event_id, reply))
        self.replies[reply_to] = event_id
        self.streaming = None
        self.events.append({"type": "done", "replyTo": reply_to, "detail": detail, "state": state})
        return reply.model_dump(), False


def _seq(event_id: str) -> int:
    return int(event_id.split("-", 1)[0])


Step = AgentTurn | AgentError


class ScriptedAgent:
    """The agent port: each completion plays the next step (its content pushed delta by
    delta, word by word), or raises it; ``hang`` makes a completion wait to be cancelled
    after its text, as a silent model does."""

    def __init__(self, *steps: Step, hang: bool = False) -> None:
        self.steps = list(steps)
        self.hang = hang
        self.requests: list[list[dict[str, Any]]] = []
        self.offered_tools: list[bool] = []
        self.spoke = asyncio.Event()

    async def complete(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        sink: DeltaSink,
        *,
        tools: list[dict[str, Any]] | None = None,
        thoughts: ReasoningSink | None = None,
        hold: Collection[str] = (),
    ) -> AgentTurn:
        self.requests.append([dict(m) for m in messages])
        self.offered_tools.append(bool(tools))
        step = self.steps.pop(0)
        if isinstance(step, AgentError):
            if step.message.startswith("after:"):
                sink.push(step.message.removeprefix("after:"))
            raise step
        turn = AgentTurn(tool_calls=list(step.tool_calls), finish_reason="stop")
        for word in step.content.split(" "):
            delta = word if not turn.content else f" {word}"
            turn.content += delta
            turn.deltas += 1
            if not sink.push(delta):
                turn.stopped = True
                break
        self.spoke.set()
        if self.hang:
            await asyncio.Event().wait()
        return turn


class HealthLog:
    """The health port: what answers taught."""

    def __init__(self) -> None:
        self.replies = 0
        self.failures: list[str] = []

    def record_reply(self, latency_ms: float) -> None:
        self.replies += 1

    def record_failure(self, error: AgentError) -> None:
        self.failures.append(error.category)


def settings() -> WorkerSettings:
    return WorkerSettings(
        redis_url="redis://127.0.0.1:1/0",  # never connected: the log is in memory
        agent_api_url="http://agent.invalid/v1/chat/completions",
        chunk_interval_ms=1,
        cancel_poll_ms=10,
        max_tool_rounds=3,
        _env_file=None,
    )


def handler(
    log: AnswerLog, agent: ScriptedAgent, *, tools: ToolKit | None = None
) -> tuple[AnswerHandler, HealthLog, WorkerMetrics]:
    health, metrics = HealthLog(), WorkerMetrics()
    answer = AnswerHandler(
        log, agent, settings(), system_prompt="S", tools=tools, health=health, metrics=metrics
    )
    return answer, health, metrics


def chunks(log: MemoryLog) -> str:
    return "".join(e["content"] for e in log.events if e["type"] == "assistantChunk")


async def test_answers_every_waiting_message_oldest_first() -> None:
    log = MemoryLog()
    first, second = log.post("one"), log.post("two")
    agent = ScriptedAgent(AgentTurn(content="Reply one"), AgentTurn(content="Reply two"))
    answer, health, _ = handler(log, agent)
    progress = AnswerProgress()

    outcome = await answer.answer_job(CHAT, second.id, progress=progress)

    assert outcome == "answered"
    assert [(m.replyTo, m.content, m.status) for m in log.terra()] == [
        (first.id, "Reply one", None),
        (second.id, "Reply two", None),
    ]
    # the second answer saw the first question and its reply, and not beyond its own
    assert [m["content"] for m in agent.requests[1]] == ["S", "one", "Reply one", "two"]
    assert chunks(log) == "Reply oneReply two"
    assert (progress.answered, progress.tokens, health.replies) == (2, 4, 2)


async def test_already_answered_message_never_reaches_the_agent() -> None:
    log = MemoryLog()
    message = log.post("hello")
    log.replies[message.id] = "9-0"
    agent = ScriptedAgent()
    answer, _, _ = handler(log, agent)

    assert await answer.already_answered(CHAT, message.id)
    assert await answer.answer_job(CHAT, message.id) == "duplicate"
    assert agent.requests == []
    assert log.events == []


async def test_unknown_message_is_gone() -> None:
    agent = ScriptedAgent()
    answer, _, _ = handler(MemoryLog(), agent)
    assert await answer.answer_job(CHAT, "nope") == "gone"
    assert agent.requests == []


async def test_stop_while_the_agent_is_silent_keeps_the_partial_text() -> None:
    log = MemoryLog()
    message = log.post("tell me a long story")
    agent = ScriptedAgent(AgentTurn(content="Once upon"), hang=True)
    answer, _, _ = handler(log, agent)

    async def visitor_stops() -> None:
        await agent.spoke.wait()
        log.cancel = message.id

    stopper = asyncio.create_task(visitor_stops())
    outcome = await answer.answer_job(CHAT, message.id)
    await stopper

    assert outcome == "stopped"
    (reply,) = log.terra()
    assert (reply.content, reply.status) == ("Once upon", "stopped")
    assert chunks(log) == "Once upon"
    assert log.events[-1]["detail"] == "stopped"


async def test_a_reply_done_within_one_poll_interval_starts_no_cancel_watcher() -> None:
    """Issue 10: a short exchange pays no watcher task (the chunk writes and OPEN report a
    stop request; the watcher is for an agent silent for a whole poll interval)."""
    log = MemoryLog()
    message = log.post("hi")
    agent = ScriptedAgent(AgentTurn(content="Hello there"))
    patient = settings().model_copy(update={"cancel_poll_ms": 60_000})
    answer = AnswerHandler(log, agent, patient, system_prompt="S", metrics=WorkerMetrics())
    loop = asyncio.get_running_loop()
    started: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        started.append(getattr(coro, "__qualname__", ""))
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        assert await answer.answer_job(CHAT, message.id) == "answered"
    finally:
        loop.set_task_factory(None)
    assert "watch_cancel" not in started
    assert [m.content for m in log.terra()] == ["Hello there"]


async def test_stop_requested_before_the_answer_starts_skips_the_agent() -> None:
    log = MemoryLog()
    message = log.post("never mind")
    log.cancel = message.id
    agent = ScriptedAgent()
    answer, _, _ = handler(log, agent)

    assert await answer.answer_job(CHAT, message.id) == "stopped"
    assert agent.requests == []
    assert [(m.content, m.status) for m in log.terra()] == [("", "stopped")]


async def test_agent_failure_keeps_what_was_shown_and_apologises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.patience.PATIENCE_RETRY_SECONDS", 0.01)
    log = MemoryLog()
    message = log.post("hi")
    # an error the agent reports mid-stream is retried once, then apologised for
    agent = ScriptedAgent(*[AgentError("server_error", "after:Partial", retryable=True)] * 2)
    answer, health, _ = handler(log, agent)

    assert await answer.answer_job(CHAT, message.id) == "error"
    (reply,) = log.terra()
    assert (reply.content, reply.status) == (f"Partial\n\n{AGENT_APOLOGY}", "error")
    assert log.events[-1]["detail"] == "server_error: after:Partial"
    assert log.events[-1]["state"] == "error"
    assert health.failures == ["server_error"]


async def test_bus_trouble_is_raised_and_stores_no_apology() -> None:
    log = MemoryLog()
    message = log.post("hi")
    log.fail_chunks = True
    answer, _, _ = handler(log, ScriptedAgent(AgentTurn(content="Hello there")))

    with pytest.raises(BusUnavailable):
        await answer.answer_job(CHAT, message.id)
    assert log.terra() == []


async def test_a_retried_attempt_resets_the_stream_first() -> None:
    log = MemoryLog()
    message = log.post("hi")
    # an earlier attempt (a dead worker) streamed part of this reply
    await log.append_chunk(CHAT, message.id, "Half a")
    answer, _, metrics = handler(log, ScriptedAgent(AgentTurn(content="Whole answer")))

    assert await answer.answer_job(CHAT, message.id) == "answered"
    assert log.kinds() == [
        "assistantChunk",
        "workerState",
        "streamReset",
        *["assistantChunk"] * (log.kinds().count("assistantChunk") - 1),
        "done",
    ]
    assert chunks(log).removeprefix("Half a") == "Whole answer"
    assert log.terra()[0].content == "Whole answer"
    assert metrics.registry.get_sample_value("terrarium_worker_stream_resets_total") == 1


async def test_a_stop_between_two_answers_leaves_the_rest_for_later() -> None:
    log = MemoryLog()
    first, second = log.post("one"), log.post("two")
    agent = ScriptedAgent(AgentTurn(content="Reply one"))
    answer, _, _ = handler(log, agent)

    with pytest.raises(AnswerInterrupted):
        await answer.answer_job(CHAT, second.id, stopping=lambda: bool(log.terra()))
    assert [m.replyTo for m in log.terra()] == [first.id]


class LookupParams(ToolParams):
    topic: str = Field(min_length=1)


async def _lookup(params: LookupParams, ctx: ToolContext) -> JsonObject:
    return {"fact": f"{params.topic} is green"}


async def test_a_tool_round_runs_the_tool_announces_it_and_remembers_it() -> None:
    log = MemoryLog()
    message = log.post("what colour is moss?")
    registry = ToolRegistry()
    registry.register(
        Tool(name="lookup", description="Look a topic up.", params=LookupParams, handler=_lookup)
    )
    kit = ToolKit(registry, system_prompt="S")
    call = ToolCall("call_1", "lookup", '{"topic": "moss"}')
    agent = ScriptedAgent(AgentTurn(tool_calls=[call]), AgentTurn(content="Moss is green."))
    answer, _, _ = handler(log, agent, tools=kit)
    try:
        assert await answer.answer_job(CHAT, message.id) == "answered"
    finally:
        await kit.aclose()

    assert agent.offered_tools == [True, True]
    (tool_message,) = [m for m in agent.requests[1] if m["role"] == "tool"]
    assert (tool_message["role"], tool_message["tool_call_id"]) == ("tool", "call_1")
    assert "moss is green" in tool_message["content"]
    activity = [(e["name"], e["status"]) for e in log.events if e["type"] == "toolActivity"]
    assert activity == [("lookup", "started"), ("lookup", "done")]
    saved = log.memory[message.id]
    assert [t["role"] for t in saved] == ["assistant", "tool"]
    assert saved[0]["tool_calls"][0]["id"] == "call_1"
    assert log.terra()[0].content == "Moss is green."
    assert chunks(log) == "Moss is green."


async def test_an_unreachable_agent_makes_the_message_wait_then_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 9: a down agent (a vLLM restart) makes messages wait, not get the apology."""
    monkeypatch.setattr("worker.patience.PATIENCE_RETRY_SECONDS", 0.01)
    log = MemoryLog()
    message = log.post("hi")
    agent = ScriptedAgent(
        AgentError("network", "could not reach the agent", retryable=True),
        AgentError("circuit_open", "agent failing", retryable=False),
        AgentTurn(content="Back again"),
    )
    answer, _, _ = handler(log, agent)

    assert await answer.answer_job(CHAT, message.id) == "answered"
    (reply,) = log.terra()
    assert (reply.content, reply.status) == ("Back again", None)
    waits = [e for e in log.events if e.get("detail") == RECONNECTING_DETAIL]
    assert [e["state"] for e in waits] == ["queued"]


async def test_patience_runs_out_into_the_apology(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("worker.patience.PATIENCE_RETRY_SECONDS", 0.01)
    log = MemoryLog()
    message = log.post("hi")
    down = AgentError("network", "could not reach the agent", retryable=True)
    agent = ScriptedAgent(*[down] * 1000)
    answer, _, _ = handler(log, agent)
    answer.settings = answer.settings.model_copy(update={"agent_patience_seconds": 0.05})

    assert await answer.answer_job(CHAT, message.id) == "error"
    (reply,) = log.terra()
    assert reply.content == AGENT_APOLOGY


async def test_a_request_error_is_not_waited_on() -> None:
    log = MemoryLog()
    message = log.post("hi")
    agent = ScriptedAgent(
        AgentError("http_error", "HTTP 400: bad template"), AgentTurn(content="x")
    )
    answer, _, _ = handler(log, agent)
    assert await answer.answer_job(CHAT, message.id) == "error"
    assert len(agent.requests) == 1


def after_last_reset(log: MemoryLog) -> list[dict[str, Any]]:
    """The events after the last ``streamReset`` (all of them when there is none)."""
    kinds = log.kinds()
    start = len(kinds) - kinds[::-1].index("streamReset") if "streamReset" in kinds else 0
    return log.events[start:]


async def test_an_agent_lost_mid_stream_is_waited_for_and_the_answer_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 9: the agent going away after text was shown (a vLLM restart mid-answer) makes
    the reply wait and start again once it is back, not end in the apology."""
    monkeypatch.setattr("worker.patience.PATIENCE_RETRY_SECONDS", 0.01)
    log = MemoryLog()
    message = log.post("hi")
    agent = ScriptedAgent(
        AgentError("network", "after:Half an", retryable=True),  # the stream is cut
        AgentError("network", "could not reach the agent", retryable=True),  # still down
        AgentTurn(content="Whole answer"),
    )
    answer, health, metrics = handler(log, agent)

    assert await answer.answer_job(CHAT, message.id) == "answered"
    (reply,) = log.terra()
    assert (reply.content, reply.status) == ("Whole answer", None)
    assert len(agent.requests) == 3
    # what was shown is kept while Terra waits, dropped just before the new attempt shows
    # text, and what follows the reset is exactly the stored reply
    kinds = log.kinds()
    assert kinds.count("streamReset") == 1
    first_reset = kinds.index("streamReset")
    shown = [e for e in log.events[:first_reset] if e["type"] == "assistantChunk"]
    assert "".join(e["content"] for e in shown) == "Half an"
    waits = [e for e in log.events[:first_reset] if e["type"] == "workerState"]
    assert [(e["state"], e["detail"]) for e in waits][-1] == ("queued", RECONNECTING_DETAIL)
    tail = after_last_reset(log)
    assert tail[0] == {"type": "workerState", "state": "processing", "detail": None}
    assert "".join(e["content"] for e in tail if e["type"] == "assistantChunk") == reply.content
    assert log.events[first_reset]["replyTo"] == message.id
    assert metrics.registry.get_sample_value("terrarium_worker_stream_resets_total") == 1
    assert health.replies == 1


async def test_an_agent_lost_mid_stream_past_the_patience_keeps_the_text_and_apologises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.patience.PATIENCE_RETRY_SECONDS", 0.01)
    log = MemoryLog()
    message = log.post("hi")
    down = AgentError("network", "could not reach the agent", retryable=True)
    agent = ScriptedAgent(AgentError("timeout", "after:Half an", retryable=True), *[down] * 1000)
    answer, _, _ = handler(log, agent)
    answer.settings = answer.settings.model_copy(update={"agent_patience_seconds": 0.05})

    assert await answer.answer_job(CHAT, message.id) == "error"
    (reply,) = log.terra()
    # nothing new was shown, so no reset: the visitor keeps the text, then the apology
    assert (reply.content, reply.status) == (f"Half an\n\n{AGENT_APOLOGY}", "error")
    assert "streamReset" not in log.kinds()
    assert chunks(log) == "Half an"
    assert len(agent.requests) > 2


async def test_a_failing_restart_stores_what_it_showed_and_the_apology(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.patience.PATIENCE_RETRY_SECONDS", 0.01)
    log = MemoryLog()
    message = log.post("hi")
    agent = ScriptedAgent(
        AgentError("server_error", "after:First try", retryable=True),  # an in-stream error
        AgentError("server_error", "after:Second try", retryable=True),  # again: give up
        AgentTurn(content="never asked"),
    )
    answer, _, _ = handler(log, agent)

    assert await answer.answer_job(CHAT, message.id) == "error"
    (reply,) = log.terra()
    assert (reply.content, reply.status) == (f"Second try\n\n{AGENT_APOLOGY}", "error")
    assert log.kinds().count("streamReset") == 1
    tail = after_last_reset(log)
    shown = "".join(e["content"] for e in tail if e["type"] == "assistantChunk")
    assert shown == "Second try"
    assert reply.content.startswith(shown)
    assert len(agent.requests) == 2


async def test_a_request_error_after_text_is_not_restarted() -> None:
    log = MemoryLog()
    message = log.post("hi")
    agent = ScriptedAgent(AgentError("unknown", "after:Half an"), AgentTurn(content="x"))
    answer, _, _ = handler(log, agent)

    assert await answer.answer_job(CHAT, message.id) == "error"
    assert log.terra()[0].content == f"Half an\n\n{AGENT_APOLOGY}"
    assert len(agent.requests) == 1
    assert "streamReset" not in log.kinds()


async def test_a_stop_while_waiting_for_the_agent_stores_what_was_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.patience.PATIENCE_RETRY_SECONDS", 0.01)
    log = MemoryLog()
    message = log.post("hi")
    down = AgentError("network", "could not reach the agent", retryable=True)

    class StopWhileDown(ScriptedAgent):
        async def complete(self, *args: Any, **kwargs: Any) -> AgentTurn:
            if len(self.requests) == 3:
                log.cancel = message.id  # the visitor stops the waiting reply
            return await super().complete(*args, **kwargs)

    agent = StopWhileDown(AgentError("network", "after:Half an", retryable=True), *[down] * 100)
    answer, _, _ = handler(log, agent)

    assert await answer.answer_job(CHAT, message.id) == "stopped"
    (reply,) = log.terra()
    assert (reply.content, reply.status) == ("Half an", "stopped")
    assert "streamReset" not in log.kinds()


async def test_a_proxy_whose_model_is_down_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 502/503/504 (after the client's own retries) says the model behind a proxy is down;
    a 500 says this request failed and is not waited on."""
    monkeypatch.setattr("worker.patience.PATIENCE_RETRY_SECONDS", 0.01)
    log = MemoryLog()
    message = log.post("hi")
    agent = ScriptedAgent(
        AgentError("server_error", "HTTP 503", retryable=True, status=503),
        AgentTurn(content="Back again"),
    )
    answer, _, _ = handler(log, agent)

    assert await answer.answer_job(CHAT, message.id) == "answered"
    assert log.terra()[0].content == "Back again"
    assert ("queued", RECONNECTING_DETAIL) in [
        (e["state"], e["detail"]) for e in log.events if e["type"] == "workerState"
    ]


class CountingTokenizer(ServerTokenizer):
    """A tokenizer that is there and counts one token per word; remembers each request."""

    def __init__(self) -> None:
        super().__init__("http://agent.invalid/v1", "m")
        self.requests = 0

    @property
    def available(self) -> bool:
        return True

    async def counts(self, texts: Iterable[str]) -> dict[str, int] | None:
        self.requests += 1
        return {text: len(text.split()) for text in texts}


@pytest.mark.parametrize(("words", "asked"), [(150, 0), (600, 1)], ids=["fits", "over"])
async def test_the_tokenizer_is_asked_only_when_the_prompt_sent_would_be_trimmed(
    words: int, asked: int
) -> None:
    """A long chat's window (4 Messages per turn) is over the budget by the estimate, but
    the prompt keeps only ``MAX_TURNS`` turns of it: the tokenizer is asked only when those
    turns are over the budget. (It was asked whenever the window was: a request to the
    agent host before every answer of every long chat.)"""
    log = MemoryLog()
    text = " ".join(["word"] * words)
    for turn in range(30):
        question = log.post(f"{turn} {text}")
        log.messages.append(
            (
                log._next_id(),
                MessagePosted(
                    id=f"r-{question.id}",
                    chatId=CHAT,
                    sender="Terra",
                    content=f"re {turn} {text}",
                    createdAt="2026-01-01T00:00:00+00:00",
                    replyTo=question.id,
                    status="complete",
                ),
            )
        )
    target = log.post("and now?")
    tokenizer = CountingTokenizer()
    tight = settings().model_copy(
        update={"max_turns": 5, "agent_context_tokens": 4096, "agent_max_tokens": 256}
    )
    answer = AnswerHandler(log, ScriptedAgent(), tight, system_prompt="S", tokenizer=tokenizer)

    prompt = await answer._conversation(CHAT, log.messages[-1][0], target)

    assert tokenizer.requests == asked
    assert [m["role"] for m in prompt] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
