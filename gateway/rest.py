"""Visitor REST routes: messages, worker state, cancel, transcript, config."""

from __future__ import annotations

import json
import re
from typing import Any

import structlog
from aiohttp import web

from bus import (
    BacklogFull,
    ChatModeConflict,
    QuotaExceeded,
    StorageFull,
    TooManyWaiting,
    is_valid_chat_id,
)
from gateway.auth import require_code
from gateway.errors import json_error, seconds_text
from gateway.history import dumps, page_headers, read_page
from gateway.keys import AppKeys, RequestKeys
from gateway.limits import client_of
from gateway.refusals import storage_refusal, too_many
from gateway.starters import starter_prompts

__all__ = [
    "cancel_reply",
    "get_config",
    "get_messages",
    "get_transcript",
    "get_worker_state",
    "post_message",
]

log = structlog.get_logger("gateway.rest")

_CLIENT_MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}", re.ASCII)
#: Message ids are UUIDs; ids of other forms (an imported chat's) are still short and ASCII.
_MESSAGE_ID = _CLIENT_MESSAGE_ID
_LIMIT = re.compile(r"[0-9]{1,6}", re.ASCII)
#: When the jobs backlog is full, visitors are asked to come back after this long.
BACKLOG_RETRY_AFTER_SECONDS = 30
#: A client with its cap of messages waiting is asked to come back after this long.
QUEUED_RETRY_AFTER_SECONDS = 10


def chat_id_of(request: web.Request) -> str:
    """The validated ``chatId`` path segment; 400 ``Invalid chat id`` before any I/O."""
    chat_id = request.match_info.get("chat_id", "")
    if not is_valid_chat_id(chat_id):
        raise json_error(400, "Invalid chat id")
    return chat_id


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The JSON object body, or 415/400/413 JSON errors."""
    if request.content_type != "application/json":
        raise json_error(415, "Content-Type must be application/json")
    settings = request.app[AppKeys.settings]
    if request.content_length is not None and request.content_length > settings.body_size_limit:
        raise json_error(413, "Request body too large")
    request[RequestKeys.reading_body] = True  # a deadline now is the client's slowness
    raw = await request.read()  # aiohttp enforces client_max_size while reading
    request[RequestKeys.reading_body] = False
    try:
        # Strict UTF-8 first: json.loads would accept CESU-8 surrogates in bytes.
        body = json.loads(raw.decode("utf-8") or "null")
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise json_error(400, "Malformed JSON body") from None
    if not isinstance(body, dict):
        raise json_error(400, "JSON body must be an object")
    if not _encodable(body):
        raise json_error(400, "JSON body must be valid Unicode text (no lone surrogates)")
    return body


def message_content(body: dict[str, Any], *, max_length: int) -> str:
    """The visitor message's ``content`` (Terra's and BYO routes alike): 400 when missing or
    blank, 413 past ``max_length`` code points (``MAX_MESSAGE_LENGTH``)."""
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise json_error(400, "Message content required")
    if len(content) > max_length:  # str length counts code points
        raise json_error(413, "Message too long")
    return content


def _encodable(body: dict[str, Any]) -> bool:
    """False when a ``\\udXXX`` escape left a lone surrogate that UTF-8 cannot carry."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


async def _chat_budget(request: web.Request, chat_id: str) -> None:
    """Spend one of the chat's message tokens (the client's own: gateway.limits)."""
    settings = request.app[AppKeys.settings]
    bus = request.app[AppKeys.bus]
    decision = await bus.count_hit(
        "chat", chat_id, settings.rate_limit_max_per_chat, settings.rate_limit_window_ms
    )
    if not decision.allowed:
        request.app[AppKeys.metrics].rate_limited.labels("chat").inc()
        seconds = decision.retry_after_seconds
        raise json_error(
            429,
            f"This chat is receiving messages too quickly. Please wait {seconds_text(seconds)} "
            "and try again.",
            headers={"Retry-After": str(seconds)},
        )


async def post_message(request: web.Request) -> web.Response:
    """``POST /api/chat/{chatId}/messages``: store a visitor message and enqueue its job."""
    settings = request.app[AppKeys.settings]
    bus = request.app[AppKeys.bus]
    chat_id = chat_id_of(request)
    body = await read_json_object(request)
    require_code(body.get("accessCode"), request)
    content = message_content(body, max_length=settings.max_message_length)
    client_message_id = body.get("clientMessageId") or request.headers.get("Idempotency-Key")
    if client_message_id is not None and (
        not isinstance(client_message_id, str)
        or not _CLIENT_MESSAGE_ID.fullmatch(client_message_id)
    ):
        raise json_error(400, "Invalid clientMessageId")
    await _chat_budget(request, chat_id)
    try:
        accepted = await bus.accept_message(
            chat_id,
            content,
            client_message_id=client_message_id,
            request_id=structlog.contextvars.get_contextvars().get("request_id"),
            client=client_of(request),
        )
    except ChatModeConflict:  # checked in the accept script: a chat is Terra's or BYO
        raise json_error(
            409, "This chat uses your own model. Start a new chat to talk to Terra."
        ) from None
    except (StorageFull, QuotaExceeded) as exc:
        raise storage_refusal(exc, request.app[AppKeys.metrics], chat_id) from None
    except TooManyWaiting as exc:
        request.app[AppKeys.metrics].rate_limited.labels("queued").inc()
        raise too_many("queued", QUEUED_RETRY_AFTER_SECONDS, count=exc.waiting) from None
    except BacklogFull:
        log.warning("gateway.backlog_full", chat_id=chat_id)
        raise json_error(
            503,
            "Terra has too many messages waiting right now. "
            "Your message was not sent; please try again in a minute.",
            headers={"Retry-After": str(BACKLOG_RETRY_AFTER_SECONDS)},
        ) from None
    request.app[AppKeys.metrics].messages_accepted.labels(str(accepted.duplicate).lower()).inc()
    log.info(
        "gateway.message_accepted",
        chat_id=chat_id,
        message_id=accepted.message["id"],
        duplicate=accepted.duplicate,
        length=len(content),
    )
    return web.json_response(accepted.message)


