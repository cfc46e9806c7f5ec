"""The Redis bus: one front end per role, the key layout, the schemas and the errors.

Only this package knows Redis. A process loads :class:`BusSettings` and opens its role's
front end: the gateway :func:`open_gateway_bus`, the worker :func:`open_worker_bus` (and
:func:`open_arq_redis` for scheduled jobs). Every operation raises only :class:`BusError`
and its subclasses. The classes behind the front ends (``ChatLog``, ``JobQueue``, ...) live
in their modules for the bus's own tests and tools.
"""

# Transitional: the classes behind the front ends, until every caller has moved.
from bus.chatlog import AcceptedMessage, ChatLimits, ChatLog, EventRecord, compare_ids, is_stream_id
from bus.client import RedisOptions, create_redis
from bus.errors import (
    BacklogFull,
    BusError,
    BusRejected,
    BusUnavailable,
    ResumeGap,
    SchemaError,
)
from bus.gateway_bus import FeedStatus, GatewayBus, open_gateway_bus
from bus.jobs import (
    Delivery,
    JobQueue,
)
from bus.keys import BusKeys, is_valid_chat_id
from bus.lease import ChatLease
from bus.presence import Presence
from bus.pubsub import ChatFeed, Listener, LogRestarted, SlowConsumer
from bus.ratelimit import (
    Budget,
    RateDecision,
    RateLimiter,
)
from bus.scheduler import close_arq_redis, open_arq_redis
from bus.settings import BusSettings
from bus.worker_bus import WorkerBus, open_worker_bus

__all__ = [
    "AcceptedMessage",
    "BacklogFull",
    "Budget",
    "BusError",
    "BusKeys",
    "BusRejected",
    "BusSettings",
    "BusUnavailable",
    "ChatFeed",
    "ChatLease",
    "ChatLimits",
    "ChatLog",
    "Delivery",
    "EventRecord",
    "FeedStatus",
    "GatewayBus",
    "JobQueue",
    "Listener",
    "LogRestarted",
    "Presence",
    "RateDecision",
    "RateLimiter",
    "RedisOptions",
    "ResumeGap",
    "SchemaError",
    "SlowConsumer",
    "WorkerBus",
    "close_arq_redis",
    "compare_ids",
    "create_redis",
    "is_stream_id",
    "is_valid_chat_id",
    "open_arq_redis",
    "open_gateway_bus",
    "open_worker_bus",
]
