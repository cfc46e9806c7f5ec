"""Terra's offline demo agent: an aiohttp server imitating terrarium-agent's OpenAI API.

Used as the fake LLM in tests and by the offline demo when no real agent is configured.
There is no model: replies are deterministic, short, and say plainly that they come from
the offline demo agent. Run it with ``python -m demo.agent --port 8099`` (or the
``terrarium-demo-agent`` script); in tests use ``async with run_demo_agent() as base_url``.

Endpoints (bodies are JSON; errors are ``{"error": {"message", "type", "code"}}``):

- ``POST /v1/chat/completions``: OpenAI/vLLM chat completions. ``stream: true`` answers
  ``text/event-stream`` with ``data: <chat.completion.chunk>`` frames and ``data: [DONE]``;
  otherwise one ``chat.completion``. Bad bodies get 400 (``messages`` must be a non-empty
  list; ``content`` must be a string, as terrarium-agent rejects null content).
  ``stream_options.include_usage`` adds a usage chunk. ``max_tokens`` caps content pieces.
- ``GET /v1/models``: one model, ``config.model``; with a context limit its entry has
  ``max_model_len`` as vLLM's has (unless the ``hide_context_length`` quirk).
- ``GET /health``: ``{status, vllm_status, model, queue_length}``; 200 while "healthy" or
  "degraded", 503 when "down" (completions then answer 503 too); 404 with ``no_health``.
- ``POST /tokenize`` ``{"prompt"}`` (vLLM) or ``{"content"}`` (llama.cpp) answers
  ``{"count", "tokens"}``, and ``POST /extras/tokenize/count`` ``{"input"}``
  (llama-cpp-python) answers ``{"count"}``, counting as the context limit does; 404 with
  ``no_tokenizer``.
- ``POST /_demo/fail`` ``{"count": n, "mode": "http500" | "httpNNN" | "error" |
  "disconnect" | "stall" | "no_done", "seconds": s}``: the next n valid completion requests fail so,
  overriding their directives ("stall" waits ``seconds``, default 5, then completes).
- ``GET /_demo/requests``: ``{"requests": [...]}``, the JSON bodies of completion requests.
- ``POST /_demo/reset``: forget requests and pending failures, restore the health status.
- ``POST /_demo/health`` ``{"status": "healthy" | "degraded" | "down"}``.
- ``POST /_demo/quirks`` ``{"quirks": [...], "context_tokens": n | null}``: switch the
  running agent's quirks and context limit (``/_demo/reset`` restores the start values).

Quirks of real servers (issue 16), on for every request by ``DemoAgentConfig.quirks`` /
``--quirk`` / ``/_demo/quirks``, or for one request by ``[[demo:quirk=NAME]]``:

- ``strict_roles``: 400 "Conversation roles must alternate user/assistant/user/assistant/..."
  unless the messages are an optional ``system`` then ``user``, ``assistant``, ``user``...
  (the Gemma 3 / Mistral / Llama 2 chat templates; ``tool`` turns break it too).
- ``no_system_role``: 400 "System role not supported" for any ``system`` message.
- ``no_done``: streams stop halfway with no finish chunk and no ``[DONE]`` (a server
  stopped with SIGTERM closes its streams so).
- ``empty_tool_stream``: a streamed request with ``tools`` (``tool_choice`` not "none")
  gets 200 ``text/event-stream`` with an empty body (llama-cpp-python's
  ``chatml-function-calling``).
- ``empty_errors``: streamed requests the server rejects (the checks above, the context
  limit) get 200 with an empty body instead of 400 (llama-cpp-python).
- ``no_health``: ``GET /health`` is 404 (llama-cpp-python has no such route).
- ``hide_context_length``: ``/v1/models`` does not say ``max_model_len`` (llama-cpp-python).
- ``no_tokenizer``: the tokenize routes are 404 (servers with no tokenizer route).
- ``interrupt_requests``: any request that touches the model (a completion, ``/v1/models``,
  a tokenize route) while a stream is open ends that stream with ``data: [DONE]`` and no
  finish reason (llama-cpp-python's default ``interrupt_requests``).

Context limit (``DemoAgentConfig.context_tokens``, ``--context-tokens`` or
``[[demo:context=N]]``): prompt tokens (a quarter of each message's characters plus 4 per
message) plus ``max_tokens`` above it get vLLM's 400 "This model's maximum context length is
N tokens. However, you requested ...". ``finish_reason: "length"``: a reply longer than
``max_tokens`` pieces is cut there, as real servers do.

The model: a greeting that names the question; with ``search_site`` offered (and
``tool_choice`` not "none") a question about projects/site/work first calls
``search_site {"query": <question>}``; once tool results follow the last user message, the
reply quotes a snippet of the first one. Replies stream as word pieces, one per
``config.token_delay_ms``. Tool calls stream like vLLM: each delta has ``index``; only the
first delta of a call has ``id``, ``type`` and ``function.name``; ``function.arguments``
follows in several fragments; ``finish_reason`` is "tool_calls".

Directives, honoured only in the LAST user message (and removed from the text it sees):

- ``[[demo:tokens=N]]`` reply of exactly N content pieces (padded with terrarium words).
- ``[[demo:delay=MS]]`` milliseconds per streamed delta.
- ``[[demo:error]]`` a few pieces, then ``data: {"error": {..., "type": "server_error"}}``
  and the end of the body without ``[DONE]`` (status already 200). Non-stream: HTTP 500.
- ``[[demo:http=NNN]]`` answer with HTTP status NNN (400-599) and an error body.
- ``[[demo:disconnect]]`` drop the connection mid-stream (non-stream: before answering).
- ``[[demo:no_done]]`` end the stream cleanly halfway, without finish chunk or ``[DONE]``.
- ``[[demo:quirk=NAME]]`` one of the quirks above, for this request only (repeatable).
- ``[[demo:context=N]]`` a context limit of N tokens for this request.
- ``[[demo:stall=S]]`` send nothing for S seconds (default 5) halfway through the answer.
- ``[[demo:reasoning]]`` stream ``delta.reasoning_content`` pieces before the content.
- ``[[demo:think]]`` put ``<think>...</think>`` at the start of the content.
- ``[[demo:tool=NAME {json}]]`` call NAME (offered or not) in the first tool round;
  several make parallel calls. Without JSON, arguments default to ``{"query": question}``
  when the tool takes a query, else ``{}``.
- ``[[demo:tool2=NAME {json}]]`` call NAME in the second round, after the first round's
  results arrive (needs a first round: ``tool=`` or the natural trigger).
- ``[[demo:textual_tool=NAME {json}]]`` write ``NAME(query="...")`` as plain content
  instead of a structured call (``-`` in NAME stands for ``_``: the worker runs no textual
  call of a tool the visitor's text names, and the directive is in the visitor's text).
- ``[[demo:badargs=NAME]]`` call NAME in the first round with invalid JSON arguments.
- ``[[demo:echo]]`` reply with exactly the last user message minus directives, stripped.

Rounds are counted as runs of ``role: "tool"`` messages after the last user message;
from the third round on (or with no scripted second round) the agent answers. A user message
made only of ``<tool_result>`` blocks (tool results sent as text, for templates without tool
roles) counts as tool results, not as the visitor's question.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import structlog
from aiohttp import web
from pydantic import ValidationError

from demo.agent_script import (
    QUIRKS,
    CompletionRequest,
    DirectiveError,
    Quirk,
    ReplyPlan,
    describe_validation_error,
    fragment_arguments,
    last_user_directives,
    plan_reply,
    request_rejection,
    text_tokens,
)
from logsetup import configure_logging

__all__ = [
    "DemoAgentConfig",
    "DemoAgentState",
    "HealthStatus",
    "create_agent_app",
    "main",
    "run_demo_agent",
]

HealthStatus = Literal["healthy", "degraded", "down"]
FailureMode = Literal["http", "error", "disconnect", "stall", "no_done"]

_HTTP_MODE_RE = re.compile(r"^http([45]\d\d)$")
_FAILURE_POINT = 3
_DEFAULT_STALL_SECONDS = 5.0
DEFAULT_MODEL = "terra-demo-offline"

logger = structlog.get_logger("demo.agent")


@dataclass(frozen=True, slots=True)
class DemoAgentConfig:
    """Settings for one demo agent; `health_status` is the initial (and reset) status."""

    model: str = DEFAULT_MODEL
    token_delay_ms: float = 15.0
    health_status: HealthStatus = "healthy"
    max_recorded_requests: int = 1000
    #: Real-server behaviours to imitate on every request (module doc).
    quirks: frozenset[Quirk] = frozenset()
    #: The model's context length in demo tokens; None means no limit.
    context_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.token_delay_ms < 0:
            raise ValueError("token_delay_ms must be >= 0")
        if self.health_status not in get_args(HealthStatus):
            raise ValueError(f"health_status must be one of {get_args(HealthStatus)}")
        if self.max_recorded_requests < 1:
            raise ValueError("max_recorded_requests must be >= 1")
        unknown = set(self.quirks) - set(QUIRKS)
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {', '.join(QUIRKS)}")
        if self.context_tokens is not None and self.context_tokens < 1:
            raise ValueError("context_tokens must be >= 1")


@dataclass(frozen=True, slots=True)
class InjectedFailure:
    """One failure queued by `POST /_demo/fail`."""

    mode: FailureMode
    status: int = 500
    seconds: float = _DEFAULT_STALL_SECONDS


@dataclass(slots=True)
class DemoAgentState:
    """Mutable per-app state: recorded requests, queued failures, health, open streams."""

    health_status: HealthStatus
    requests: deque[dict[str, Any]]
    quirks: frozenset[Quirk] = frozenset()
    context_tokens: int | None = None
    failures: deque[InjectedFailure] = field(default_factory=deque)
    queue_length: int = 0
    streams: weakref.WeakSet[asyncio.Task[Any]] = field(default_factory=weakref.WeakSet)
    #: Requests that touched the model (the ``interrupt_requests`` quirk watches it).
    model_requests: int = 0
    started: int = field(default_factory=lambda: int(time.time()))


CONFIG_KEY = web.AppKey("demo.agent.config", DemoAgentConfig)
STATE_KEY = web.AppKey("demo.agent.state", DemoAgentState)


def create_agent_app(config: DemoAgentConfig | None = None) -> web.Application:
    """Build the demo agent application (nothing starts until it is run)."""
    config = config or DemoAgentConfig()
    app = web.Application(middlewares=[_json_errors])
    app[CONFIG_KEY] = config
    app[STATE_KEY] = DemoAgentState(
        health_status=config.health_status,
        requests=deque(maxlen=config.max_recorded_requests),
        quirks=config.quirks,
        context_tokens=config.context_tokens,
    )
    app.router.add_routes(
        [
            web.post("/v1/chat/completions", _completions),
            web.get("/v1/models", _models),
            web.get("/health", _health),
            web.post("/tokenize", _tokenize),
            web.post("/extras/tokenize/count", _tokenize),
            web.post("/_demo/fail", _demo_fail),
            web.get("/_demo/requests", _demo_requests),
            web.post("/_demo/reset", _demo_reset),
            web.post("/_demo/health", _demo_health),
            web.post("/_demo/quirks", _demo_quirks),
        ]
    )
    app.on_shutdown.append(_cancel_streams)
    return app


@contextlib.asynccontextmanager
async def run_demo_agent(
    config: DemoAgentConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve a demo agent in this event loop; yield its base URL, e.g. ``http://127.0.0.1:PORT``.

    Port 0 picks a free port. Open streams are cancelled when the block exits.
    """
    runner = web.AppRunner(create_agent_app(config), shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield f"http://{host}:{bound_port}"
    finally:
        await runner.cleanup()


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "http_error"
    return {"error": {"message": message, "type": kind, "code": status}}


def _error_response(status: int, message: str) -> web.Response:
    return web.json_response(_error_body(status, message), status=status)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give aiohttp's own 404/405s the agent's JSON error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_response(exc.status, exc.reason)


async def _cancel_streams(app: web.Application) -> None:
    for task in list(app[STATE_KEY].streams):
        task.cancel()


async def _read_json_object(request: web.Request) -> tuple[str, dict[str, Any]]:
    raw = await request.text()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise _BadRequest(f"request body is not valid JSON ({exc.msg})") from None
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    return raw, body


class _BadRequest(Exception):
    """Turned into a 400 error body by the handlers."""


async def _completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    try:
        raw, body = await _read_json_object(request)
    except _BadRequest as exc:
        return _error_response(400, str(exc))
    state.requests.append(body)
    state.model_requests += 1
    if state.health_status == "down":
        return _error_response(503, "demo agent is down (set by POST /_demo/health)")
    try:
        completion = CompletionRequest.model_validate_json(raw)
        directives = last_user_directives(completion)
        plan = plan_reply(completion)
    except ValidationError as exc:
        return _error_response(400, describe_validation_error(exc))
    except DirectiveError as exc:
        return _error_response(400, str(exc))
    quirks = state.quirks | directives.quirks
    context = directives.context_tokens or state.context_tokens
    rejection = request_rejection(completion, quirks=quirks, context_tokens=context)
    if rejection is not None:
        logger.info("demo_agent.request_rejected", reason=rejection, quirks=sorted(quirks))
        if completion.stream and "empty_errors" in quirks:
            return await _empty_stream(request)
        return _error_response(400, rejection)
    if (
        completion.stream
        and "empty_tool_stream" in quirks
        and completion.tools
        and completion.tool_choice != "none"
    ):
        logger.info("demo_agent.tool_stream_emptied")
        return await _empty_stream(request)
    if "no_done" in quirks and plan.failure is None:
        plan = replace(plan, failure="no_done")
    if state.failures:
        plan = _apply_failure(plan, state.failures.popleft())
    logger.info(
        "demo_agent.completion_planned",
        stream=completion.stream,
        messages=len(completion.messages),
        tool_calls=len(plan.tool_calls),
        pieces=len(plan.content),
        failure=plan.failure,
        http_status=plan.http_status,
    )
    if plan.http_status is not None:
        return _error_response(plan.http_status, f"demo: injected HTTP {plan.http_status}")
    model = request.app[CONFIG_KEY].model
    if completion.stream:
        return await _stream(request, completion, plan)
    state.queue_length += 1
    try:
        return await _complete(request, completion, plan, model)
    finally:
        state.queue_length -= 1


def _apply_failure(plan: ReplyPlan, failure: InjectedFailure) -> ReplyPlan:
    plan = replace(plan, failure=None, http_status=None, stall_seconds=None)
    if failure.mode == "http":
        return replace(plan, http_status=failure.status)
    if failure.mode == "stall":
        return replace(plan, stall_seconds=failure.seconds)
    return replace(plan, failure=failure.mode)


def _delay_seconds(request: web.Request, plan: ReplyPlan) -> float:
    delay_ms = (
        plan.delay_ms if plan.delay_ms is not None else request.app[CONFIG_KEY].token_delay_ms
    )
    return delay_ms / 1000


def _build_deltas(plan: ReplyPlan) -> list[dict[str, Any]]:
    """The body deltas of a streamed reply (after the role delta, before the finish chunk)."""
    deltas: list[dict[str, Any]] = [{"reasoning_content": piece} for piece in plan.reasoning]
    deltas += [{"content": piece} for piece in plan.content]
    for index, call in enumerate(plan.tool_calls):
        head = {"index": index, "id": call.id, "type": "function"}
        deltas.append({"tool_calls": [head | {"function": {"name": call.name, "arguments": ""}}]})
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
            for fragment in fragment_arguments(call.arguments)
        ]
    return deltas


