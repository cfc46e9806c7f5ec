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

The tool loop (issue 4) goes in :meth:`AgentClient.reply`: a turn whose ``tool_calls`` is
non-empty is where the model asks for tools (deltas already merged by ``index``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from redis.exceptions import RedisError

from bus.errors import BusError
from bus.schemas import ComponentStatus, iso_now
from worker.errors import AgentError
from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings

__all__ = [
    "AgentClient",
    "AgentTurn",
    "CircuitBreaker",
    "DeltaSink",
    "ToolCall",
    "classify_error",
]

#: Backoff never waits longer than this between attempts (seconds).
MAX_BACKOFF_SECONDS = 8.0
#: A 429's ``Retry-After`` is honoured up to this many seconds.
MAX_RETRY_AFTER_SECONDS = 10.0

PROBE_SYSTEM_PROMPT = "You are a health check. Reply with the single word: pong."


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


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures, for ``open_seconds``."""

    def __init__(
        self,
        threshold: int = 3,
        open_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        """True while calls are refused."""
        return self._clock() < self._open_until

    def check(self) -> None:
        """Raise ``AgentError("circuit_open")`` while the circuit is open."""
        remaining = self._open_until - self._clock()
        if remaining > 0:
            raise AgentError(
                "circuit_open", f"agent failing; next try in {remaining:.1f}s", retryable=False
            )

    def record_success(self) -> None:
        """Close the circuit and forget past failures."""
        self._failures = 0
        self._open_until = 0.0

    def record_failure(self) -> None:
        """Count a failure; open the circuit at the threshold (again after a failed trial)."""
        self._failures += 1
        if self._failures >= self.threshold:
            self._open_until = self._clock() + self.open_seconds


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify_error(exc: BaseException) -> AgentError:
    """Translate an exception raised while talking to the agent into an :class:`AgentError`."""
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return AgentError("timeout", "the agent did not answer in time", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        reason = type(cause).__name__ if cause is not None else "connection failed"
        return AgentError("network", f"could not reach the agent ({reason})", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403):
            return AgentError("auth", f"HTTP {status}", status=status)
        if status == 429:
            return AgentError(
                "http_error",
                "HTTP 429 (rate limited)",
                retryable=True,
                status=429,
                retry_after=_retry_after(exc),
            )
        if status >= 500:
            return AgentError("server_error", f"HTTP {status}", retryable=True, status=status)
        return AgentError("http_error", f"HTTP {status}: {_short(exc.message)}", status=status)
    if isinstance(exc, openai.APIError):
        # An in-stream {"error": {...}} object: the agent failed mid-generation.
        return AgentError("server_error", _short(exc.message), retryable=True)
    return AgentError("unknown", type(exc).__name__)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return min(float(value), MAX_RETRY_AFTER_SECONDS) if value else None
    except ValueError:
        return None


def _counts_against_agent(err: AgentError) -> bool:
    return err.retryable or err.category == "auth"


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
        self, messages: Sequence[ChatCompletionMessageParam], sink: DeltaSink
    ) -> AgentTurn:
        """Answer the conversation ``messages``, streaming content into ``sink``.

        Raises :class:`AgentError` after the last failed attempt (see the module doc).
        """
        turn = await self.complete(messages, sink)
        # Tool loop (issue 4) goes here: while turn.tool_calls and rounds remain, append
        # turn.as_message() and one {"role": "tool", "tool_call_id", "content"} per call
        # to the messages, then `turn = await self.complete(messages, sink, tools=...)`.
        if turn.tool_calls and not turn.content and not turn.stopped:
            raise AgentError("unknown", "the model asked for tools, but none are offered")
        return turn

    async def complete(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        sink: DeltaSink,
        *,
        tools: list[dict[str, Any]] | None = None,
    ) -> AgentTurn:
        """One streamed completion with retries and the circuit breaker."""
        attempt = 0
        while True:
            attempt += 1
            self.breaker.check()
            try:
                turn = await self.stream_once(messages, sink, tools=tools)
                if not turn.content and not turn.tool_calls and not turn.stopped:
                    raise AgentError("server_error", "empty response", retryable=True)
            except (BusError, RedisError):
                raise  # the sink's Redis trouble is not the agent's fault
            except Exception as exc:
                err = classify_error(exc)
                if self.metrics is not None:
                    self.metrics.agent_errors.labels(err.category).inc()
                if _counts_against_agent(err):
                    self.breaker.record_failure()
                if (
                    not err.retryable
                    or sink.emitted
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
    ) -> AgentTurn:
        """One attempt: stream a completion, pushing content deltas to ``sink``.

        Tool-call deltas are merged by ``index`` (only a call's first delta carries its
        ``id`` and name). Raises openai exceptions untranslated.
        """
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
                if isinstance(thought, str):
                    reasoning.append(thought)
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
                    if not sink.push(delta.content):
                        turn.stopped = True
                        break
        finally:
            await stream.close()
        turn.content = "".join(content)
        turn.reasoning = "".join(reasoning)
        turn.tool_calls = [
            ToolCall(
                id=slot["id"] or f"call_{index}", name=slot["name"], arguments=slot["arguments"]
            )
            for index, slot in sorted(calls.items())
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
