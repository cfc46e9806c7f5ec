"""Terra's agent, through the ``openai`` package: streaming, retries, circuit breaker.

One call to :meth:`AgentClient.reply` produces one answer. It streams content deltas into
a :class:`DeltaSink` (the chunk writer) as they arrive, so the visitor sees the reply grow,
and returns the whole :class:`AgentTurn`.

Retries and what the visitor sees. Failed attempts are retried with jittered exponential
backoff (timeouts, connection errors, 5xx, 429, an in-stream ``{"error": ...}`` object,
an empty reply), **but only while nothing has been pushed to the sink yet**. Once text
has reached the visitor, a second attempt would produce a different text that the
original front end cannot replace (it only appends chunks; a "stream reset" frame would
be v=2 only), so a failure after the first delta is final: the caller keeps the partial
text and adds the apology. In practice this retries exactly the common failures (agent
down, 5xx/429 at request time, error before the first token) and never shows duplicated
or contradictory text.

Circuit breaker: ``threshold`` consecutive failures that say the agent is unwell
(retryable ones and auth failures; a 400 says it is up) open the circuit for
``open_seconds``; meanwhile calls fail at once with category ``circuit_open``. After that
one trial call is let through; any success closes it.

The tool loop (:meth:`AgentClient.reply` with a :class:`ToolHost`). Up to ``max_rounds``
streamed calls per answer; tool-call deltas are merged by ``index`` (only a call's first delta
carries its id and name). Each round's calls run through the host (the tool registry: per-call
timeouts, and bad JSON, unknown tools or invalid arguments come back to the model as a tool
error, never as an exception); the assistant ``tool_calls`` message (content ``""`` when
empty, never null) and one ``tool`` message per call are appended, and the answer's tool turns
so far are saved (``ToolHost.remember``) before the next call, so a restarted worker or the
next question sees them intact. Rules:

- Retries apply per round: a round is retried while *that round* has shown nothing yet; text
  of earlier rounds stays, as it is already part of the answer.
- Before the second-to-last call a system message warns the model that one round of tools
  is left (as terrarium-irc does); the last call is offered no tools, so the model answers.
  If it still asks for tools, the calls are not run and the answer ends with
  :data:`TOOL_ROUNDS_APOLOGY`.
- Textual tool calls: when a response has no structured ``tool_calls`` but its text (outside
  ``<think>`` blocks) contains a call of a known tool (``name(arg="v")`` or
  ``<tool_call>{...}</tool_call>``), the calls run as if made properly. So that the visitor
  does not see such text as the answer, content is *held back* from the point where a call of
  a known tool may start (a known name at a word start followed by ``(``, or ``<tool_call>``)
  until the round ends; a trailing word that may still become a tool name waits for the next
  delta. Held text that turns out not to be a call is released at the end of the round (the
  visitor sees it arrive at once); a call, and anything after it in that round, is never
  shown. Text before the call stays visible. No ``streamReset`` is needed for this.
- The answer is what the visitor saw: the visible text of every round, separated by a blank
  line, so the concatenated chunks always equal the stored reply. ``<think>`` blocks stay in
  the content (the original front end shows them in its thoughts drawer);
  ``reasoning_content`` deltas go to a separate :class:`ReasoningSink` (v=2 frames).
- Between rounds the host is asked whether the visitor cancelled (tool rounds show nothing,
  so the chunk writer cannot notice).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import structlog
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from redis.exceptions import RedisError

from bus.errors import BusError
from bus.schemas import ComponentStatus, iso_now
from worker.agent_failures import CircuitBreaker, classify_error, counts_against_agent
from worker.errors import AgentError
from worker.holdback import AnswerSink, AttemptSink, HoldBack, without_think
from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings

__all__ = [
    "ROUNDS_WARNING",
    "TOOL_ROUNDS_APOLOGY",
    "AgentClient",
    "AgentTurn",
    "DeltaSink",
    "ReasoningSink",
    "ToolCall",
    "ToolHost",
]

logger = structlog.get_logger("worker.llm")

#: Backoff never waits longer than this between attempts (seconds).
MAX_BACKOFF_SECONDS = 8.0

PROBE_SYSTEM_PROMPT = "You are a health check. Reply with the single word: pong."

#: Told to the model (as a system message) before its second-to-last call of a reply.
ROUNDS_WARNING = (
    "Tool budget warning: you may make at most one more round of tool calls for this reply; "
    "after that no tools are available and you must answer. If you already have enough, "
    "answer the visitor now with what you have."
)
#: Ends a reply when the model still asked for tools on its last call.
TOOL_ROUNDS_APOLOGY = (
    "I looked in more places than I can in one reply and still came up short, sorry. "
    "Could you ask me something a little narrower?"
)


class DeltaSink(Protocol):
    """Where streamed content goes (implemented by :class:`worker.chunks.ChunkWriter`)."""

    def push(self, text: str) -> bool:
        """Take one content delta; return False to stop reading the stream (cancelled).

        May raise :class:`bus.BusError` or a redis error, which end the answer untranslated.
        """
        ...

    @property
    def emitted(self) -> bool:
        """True once any text was pushed (the visitor may have seen it)."""
        ...


class ReasoningSink(Protocol):
    """Where ``reasoning_content`` deltas go (:class:`worker.reasoning.ReasoningWriter`)."""

    def push_reasoning(self, text: str) -> None:
        """Take one reasoning delta (buffered; never blocks, never raises)."""
        ...


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call requested by the model; ``arguments`` is the raw JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class AgentTurn:
    """The outcome of one streamed completion."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    #: Reading stopped early because the sink asked for it (the visitor cancelled).
    stopped: bool = False
    #: Number of content deltas received (a token count good enough for logs).
    deltas: int = 0
    reasoning: str = ""
    latency_ms: float = 0.0
    #: Content held back from the visitor because it may be a textual tool call (it is
    #: part of ``content``; the tool loop decides whether to show it).
    held: str = ""
    #: Tool rounds run for this answer (the tool loop only).
    rounds: int = 0
    #: The model still asked for tools on its last call (the tool loop only).
    exhausted: bool = False

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation (with tool_calls if any)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message