def _usage(completion: CompletionRequest, plan: ReplyPlan) -> dict[str, int]:
    prompt = sum(len(message.content) for message in completion.messages) // 4 + 1
    generated = len(plan.content) + len(plan.reasoning) + len(plan.tool_calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": generated,
        "total_tokens": prompt + generated,
    }


async def _empty_stream(request: web.Request) -> web.StreamResponse:
    """200 ``text/event-stream`` with no events at all, as llama-cpp-python fails."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write_eof()
    return response


def _drop_connection(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _stream(
    request: web.Request, completion: CompletionRequest, plan: ReplyPlan
) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    task = asyncio.current_task()
    if task is not None:
        state.streams.add(task)
    model = request.app[CONFIG_KEY].model
    chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    delay = _delay_seconds(request, plan)

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return _sse(chunk)

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    deltas = _build_deltas(plan)
    if plan.failure == "no_done":
        stop_at = len(deltas) // 2
    elif plan.failure:
        stop_at = min(_FAILURE_POINT, len(deltas))
    else:
        stop_at = len(deltas)
    stall_at = min(len(deltas), max(1, len(deltas) // 2))
    seen = state.model_requests
    try:
        await response.prepare(request)
        await response.write(frame({"role": "assistant", "content": ""}))
        for position, delta in enumerate(deltas[:stop_at]):
            if plan.stall_seconds is not None and position == stall_at:
                await asyncio.sleep(plan.stall_seconds)
            if delay:
                await asyncio.sleep(delay)
            if "interrupt_requests" in state.quirks and state.model_requests != seen:
                await response.write(b"data: [DONE]\n\n")  # llama-cpp-python's interruption
                await response.write_eof()
                return response
            await response.write(frame(delta))
        if plan.failure == "error":
            message = "demo: injected failure in the middle of the stream"
            await response.write(_sse({"error": {"message": message, "type": "server_error"}}))
            await response.write_eof()
            return response
        if plan.failure == "disconnect":
            _drop_connection(request)
            return response
        if plan.failure == "no_done":
            await response.write_eof()
            return response
        if plan.stall_seconds is not None and stall_at == len(deltas):
            await asyncio.sleep(plan.stall_seconds)
        await response.write(frame({}, plan.finish_reason))
        if completion.stream_options is not None and completion.stream_options.include_usage:
            usage = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(completion, plan),
            }
            await response.write(_sse(usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionError:
        logger.info("demo_agent.client_disconnected")
    return response


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


async def _complete(
    request: web.Request, completion: CompletionRequest, plan: ReplyPlan, model: str
) -> web.StreamResponse:
    if plan.stall_seconds is not None:
        await asyncio.sleep(plan.stall_seconds)
    if plan.failure == "error":
        return _error_response(500, "demo: injected failure while generating")
    if plan.failure == "disconnect":
        _drop_connection(request)
        return web.Response(status=500)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.content)}
    if plan.reasoning:
        message["reasoning_content"] = "".join(plan.reasoning)
    if plan.tool_calls:
        message["content"] = message["content"] or None
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in plan.tool_calls
        ]
    body = {
        "id": f"chatcmpl-{int(time.time())}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": plan.finish_reason}],
        "usage": _usage(completion, plan),
    }
    return web.json_response(body)


async def _models(request: web.Request) -> web.Response:
    model = request.app[CONFIG_KEY].model
    started = request.app[STATE_KEY].started
    state = request.app[STATE_KEY]
    state.model_requests += 1
    entry: dict[str, Any] = {"id": model, "object": "model", "created": started, "owned_by": "vllm"}
    if state.context_tokens is not None and "hide_context_length" not in state.quirks:
        entry["max_model_len"] = state.context_tokens
    return web.json_response({"object": "list", "data": [entry]})


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if "no_health" in state.quirks:
        raise web.HTTPNotFound()
    body = {
        "status": state.health_status,
        "vllm_status": "ready" if state.health_status == "healthy" else "unavailable",
        "model": request.app[CONFIG_KEY].model,
        "queue_length": state.queue_length,
    }
    return web.json_response(body, status=503 if state.health_status == "down" else 200)


async def _tokenize(request: web.Request) -> web.Response:
    """vLLM's and llama.cpp's ``/tokenize``, llama-cpp-python's ``/extras/tokenize/count``."""
    if "no_tokenizer" in request.app[STATE_KEY].quirks:
        raise web.HTTPNotFound()
    request.app[STATE_KEY].model_requests += 1
    try:
        _, body = await _read_json_object(request)
    except _BadRequest as exc:
        return _error_response(400, str(exc))
    text = next((body[k] for k in ("input", "prompt", "content") if k in body), None)
    if not isinstance(text, str):
        return _error_response(400, "the text to tokenize must be a string")
    count = text_tokens(text)
    if request.path.endswith("/count"):
        return web.json_response({"count": count})
    return web.json_response({"count": count, "tokens": list(range(count))})