async def get_messages(request: web.Request) -> web.Response:
    """``GET /api/chat/{chatId}/messages``: history, oldest first, newest ``limit`` kept.

    ``?before=<eventId>`` pages back; a page is bounded in bytes (:mod:`gateway.history`);
    ``?v=2`` adds Terra's tool calls and reasoning as ``thoughts``.
    """
    settings = request.app[AppKeys.settings]
    chat_id = chat_id_of(request)
    require_code(request.query.get("accessCode"), request)
    limit = settings.history_limit
    raw_limit = request.query.get("limit")
    if raw_limit is not None:
        if not _LIMIT.fullmatch(raw_limit) or int(raw_limit) < 1:
            raise json_error(400, "limit must be a positive integer")
        limit = min(int(raw_limit), settings.history_limit)
    # v=2 (as on the streams): Terra's Messages carry their thoughts (gateway.history).
    page = await read_page(request, chat_id, limit, thoughts=request.query.get("v") == "2")
    return web.json_response(page.messages, headers=page_headers(page), dumps=dumps)


async def get_worker_state(request: web.Request) -> web.Response:
    """``GET /api/chat/{chatId}/worker-state``: ``{state, detail, updatedAt}``."""
    chat_id = chat_id_of(request)
    require_code(request.query.get("accessCode"), request)
    return web.json_response(await request.app[AppKeys.bus].worker_state(chat_id))


async def cancel_reply(request: web.Request) -> web.Response:
    """``POST /api/chat/{chatId}/cancel``: stop the reply being generated.

    Body ``{accessCode, messageId?}``; without ``messageId`` the reply in progress (to
    the oldest unanswered visitor message) is stopped. 409 when nothing is in progress.
    """
    chat_id = chat_id_of(request)
    body = await read_json_object(request)
    require_code(body.get("accessCode"), request)
    message_id = body.get("messageId")
    if message_id is not None and (
        not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id)
    ):
        raise json_error(400, "messageId must be a message's id")
    message_id = await request.app[AppKeys.bus].stop_reply(chat_id, message_id)
    if message_id is None:
        raise json_error(409, "Nothing to stop")
    log.info("gateway.cancel_requested", chat_id=chat_id, message_id=message_id)
    return web.json_response({"ok": True, "messageId": message_id})


async def get_transcript(request: web.Request) -> web.Response:
    """``GET /api/chat/{chatId}/transcript?format=md|json``: the conversation as a download."""
    settings = request.app[AppKeys.settings]
    chat_id = chat_id_of(request)
    require_code(request.query.get("accessCode"), request)
    fmt = request.query.get("format", "md")
    if fmt not in ("md", "json"):
        raise json_error(400, "format must be md or json")
    page = await read_page(request, chat_id, settings.history_limit)
    headers = {
        "Content-Disposition": f'attachment; filename="terra-chat-{chat_id}.{fmt}"',
        **page_headers(page),
    }
    if fmt == "json":
        return web.json_response(
            {"chatId": chat_id, "messages": page.messages}, headers=headers, dumps=dumps
        )
    lines = [f"# Conversation with Terra ({chat_id})", ""]
    for message in page.messages:
        who = message["sender"]
        if who == "Terra" and message.get("provider"):  # bring your own model (protocol 9.10)
            who = f"{message['provider']} ({message.get('model', '')})"
        lines += [f"**{who}** — {message['createdAt']}", "", message["content"], ""]
    return web.Response(text="\n".join(lines), content_type="text/markdown", headers=headers)


async def get_config(request: web.Request) -> web.Response:
    """``GET /api/config``: public facts the page needs (demo mode, base path, starter
    prompts, the CAPTCHA's site key and script when the hook is on)."""
    settings = request.app[AppKeys.settings]
    return web.json_response(
        {
            "demoAgent": settings.demo_agent,
            "basePath": settings.base_path,
            "starterPrompts": starter_prompts(settings.content_dir),
            # The CAPTCHA hook's public half: what the widget needs to show the challenge.
            "captcha": {
                "siteKey": settings.captcha_site_key,
                "scriptUrl": settings.captcha_script_url,
                "global": settings.captcha_script_global,
            }
            if settings.captcha_enabled
            else None,
        }
    )