class ToolHost(Protocol):
    """The tools side of one answer (implemented by :class:`worker.toolloop.ToolSession`)."""

    def definitions(self) -> list[dict[str, Any]]:
        """The request's ``tools`` list."""
        ...

    @property
    def call_names(self) -> Collection[str]:
        """Names (and aliases) a textual call may use; content mentioning them is held back."""
        ...

    def textual_calls(self, text: str) -> list[ToolCall]:
        """Calls of known tools written as text in ``text`` (empty when there are none)."""
        ...

    async def run(self, calls: Sequence[ToolCall]) -> list[str]:
        """Run one round's calls; one ``tool`` message content per call, in order.

        Never raises for the model's mistakes (they become error results).
        """
        ...

    async def remember(self, turns: Sequence[dict[str, Any]]) -> None:
        """Persist the answer's tool turns so far (replacing what was saved before)."""
        ...

    async def cancelled(self) -> bool:
        """True once the visitor asked to stop this answer."""
        ...


class AgentClient:
    """Calls the agent's ``/v1/chat/completions`` with ``stream=True``; see the module doc."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        max_attempts: int = 3,
        retry_base_seconds: float = 1.0,
        temperature: float = 0.7,
        max_tokens: int | None = None,
        breaker: CircuitBreaker | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.model = model
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_seconds = timeout_seconds
        self.breaker = breaker or CircuitBreaker()
        self.metrics = metrics
        # terrarium-agent has no auth; the openai package insists on some key.
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "unused",
            timeout=timeout_seconds,
            max_retries=0,
        )

    @classmethod
    def from_settings(
        cls, settings: WorkerSettings, metrics: WorkerMetrics | None = None
    ) -> AgentClient:
        """Build the client the worker uses, from its settings."""
        key = settings.agent_api_key.get_secret_value() if settings.agent_api_key else None
        return cls(
            base_url=settings.agent_base_url,
            model=settings.agent_model,
            api_key=key,
            timeout_seconds=settings.agent_timeout_seconds,
            max_attempts=settings.agent_max_attempts,
            retry_base_seconds=settings.agent_retry_base_seconds,
            temperature=settings.agent_temperature,
            max_tokens=settings.agent_max_tokens,
            breaker=CircuitBreaker(
                settings.agent_circuit_threshold, settings.agent_circuit_open_seconds
            ),
            metrics=metrics,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    # --- one answer ------------------------------------------------------------------

    async def reply(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        sink: DeltaSink,
        *,
        tools: ToolHost | None = None,
        thoughts: ReasoningSink | None = None,
        max_rounds: int = 8,
    ) -> AgentTurn:
        """Answer the conversation ``messages``, streaming content into ``sink``.

        With ``tools``, runs the tool loop (module doc); the returned turn's ``content`` is
        everything the visitor saw. Messages after the last user message are taken as tool
        turns saved by an earlier attempt at this answer (they count against ``max_rounds``).
        Raises :class:`AgentError` after the last failed attempt of a round.
        """
        if tools is None:
            turn = await self.complete(messages, sink, thoughts=thoughts)
            if turn.tool_calls and not turn.content and not turn.stopped:
                raise AgentError("unknown", "the model asked for tools, but none are offered")
            return turn
        return await self._tool_loop(messages, sink, tools, thoughts, max_rounds)

    async def _tool_loop(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        sink: DeltaSink,
        host: ToolHost,
        thoughts: ReasoningSink | None,
        max_rounds: int,
    ) -> AgentTurn:
        history: list[dict[str, Any]] = [dict(m) for m in messages]
        first_after = 1 + max(
            (i for i, m in enumerate(history) if m.get("role") == "user"), default=-1
        )
        memory = [m for m in history[first_after:] if m.get("role") in ("assistant", "tool")]
        done = sum(1 for m in memory if m.get("role") == "assistant" and m.get("tool_calls"))
        names = frozenset(host.call_names)
        answer = AnswerSink(sink)
        total = AgentTurn()
        reasoning: list[str] = []
        while True:
            last = done + 1 >= max_rounds
            if done and await host.cancelled():
                total.stopped = True
                break
            if done and done + 2 == max_rounds:
                history.append({"role": "system", "content": ROUNDS_WARNING})
            answer.new_round()
            turn = await self.complete(
                cast(list[ChatCompletionMessageParam], history),
                answer,
                tools=None if last else host.definitions(),
                thoughts=thoughts,
                hold=names,
            )
            total.deltas += turn.deltas
            total.latency_ms += turn.latency_ms  # the model's time, not the tools'
            total.finish_reason = turn.finish_reason
            reasoning.append(turn.reasoning)
            if turn.stopped:
                total.stopped = True
                break
            calls = list(turn.tool_calls)
            said = turn.content
            if turn.held:
                textual = host.textual_calls(without_think(turn.content))
                if textual:
                    said = turn.content[: len(turn.content) - len(turn.held)]
                    if not calls:
                        calls = textual
                        logger.info(
                            "worker.textual_tool_calls_found", tools=[c.name for c in calls]
                        )
                elif not answer.push(turn.held):
                    total.stopped = True
                    break
            if not calls:
                break
            if last:
                total.exhausted = True
                logger.warning("worker.tool_rounds_exhausted", rounds=done, asked=len(calls))
                answer.new_round()
                answer.push(TOOL_ROUNDS_APOLOGY)
                break
            assistant: dict[str, Any] = AgentTurn(content=said, tool_calls=calls).as_message()
            results = await host.run(calls)
            replies = [
                {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result}
                for call, result in zip(calls, results, strict=True)
            ]
            history += [assistant, *replies]
            memory += [{**assistant, "content": ""}, *replies]
            await host.remember(memory)
            done += 1
        total.content = answer.text
        total.reasoning = "".join(reasoning)
        total.rounds = done
        return total

    async def complete(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        sink: DeltaSink,
        *,
        tools: list[dict[str, Any]] | None = None,
        thoughts: ReasoningSink | None = None,
        hold: Collection[str] = (),
    ) -> AgentTurn:
        """One streamed completion with retries and the circuit breaker.

        An attempt is retried only while it has pushed nothing to ``sink``.
        """
        attempt = 0
        while True:
            attempt += 1
            self.breaker.check()
            shown = AttemptSink(sink)
            try:
                turn = await self.stream_once(
                    messages, shown, tools=tools, thoughts=thoughts, hold=hold
                )
                if not turn.content and not turn.tool_calls and not turn.stopped:
                    raise AgentError("server_error", "empty response", retryable=True)
            except (BusError, RedisError):
                raise  # the sink's Redis trouble is not the agent's fault
            except Exception as exc:
                err = classify_error(exc)
                if self.metrics is not None:
                    self.metrics.agent_errors.labels(err.category).inc()
                if counts_against_agent(err):
                    self.breaker.record_failure()
                if (
                    not err.retryable
                    or shown.emitted
                    or attempt >= self.max_attempts
                    or self.breaker.is_open
                ):
                    if err is exc:
                        raise
                    raise err from exc
                await asyncio.sleep(self._backoff(attempt, err))
                continue
            self.breaker.record_success()
            return turn

    def _backoff(self, attempt: int, err: AgentError) -> float:
        """Equal-jitter exponential backoff; a 429's Retry-After is a floor."""
        ceiling = min(MAX_BACKOFF_SECONDS, self.retry_base_seconds * 2 ** (attempt - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        return float(max(delay, err.retry_after or 0.0))

    async def stream_once(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        sink: DeltaSink,
        *,
        tools: list[dict[str, Any]] | None = None,
        thoughts: ReasoningSink | None = None,
        hold: Collection[str] = (),
    ) -> AgentTurn:
        """One attempt: stream a completion, pushing content deltas to ``sink``.

        Tool-call deltas are merged by ``index`` (only a call's first delta carries its
        ``id`` and name). ``reasoning_content`` deltas go to ``thoughts``. With ``hold``
        (tool names), content from where a textual call of one of them may start is kept
        out of ``sink`` and returned as ``turn.held`` (module doc). Raises openai
        exceptions untranslated.
        """
        gate = HoldBack(sink, frozenset(hold)) if hold else None
        out: DeltaSink = gate if gate is not None else sink
        started = time.monotonic()
        extra: dict[str, Any] = {}
        if self.max_tokens is not None:
            extra["max_tokens"] = self.max_tokens
        if tools:
            extra["tools"] = tools
            extra["tool_choice"] = "auto"
        stream = await self._client.chat.completions.create(
            model=self.model,
            messages=list(messages),
            temperature=self.temperature,
            stream=True,
            **extra,
        )
        turn = AgentTurn()
        content: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        try:
            async for chunk in stream:
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                if choice.finish_reason:
                    turn.finish_reason = choice.finish_reason
                extra_fields = delta.model_extra or {}
                thought = extra_fields.get("reasoning_content")
                if isinstance(thought, str) and thought:
                    reasoning.append(thought)
                    if thoughts is not None:
                        thoughts.push_reasoning(thought)
                for call in delta.tool_calls or ():
                    slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    if call.id:
                        slot["id"] = call.id
                    if call.function is not None:
                        if call.function.name:
                            slot["name"] = call.function.name
                        if call.function.arguments:
                            slot["arguments"] += call.function.arguments
                if delta.content:
                    if not content and self.metrics is not None:
                        self.metrics.time_to_first_token.observe(time.monotonic() - started)
                    content.append(delta.content)
                    turn.deltas += 1
                    if not out.push(delta.content):
                        turn.stopped = True
                        break
        finally:
            await stream.close()
        if gate is not None and not turn.stopped:
            turn.held = gate.finish()
        turn.content = "".join(content)
        turn.reasoning = "".join(reasoning)
        turn.tool_calls = [
            ToolCall(
                id=slot["id"] or f"call_{uuid.uuid4().hex[:12]}",
                name=slot["name"],
                arguments=slot["arguments"],
            )
            for _, slot in sorted(calls.items())
        ]
        turn.latency_ms = (time.monotonic() - started) * 1000
        return turn

    # --- health ----------------------------------------------------------------------

    async def probe(self, timeout_seconds: float = 30.0) -> ComponentStatus:
        """Inference probe: a tiny non-streaming completion (max_tokens 4, temperature 0).

        Bypasses the circuit breaker and never raises: the result is the LLM's status.
        """
        started = time.monotonic()
        try:
            await self._client.with_options(timeout=timeout_seconds).chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": PROBE_SYSTEM_PROMPT},
                    {"role": "user", "content": "Ping"},
                ],
                temperature=0,
                max_tokens=4,
                stream=False,
            )
        except Exception as exc:
            err = classify_error(exc)
            return ComponentStatus(status="offline", detail=err.detail, checkedAt=iso_now())
        latency = round((time.monotonic() - started) * 1000, 1)
        return ComponentStatus(status="online", checkedAt=iso_now(), latencyMs=latency)


# --- sinks of the tool loop ------------------------------------------------------------------