def _parse_failure(body: dict[str, Any]) -> tuple[int, InjectedFailure]:
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10_000:
        raise _BadRequest("count must be an integer from 1 to 10000")
    mode = body.get("mode")
    seconds = body.get("seconds", _DEFAULT_STALL_SECONDS)
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not 0 <= seconds <= 3600
    ):
        raise _BadRequest("seconds must be a number from 0 to 3600")
    if isinstance(mode, str) and (match := _HTTP_MODE_RE.match(mode)):
        return count, InjectedFailure("http", status=int(match.group(1)))
    if mode in ("error", "disconnect", "no_done"):
        return count, InjectedFailure(mode)
    if mode == "stall":
        return count, InjectedFailure("stall", seconds=float(seconds))
    raise _BadRequest(
        'mode must be "http500" (or any "httpNNN"), "error", "disconnect", "stall" or "no_done"'
    )


async def _demo_fail(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        _, body = await _read_json_object(request)
        count, failure = _parse_failure(body)
    except _BadRequest as exc:
        return _error_response(400, str(exc))
    state.failures.extend([failure] * count)
    return web.json_response({"pending": len(state.failures)})


async def _demo_requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": list(request.app[STATE_KEY].requests)})


async def _demo_reset(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.requests.clear()
    state.failures.clear()
    config = request.app[CONFIG_KEY]
    state.health_status = config.health_status
    state.quirks = config.quirks
    state.context_tokens = config.context_tokens
    return web.json_response({"ok": True})


async def _demo_health(request: web.Request) -> web.Response:
    try:
        _, body = await _read_json_object(request)
    except _BadRequest as exc:
        return _error_response(400, str(exc))
    status = body.get("status")
    if status == "healthy" or status == "degraded" or status == "down":
        request.app[STATE_KEY].health_status = status
        return web.json_response({"status": status})
    return _error_response(400, 'status must be "healthy", "degraded" or "down"')


async def _demo_quirks(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        _, body = await _read_json_object(request)
        quirks = _parse_quirks(body.get("quirks", []))
        context = body.get("context_tokens")
        if context is not None and (
            not isinstance(context, int) or isinstance(context, bool) or context < 1
        ):
            raise _BadRequest("context_tokens must be a positive integer or null")
    except _BadRequest as exc:
        return _error_response(400, str(exc))
    state.quirks = quirks
    state.context_tokens = context
    return web.json_response({"quirks": sorted(quirks), "context_tokens": context})


def _parse_quirks(raw: object) -> frozenset[Quirk]:
    if not isinstance(raw, list):
        raise _BadRequest("quirks must be a list of names")
    found: set[Quirk] = set()
    for name in raw:
        if name not in QUIRKS:
            raise _BadRequest(f"unknown quirk {name!r}; known: {', '.join(QUIRKS)}")
        found.add(name)
    return frozenset(found)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: ``terrarium-demo-agent --host 127.0.0.1 --port 8099 [--token-delay-ms 15]``."""
    parser = argparse.ArgumentParser(
        prog="terrarium-demo-agent",
        description="Terra's offline demo agent (an imitation of terrarium-agent, no model).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8099, help="port to bind (8099)")
    parser.add_argument("--token-delay-ms", type=float, default=15.0, help="ms per piece (15)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model id to report")
    parser.add_argument(
        "--health-status", choices=get_args(HealthStatus), default="healthy", help="initial health"
    )
    parser.add_argument(
        "--quirk", action="append", choices=QUIRKS, default=[], help="real-server quirk (repeat)"
    )
    parser.add_argument("--context-tokens", type=int, default=None, help="context limit")
    parser.add_argument("--log-level", default="INFO", help="log level (INFO)")
    args = parser.parse_args(argv)
    try:
        config = DemoAgentConfig(
            model=args.model,
            token_delay_ms=args.token_delay_ms,
            health_status=args.health_status,
            quirks=frozenset(args.quirk),
            context_tokens=args.context_tokens,
        )
    except ValueError as exc:
        parser.error(str(exc))
    configure_logging(args.log_level)
    logger.info("demo_agent.starting", host=args.host, port=args.port, model=config.model)
    web.run_app(create_agent_app(config), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
