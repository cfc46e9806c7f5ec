"""arq's connection for the worker's scheduled (non-live) jobs, built like every other client.

arq stores its own keys under :attr:`bus.keys.BusKeys.arq_queue`; its jobs are JSON, never
pickle.

arq never runs on a Redis Cluster: its client is a plain ``redis.asyncio.Redis``
(python-arq/arq#358), it enqueues with WATCH/MULTI over keys in different slots
(``arq:job:<id>`` and the queue), and its per-job keys (``arq:in-progress:*``,
``arq:retry:*``, ``arq:result:*``) hash anywhere: on a cluster that is CROSSSLOT or MOVED.
So :func:`open_arq_redis` always builds a single-Redis client, for the URL it is given:
``ARQ_REDIS_URL`` (a small standalone Redis) when the bus is on a cluster, else the bus's
own ``REDIS_URL``.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from arq.connections import ArqRedis
from pydantic import SecretStr
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from bus.client import create_redis
from bus.keys import BusKeys
from bus.settings import BusSettings

__all__ = [
    "arq_queue_name",
    "close_arq_redis",
    "decode_arq_job",
    "encode_arq_job",
    "is_cluster_node",
    "open_arq_redis",
]


def encode_arq_job(data: dict[str, Any]) -> bytes:
    """arq's job serializer: compact JSON."""
    return json.dumps(data, default=str, separators=(",", ":")).encode()


def decode_arq_job(raw: bytes) -> dict[str, Any]:
    """arq's job deserializer; a job must be a JSON object."""
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("an arq job must be a JSON object")
    return value


def arq_queue_name(settings: BusSettings) -> str:
    """The deployment's arq queue (under the key prefix)."""
    return BusKeys(settings.redis_key_prefix).arq_queue


def open_arq_redis(
    settings: BusSettings, *, client_name: str, url: SecretStr | None = None
) -> ArqRedis:
    """arq's connection to ``url`` (default ``REDIS_URL``): a single Redis, never a cluster.

    :func:`bus.client.create_redis`'s options (TLS files, timeouts, retries), reading bytes.
    """
    client = create_redis(
        (url or settings.redis_url).get_secret_value(),
        client_name=client_name,
        options=settings.redis_options(max_connections=8),
    )  # never cluster=True: see the module's text
    template = client.connection_pool
    pool = ConnectionPool(
        connection_class=template.connection_class,
        max_connections=template.max_connections,
        **{**template.connection_kwargs, "decode_responses": False},
    )
    return ArqRedis(
        pool,
        job_serializer=encode_arq_job,
        job_deserializer=decode_arq_job,
        default_queue_name=arq_queue_name(settings),
    )


async def close_arq_redis(redis: ArqRedis, health_check_key: str) -> None:
    """Forget arq's health key (best effort: Redis may be gone) and close the pool."""
    with contextlib.suppress(RedisError, OSError):
        await redis.delete(health_check_key)
    await redis.aclose(close_connection_pool=True)


async def is_cluster_node(redis: ArqRedis) -> bool:
    """Whether arq's Redis is a cluster node (``ARQ_REDIS_URL`` copied from a cluster's
    ``REDIS_URL``). False when it cannot be asked: an unreachable Redis is left to arq,
    which retries its connection as it always did."""
    with contextlib.suppress(RedisError, OSError):
        info = await redis.info("cluster")
        return str(info.get("cluster_enabled", "0")) == "1"
    return False
