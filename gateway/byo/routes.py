"""BYO routes: the providers on offer, their models, and a message answered by the visitor's
own provider (docs/protocol.md 9.10).

The API key arrives in the JSON body of each request that needs it and is handed to the
answer's task; it is never logged, stored or echoed (errors name the field, not the value).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from bus import (
    ByoAccepted,
    ChatModeConflict,
    GatewayBus,
    QuotaExceeded,
    ReplyInProgress,
    StorageFull,
)
from gateway.auth import require_code
from gateway.byo.answer import INTERRUPTED, AnswerJob, lease_ms, run_answer
from gateway.byo.client import ProviderError, list_models
from gateway.byo.providers import MODEL_NAME, ByoProvider
from gateway.errors import json_error
from gateway.keys import AppKeys
from gateway.limits import client_of
from gateway.metrics import GatewayMetrics
from gateway.refusals import storage_refusal
from gateway.rest import _chat_budget, chat_id_of, message_content, read_json_object
from gateway.settings import GatewaySettings

__all__ = ["close_streams", "get_providers", "http_context", "post_byo_message", "post_models"]

log = structlog.get_logger("gateway.byo")

#: An API key: printable ASCII without spaces (it goes into an HTTP header), at most 512.
_API_KEY = re.compile(r"[\x21-\x7e]{1,512}", re.ASCII)
#: A full process asks visitors to come back after this long.
RETRY_BUSY_SECONDS = 10


def _provider(body: dict[str, Any], request: web.Request) -> ByoProvider:
    table = request.app[AppKeys.settings].byo_provider_table
    name = body.get("provider")
    provider = table.get(name) if isinstance(name, str) else None
    if provider is None:
        raise json_error(400, "Unknown provider: pick one of those GET /api/byo/providers lists")
    return provider


def _api_key(body: dict[str, Any]) -> str:
    key = body.get("apiKey")
    if not isinstance(key, str) or not key:
        raise json_error(400, "Your provider's API key is required (apiKey)")
    if not _API_KEY.fullmatch(key):
        raise json_error(
            400, "apiKey must be printable ASCII without spaces, at most 512 characters"
        )
    return key


async def get_providers(request: web.Request) -> web.Response:
    """``GET /api/byo/providers``: the providers a visitor may pick, and the answer caps."""
    settings = request.app[AppKeys.settings]
    require_code(request.query.get("accessCode"), request)
    providers = [
        {
            "id": p.id,
            "name": p.name,
            "models": list(p.models),
            "modelsEndpoint": p.models_endpoint,
        }
        for p in settings.byo_provider_table.values()
    ]
    return web.json_response(
        {
            "providers": providers,
            "maxAnswerChars": settings.byo_max_answer_chars,
            "maxTokens": settings.byo_max_tokens,
        }
    )


async def post_models(request: web.Request) -> web.Response:
    """``POST /api/byo/models`` ``{accessCode, provider, apiKey}``: the provider's models."""
    settings = request.app[AppKeys.settings]
    body = await read_json_object(request)
    require_code(body.get("accessCode"), request)
    provider = _provider(body, request)
    key = _api_key(body)
    if not provider.models_endpoint:
        return web.json_response({"models": list(provider.models)})
    try:
        models = await list_models(
            request.app[AppKeys.byo_http],
            provider,
            key,
            wait_seconds=min(settings.byo_request_timeout_seconds, settings.request_timeout_seconds)
            * 0.8,
        )
    except ProviderError as exc:
        log.info("gateway.byo_models_failed", provider=provider.id, kind=exc.kind)
        raise json_error(502, exc.sentence) from None
    return web.json_response({"models": models})


