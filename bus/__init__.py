"""The Redis bus: key layout, schemas, the chat event log, jobs, fan-out and limits.

Only this package spells Redis names; the gateway and the worker call it.
"""

from bus.chatlog import AcceptedMessage, ChatLimits, ChatLog, EventRecord, compare_ids
from bus.client import RedisOptions, create_redis
from bus.errors import BusError, BusUnavailable, ResumeGap, SchemaError
from bus.jobs import Delivery, JobQueue
from bus.keys import BusKeys, is_valid_chat_id
from bus.lease import ChatLease
from bus.presence import Presence
from bus.pubsub import ChatFeed, Listener, SlowConsumer
from bus.ratelimit import RateDecision, RateLimiter

__all__ = [
    "AcceptedMessage",
    "BusError",
    "BusKeys",
    "BusUnavailable",
    "ChatFeed",
    "ChatLease",
    "ChatLimits",
    "ChatLog",
    "Delivery",
    "EventRecord",
    "JobQueue",
    "Listener",
    "Presence",
    "RateDecision",
    "RateLimiter",
    "RedisOptions",
    "ResumeGap",
    "SchemaError",
    "SlowConsumer",
    "compare_ids",
    "create_redis",
    "is_valid_chat_id",
]
