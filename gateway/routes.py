"""The route table: every visitor route under ``/api`` and ``<BASE_PATH>/api``."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway import health, openapi, rest, session, sse, static, ws
from gateway.byo import routes as byo
from gateway.settings import GatewaySettings

__all__ = ["ROUTE_FAMILIES", "STATIC_PATH", "add_routes"]

#: What a static asset's path may look like: plain ASCII names, at most 200 characters.
#: Anything else (NUL bytes, names longer than the file system allows, non-ASCII) is a
#: 404 from the router, before a file system call could fail on it.
STATIC_PATH = r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}"

#: The budget family of each handler that takes an access code (gateway.limits).
ROUTE_FAMILIES: dict[Callable[..., object], str] = {
    session.post_session: "post",
    rest.post_message: "post",
    rest.cancel_reply: "post",
    byo.post_byo_message: "post",
    byo.post_models: "post",
    byo.get_providers: "read",
    rest.get_messages: "read",
    rest.get_transcript: "read",
    rest.get_worker_state: "read",
    health.get_health: "read",
    ws.chat_socket: "stream",
    sse.chat_events: "stream",
}


def add_routes(app: web.Application, settings: GatewaySettings) -> None:
    """Register all routes (HTTP and WebSocket alike) under each mount."""
    table: list[web.AbstractRouteDef] = []
    for api in settings.mounts:
        table += [
            web.post(f"{api}/session", session.post_session),
            web.post(f"{api}/chat/{{chat_id}}/messages", rest.post_message),
            web.get(f"{api}/chat/{{chat_id}}/messages", rest.get_messages, allow_head=False),
            web.get(
                f"{api}/chat/{{chat_id}}/worker-state", rest.get_worker_state, allow_head=False
            ),
            web.get(f"{api}/chat/{{chat_id}}/events", sse.chat_events, allow_head=False),
            web.post(f"{api}/chat/{{chat_id}}/cancel", rest.cancel_reply),
            web.post(f"{api}/chat/{{chat_id}}/byo", byo.post_byo_message),
            web.get(f"{api}/byo/providers", byo.get_providers, allow_head=False),
            web.post(f"{api}/byo/models", byo.post_models),
            web.get(f"{api}/chat/{{chat_id}}/transcript", rest.get_transcript, allow_head=False),
            web.get(f"{api}/chat", ws.chat_socket, allow_head=False),
            web.get(f"{api}/health", health.get_health, allow_head=False),
            web.get(f"{api}/config", rest.get_config, allow_head=False),
            web.get(f"{api}/openapi.yaml", openapi.get_openapi, allow_head=False),
        ]
    for root in ["", settings.base_path] if settings.base_path else [""]:
        table += [
            web.get(f"{root}/widget.js", static.serve_file("widget.js")),
            web.get(f"{root}/terra", static.serve_file("terra.html")),
            web.get(f"{root}/static/{{path:{STATIC_PATH}}}", static.static_asset),
            web.get(f"{root}/" if root else "/", static.serve_file("index.html")),
        ]
    table += [
        web.get("/healthz", health.healthz),
        web.get("/readyz", health.readyz),
        web.get("/metrics", health.get_metrics, allow_head=False),
    ]
    app.add_routes(table)