async def post_byo_message(request: web.Request) -> web.Response:
    """``POST /api/chat/{chatId}/byo``: store the visitor's message and stream the answer
    from their provider into the chat (frames as for Terra). 200: the stored Message."""
    app = request.app
    settings = app[AppKeys.settings]
    bus = app[AppKeys.bus]
    chat_id = chat_id_of(request)
    body = await read_json_object(request)
    require_code(body.get("accessCode"), request)
    content = message_content(body, max_length=settings.max_message_length)
    provider = _provider(body, request)
    model = body.get("model")
    if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
        raise json_error(400, "Invalid model name")
    key = _api_key(body)
    streams = app[AppKeys.byo_streams]
    client = client_of(request)
    refusal = streams.reserve(client)
    if refusal == "client":
        app[AppKeys.metrics].rate_limited.labels("byo").inc()
        raise json_error(
            429,
            f"You already have {streams.per_client} answers from your own model being "
            "written. Please wait for one to finish.",
            headers={"Retry-After": "5"},
        )
    if refusal == "total":
        raise json_error(
            503,
            "Too many answers from visitors' own models are being written right now. "
            "Please try again in a moment.",
            headers={"Retry-After": str(RETRY_BUSY_SECONDS)},
        )
    try:  # the slot is given back unless an answer starts in it
        await _chat_budget(request, chat_id)
        accepted = await _accept(
            bus, chat_id, content, provider, model, settings, client, app[AppKeys.metrics]
        )
    except BaseException:
        streams.release(client)
        raise
    message_id = str(accepted.message["id"])
    job = AnswerJob(chat_id, message_id, provider, model, key)
    answer = run_answer(job, bus, app[AppKeys.byo_http], settings, app[AppKeys.metrics])
    streams.start(client, answer)
    log.info(
        "gateway.byo_message_accepted",
        chat_id=chat_id,
        message_id=message_id,
        provider=provider.id,
        model=model,
        length=len(content),
    )
    return web.json_response(accepted.message)


async def _accept(
    bus: GatewayBus,
    chat_id: str,
    content: str,
    provider: ByoProvider,
    model: str,
    settings: GatewaySettings,
    client: str,
    metrics: GatewayMetrics,
) -> ByoAccepted:
    """Store the visitor message (409s for a Terra chat or an answer in progress; the
    client's daily bytes as for Terra's), and end an earlier answer whose gateway died
    without ending it."""
    try:
        accepted = await bus.accept_byo_message(
            chat_id,
            content,
            provider=provider.name,
            model=model,
            lease_ms=lease_ms(settings),
            client=client,
        )
    except ChatModeConflict:
        raise json_error(
            409, "This chat is with Terra. Start a new chat to use your own model."
        ) from None
    except ReplyInProgress:
        raise json_error(
            409, "An answer is still being written in this chat. Wait for it or stop it first."
        ) from None
    except (StorageFull, QuotaExceeded) as exc:  # the same answers as Terra's messages
        raise storage_refusal(exc, metrics, chat_id) from None
    if accepted.orphan is not None:
        await bus.finish_byo_reply(
            chat_id,
            accepted.orphan,
            INTERRUPTED,
            provider=provider.name,
            model=model,
            status="error",
            state="processing",
            detail=f"byo: {provider.name}",
        )
    return accepted


@contextlib.asynccontextmanager
async def _http(app: web.Application) -> AsyncIterator[None]:
    settings = app[AppKeys.settings]
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=settings.byo_request_timeout_seconds
        ),
        connector=aiohttp.TCPConnector(limit=settings.byo_max_streams + 10),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )
    app[AppKeys.byo_http] = session
    try:
        yield
    finally:
        await session.close()


def http_context(app: web.Application) -> contextlib.AbstractAsyncContextManager[None]:
    """``cleanup_ctx``: the HTTP client sessions to providers use."""
    return _http(app)


async def close_streams(app: web.Application) -> None:
    """``on_shutdown``: end every answer in progress as interrupted (no one can resume it)."""
    settings = app[AppKeys.settings]
    await app[AppKeys.byo_streams].close(min(5.0, settings.shutdown_timeout_seconds / 2))
