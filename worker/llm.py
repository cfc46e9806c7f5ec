"""Terra's agent: streaming, retries, circuit breaker.

The streaming call goes through :class:`worker.agent_stream.AgentStreamer` (aiohttp and
orjson, one pre-serialised body, plain dicts per chunk: the measurement behind that is in
its module doc); the health probe and the error taxonomy stay the ``openai`` package's.

One call to :meth:`AgentClient.complete` is one streamed completion (the
:class:`worker.ports.Agent` port; :func:`worker.toolloop.reply` makes an answer of one or
more). It streams content deltas into a :class:`~worker.ports.DeltaSink` (the chunk writer)
as they arrive, so the visitor sees the reply grow, and returns the whole
:class:`~worker.turns.AgentTurn`. :meth:`AgentClient.probe` is the health check's tiny
completion.

Retries and what the visitor sees. Failed attempts are retried with jittered exponential
backoff (timeouts, connection errors, 5xx, 429, an in-stream ``{"error": ...}`` object, a
stream cut before the model finished), **but only while nothing has been pushed to the sink
yet**. Once text has reached the visitor, a second attempt would produce a different text
that the original front end would append to the first, so a failure after the first delta is
final here: the answer handler decides, and restarts the whole answer after a ``streamReset``
when the agent was lost (:mod:`worker.patience`). In practice this retries exactly the common
failures (agent down, 5xx/429 at request time, error before the first token) and never shows
duplicated or contradictory text.

How a stream ends (issue 16). ``[DONE]`` after a finish reason is an answer (a
``finish_reason`` of ``"length"`` is kept on the turn: the answer was cut at ``max_tokens``).
A stream that ends with neither (a model server stopped mid-answer) is a failure, retryable
like a broken connection. A 200 stream with no event at all, or an answer with no text and
no tool call, is how llama.cpp reports a request it refused (template error, context
overflow, unsupported tool mode): :class:`EmptyReply`, a request error that is not retried
and does not count against the breaker. With tools offered, an empty reply is first retried
without them; when that works the server is taken not to stream tool calls, tools are no
longer offered to it (logged once, and told to ``on_tool_support``);
:meth:`AgentClient.probe_tools` (:mod:`worker.agent_probes`) asks the same before any
answer (the health monitor's start-up probe). A 400 for a request carrying tool turns
(assistant ``tool_calls``, ``tool`` results) is retried once with those turns written as
plain text (:func:`worker.template_shapes.tool_turns_as_text`): chat templates
such as Gemma 3's refuse tool roles; when that works, tool turns go as text from then on.

Circuit breaker: ``threshold`` consecutive failures that say the agent is unwell
(retryable ones and auth failures; a 400 says it is up) open the circuit for
``open_seconds``; meanwhile calls fail at once with category ``circuit_open``. After that
one trial call is let through; any success closes it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any

import orjson
import structlog
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from bus import BusError
from worker.agent_failures import CircuitBreaker, classify_error, counts_against_agent
from worker.agent_probes import AgentProbes
from worker.agent_stream import AgentStreamer
from worker.errors import AgentError
from worker.holdback import AttemptSink, HoldBack
from worker.metrics import WorkerMetrics
from worker.ports import DeltaSink, ReasoningSink
from worker.settings import WorkerSettings
from worker.template_shapes import tool_turns_as_text
from worker.turns import AgentTurn, ToolCall

__all__ = ["AgentClient", "EmptyReply"]

logger = structlog.get_logger("worker.llm")

#: Backoff never waits longer than this between attempts (seconds).
MAX_BACKOFF_SECONDS = 8.0


def _has_tool_turns(messages: Sequence[ChatCompletionMessageParam]) -> bool:
    return any(
        m.get("role") == "tool" or (m.get("role") == "assistant" and m.get("tool_calls"))
        for m in messages
    )


class EmptyReply(AgentError):
    """The server answered 200 with nothing: no event, or no text and no tool call."""

    def __init__(self, message: str) -> None:
        super().__init__("http_error", message)


class _CutStream(AgentError):
    """The stream ended without ``[DONE]`` or a finish reason."""

    def __init__(self) -> None:
        super().__init__(
            "network", "the answer stream ended before the model finished", retryable=True
        )


class AgentClient(AgentProbes):
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
        system_role: bool = True,
    ) -> None:
        self.model = model
        self.system_role = system_role
        #: Whether the server streams tool calls: None until it showed one way or the other.
        self.tools_streamed: bool | None = None
        #: True once the server refused tool turns and took them as text.
        self.tool_turns_as_text = False
        #: Answer streams open now (the health monitor holds its probes meanwhile).
        self.streams_open = 0
        #: Told what was learnt about tool support (the health monitor's detail).
        self.on_tool_support: Callable[[bool], None] | None = None
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
        # The streaming call goes through aiohttp + orjson, not the client above: see
        # worker.agent_stream for the measurement behind this.
        self._streamer = AgentStreamer(base_url, api_key, timeout_seconds)

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
            system_role=settings.agent_system_role,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pools."""
        await self._streamer.aclose()
        await self._client.close()

    # --- one completion --------------------------------------------------------------

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

        An attempt is retried only while it has pushed nothing to ``sink``. Tools are
        dropped for a server known not to stream tool calls (module doc).
        """
        attempt = 0
        offered = tools if self.tools_streamed is not False else None
        plain = self.tool_turns_as_text or not _has_tool_turns(messages)
        rewritten = False
        if self.tool_turns_as_text:
            messages = tool_turns_as_text(messages)
        while True:
            attempt += 1
            self.breaker.check()
            shown = AttemptSink(sink)
            try:
                turn = await self.stream_once(
                    messages, shown, tools=offered, thoughts=thoughts, hold=hold
                )
                if not turn.content and not turn.tool_calls and not turn.stopped:
                    raise EmptyReply("the model answered with nothing")
            except BusError:
                raise  # the sink's Redis trouble is not the agent's fault
            except EmptyReply:
                if not offered or shown.emitted:
                    if self.metrics is not None:
                        self.metrics.agent_errors.labels("http_error").inc()
                    raise
                offered = None  # perhaps the server cannot stream tool calls: ask without
                attempt -= 1
                continue
            except Exception as exc:
                err = classify_error(exc)
                if err.status == 400 and not plain and not shown.emitted:
                    plain = rewritten = True  # perhaps the template has no tool roles
                    messages = tool_turns_as_text(messages)
                    attempt -= 1
                    continue
                if self.metrics is not None:
                    self.metrics.agent_errors.labels(err.category).inc()
                if (
                    not err.retryable
                    or shown.emitted
                    or attempt >= self.max_attempts
                    or self.breaker.is_open
                ):
                    # One failed request counts once, however often it was tried: a single
                    # message the agent chokes on never opens the breaker for other chats.
                    if counts_against_agent(err):
                        self.breaker.record_failure()
                    if err is exc:
                        raise
                    raise err from exc
                await asyncio.sleep(self._backoff(attempt, err))
                continue
            self.breaker.record_success()
            if rewritten and not self.tool_turns_as_text:
                self.tool_turns_as_text = True
                logger.warning(
                    "worker.agent_tool_turns_refused",
                    hint="the server's chat template refuses tool turns; sending them as text",
                )
            if tools and offered is None and self.tools_streamed is None:
                self._learn_tool_support(False)
            elif offered and turn.tool_calls and self.tools_streamed is not True:
                self._learn_tool_support(True)
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
        out of ``sink`` and returned as ``turn.held`` (module doc). Raises the
        :class:`AgentError` of :class:`~worker.agent_stream.AgentStreamer`,
        :class:`EmptyReply` for a stream with no event, and a retryable ``network``
        :class:`AgentError` for one cut before its finish reason.
        """
        gate = HoldBack(sink, frozenset(hold)) if hold else None
        out: DeltaSink = gate if gate is not None else sink
        started = time.monotonic()
        request: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.temperature,
            "stream": True,
        }
        if self.max_tokens is not None:
            request["max_tokens"] = self.max_tokens
        if tools:
            request["tools"] = tools
            request["tool_choice"] = "auto"
        turn = AgentTurn()
        content: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        events = 0
        stream = self._streamer.events(orjson.dumps(request))
        self.streams_open += 1
        try:
            async for chunk in stream:
                events += 1
                choices = chunk.get("choices")
                if not choices:
                    continue
                choice = choices[0]
                delta = choice.get("delta") or {}
                finish = choice.get("finish_reason")
                if finish:
                    turn.finish_reason = finish
                thought = delta.get("reasoning_content")
                if thought and isinstance(thought, str):
                    reasoning.append(thought)
                    if thoughts is not None:
                        thoughts.push_reasoning(thought)
                for call in delta.get("tool_calls") or ():
                    slot = calls.setdefault(
                        call.get("index", 0), {"id": "", "name": "", "arguments": ""}
                    )
                    if call.get("id"):
                        slot["id"] = call["id"]
                    function = call.get("function")
                    if function:
                        if function.get("name"):
                            slot["name"] = function["name"]
                        if function.get("arguments"):
                            slot["arguments"] += function["arguments"]
                text = delta.get("content")
                if text:
                    if not content and self.metrics is not None:
                        self.metrics.time_to_first_token.observe(time.monotonic() - started)
                    content.append(text)
                    turn.deltas += 1
                    if not out.push(text):
                        turn.stopped = True
                        break
        finally:
            self.streams_open -= 1
            await stream.aclose()
        if not turn.stopped and turn.finish_reason is None:
            if events == 0:
                raise EmptyReply("the server sent an empty stream (it refused the request)")
            raise _CutStream()
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
