"""The Redis bus: one front end per role, the key layout, the schemas and the errors.

Only this package knows Redis. A process loads :class:`BusSettings` and opens its role's
front end: the gateway :func:`open_gateway_bus`, the worker :func:`open_worker_bus` (and
:func:`open_arq_redis` for scheduled jobs). Every operation raises only :class:`BusError`
and its subclasses. ``ChatLog``, ``JobQueue``, ``ChatLease`` and ``Presence`` are exported as the
types of the worker bus's parts; the rest (the live feed, the rate limiter, the client factory)
stays inside the bus.
"""

from bus.answering import ChatAnswering, JobClose, Opening
from bus.byo import ByoAccepted, ChatModeConflict, ReplyInProgress
from bus.chatlog import AcceptedMessage, ChatLog, EventRecord, compare_ids, is_stream_id
from bus.errors import (
    BacklogFull,
    BusError,
    BusRejected,
    BusUnavailable,
    QuotaExceeded,
    ResumeGap,
    SchemaError,
    StorageFull,
    TooManyWaiting,
    misconfigurations,
)
from bus.gateway_bus import FeedStatus, GatewayBus, open_gateway_bus
from bus.jobs import Delivery, JobQueue, JobRef
from bus.keys import BusKeys, is_valid_chat_id
from bus.lease import ChatLease
from bus.misconfig_metrics import RedisMisconfigCollector
from bus.presence import Presence
from bus.pubsub import LogRestarted, SlowConsumer
from bus.ratelimit import Budget, RateDecision
from bus.scheduler import close_arq_redis, open_arq_redis
from bus.settings import BusSettings, describe_settings_error
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
    "ByoAccepted",
    "ChatAnswering",
    "ChatLease",
    "ChatLog",
    "ChatModeConflict",
    "Delivery",
    "EventRecord",
    "FeedStatus",
    "GatewayBus",
    "JobClose",
    "JobQueue",
    "JobRef",
    "LogRestarted",
    "Opening",
    "Presence",
    "QuotaExceeded",
    "RateDecision",
    "RedisMisconfigCollector",
    "ReplyInProgress",
    "ResumeGap",
    "SchemaError",
    "SlowConsumer",
    "StorageFull",
    "TooManyWaiting",
    "WorkerBus",
    "close_arq_redis",
    "compare_ids",
    "describe_settings_error",
    "is_stream_id",
    "is_valid_chat_id",
    "misconfigurations",
    "open_arq_redis",
    "open_gateway_bus",
    "open_worker_bus",
]
