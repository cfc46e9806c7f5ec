"""Health: the visitor-facing chain (``/api/health``), ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import asyncio
import hmac
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bus import BusError, BusRejected
from bus.schemas import ComponentStatus, WorkerHeartbeat, iso_now
from gateway.auth import require_code, secret_bytes
from gateway.errors import json_error
from gateway.keys import AppKeys

__all__ = ["build_chain", "get_health", "get_metrics", "healthz", "readyz"]


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _node(
    node_id: str, label: str, status: str, detail: str | None, **extra: Any
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": node_id,
        "label": label,
        "status": status,
        "detail": detail,
        "checkedAt": extra.pop("checkedAt", iso_now()),
    }
    if extra.get("latencyMs") is not None:
        node["latencyMs"] = extra["latencyMs"]
    return node


def _component(
    node_id: str,
    label: str,
    what: str,
    reported: ComponentStatus,
    ready: bool,
    last_seen: str | None,
) -> dict[str, Any]:
    if not ready:
        detail = (
            f"Worker offline; last heartbeat at {last_seen}"
            if last_seen
            else "Worker offline; no heartbeat received yet"
        )
        return _node(node_id, label, "offline", detail)
    if reported.status == "unknown" and reported.checkedAt is None:
        return _node(node_id, label, "unknown", f"Awaiting {what} health data")
    return _node(
        node_id,
        label,
        reported.status,
        reported.detail,
        checkedAt=reported.checkedAt or iso_now(),
        latencyMs=reported.latencyMs,
    )


def build_chain(
    heartbeat: WorkerHeartbeat | None, stale_after_ms: int, relay_ok: bool = True
) -> dict[str, Any]:
    """The ``/api/health`` body: relay, worker readiness and the five-node chain."""
    now_ms = int(time.time() * 1000)
    last_seen = _iso(heartbeat.seen_at_ms) if heartbeat else None
    ready = heartbeat is not None and now_ms - heartbeat.seen_at_ms <= stale_after_ms
    if heartbeat is None:
        worker = _node("worker", "Webchat worker", "offline", "Worker has not checked in yet")
    elif ready:
        worker = _node(
            "worker",
            "Webchat worker",
            "online",
            f"Last heartbeat at {last_seen}",
            checkedAt=last_seen,
        )
    else:
        worker = _node("worker", "Webchat worker", "offline", "Worker heartbeat expired")
    agent = heartbeat.agent if heartbeat else ComponentStatus()
    llm = heartbeat.llm if heartbeat else ComponentStatus()
    chain = [
        _node("frontend", "Frontend", "online", None),
        _node(
            "relay",
            "Relay",
            "online" if relay_ok else "degraded",
            None if relay_ok else "Relay cannot reach Redis",
        ),
        worker,
        _component("agent", "terrarium-agent", "agent", agent, ready, last_seen),
        _component("llm", "vLLM", "LLM", llm, ready, last_seen),
    ]
    status = {"agentApi": agent.model_dump(), "llm": llm.model_dump()} if heartbeat else None
    return {
        "relay": "ok" if relay_ok else "degraded",
        "workerReady": ready,
        "workerLastSeenAt": last_seen,
        "workerStatus": status,
        "chain": chain,
    }


async def get_health(request: web.Request) -> web.Response:
    """``GET /api/health?accessCode=``: the health chain as the original relay served it."""
    settings = request.app[AppKeys.settings]
    require_code(request.query.get("accessCode"), request)
    try:
        heartbeat = await request.app[AppKeys.bus].freshest_worker()
        relay_ok = True
    except BusError:
        heartbeat, relay_ok = None, False
    return web.json_response(build_chain(heartbeat, settings.worker_stale_threshold_ms, relay_ok))


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: Redis answers a PING (on a cluster: the feed reaches it) and the live feed
    is subscribed."""
    bus = request.app[AppKeys.bus]
    try:
        # On a cluster the feed's own check is the probe (it asks the cluster for its slot
        # map over its own connection): a PING goes to one node, and a dead one would cost
        # the cluster client every connection (redis-py closes them all on an error).
        if not bus.on_cluster:
            async with asyncio.timeout(1.0):
                await bus.ping()
    except BusRejected as exc:
        reason = f"redis misconfigured ({exc.kind})"
        return web.json_response({"ready": False, "reason": reason}, status=503)
    except (BusError, TimeoutError):
        return web.json_response({"ready": False, "reason": "redis unreachable"}, status=503)
    if not bus.feed_status.connected:
        return web.json_response({"ready": False, "reason": "live feed reconnecting"}, status=503)
    return web.json_response({"ready": True})


def _metrics_allowed(request: web.Request) -> bool:
    token = request.app[AppKeys.settings].metrics_token
    if token is not None:
        given = secret_bytes(request.headers.get("Authorization", "").removeprefix("Bearer "))
        return hmac.compare_digest(given, token.get_secret_value().encode())
    return request.remote in ("127.0.0.1", "::1")


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus exposition; loopback only unless METRICS_TOKEN is set."""
    if not _metrics_allowed(request):
        raise json_error(403, "Metrics are not available from here")
    metrics = request.app[AppKeys.metrics]
    bus = request.app[AppKeys.bus]
    settings = request.app[AppKeys.settings]
    try:
        async with asyncio.timeout(1.0):
            stats = await bus.job_stats()
            heartbeat = await bus.freshest_worker()
        metrics.jobs_length.set(stats["length"])
        metrics.jobs_pending.set(stats["pending"])
        metrics.jobs_dead.set(stats["dead"])
        fresh = heartbeat is not None and (
            time.time() * 1000 - heartbeat.seen_at_ms <= settings.worker_stale_threshold_ms
        )
        metrics.worker_up.set(1 if fresh else 0)
        metrics.agent_up.set(1 if fresh and heartbeat and heartbeat.agent.status == "online" else 0)
    except (BusError, TimeoutError):
        metrics.worker_up.set(0)
    feed = bus.feed_status
    metrics.record_feed(feed)
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
