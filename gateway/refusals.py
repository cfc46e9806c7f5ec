"""429 answers a visitor understands: what was too much, and how long to wait."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import json_error

__all__ = ["RETRY_SOCKET_SECONDS", "busy", "seconds_text", "too_many"]

#: A client at its socket cap (or a full process) is asked to come back after this long.
RETRY_SOCKET_SECONDS = 10

_SENTENCES = {
    "post": "You are sending messages too quickly.",
    "read": "Too many requests from your network.",
    "stream": "Too many connections opened from your network.",
    "failed-code": "Too many wrong access codes from your network.",
    "sockets": "Too many chat connections are open from your network.",
    "queued": "You already have {count} messages waiting for Terra's answer.",
    "bytes": "Your network has sent Terra a lot of messages today.",
}


def too_many(what: str, retry_after_seconds: int, *, count: int = 0) -> web.HTTPException:
    """A 429 with ``Retry-After`` and a sentence saying what and how long."""
    lead = _SENTENCES.get(what, what).format(count=count)
    return json_error(
        429,
        f"{lead} Please wait {seconds_text(retry_after_seconds)} and try again.",
        headers={"Retry-After": str(retry_after_seconds)},
    )


def seconds_text(seconds: int) -> str:
    """``1 second``, ``30 seconds``; from two minutes on, ``59 minutes``, from two hours on,
    ``23 hours`` (rounded up)."""
    if seconds >= 7200:
        return f"{-(-seconds // 3600)} hours"
    if seconds >= 120:
        return f"{-(-seconds // 60)} minutes"
    return f"{seconds} second" if seconds == 1 else f"{seconds} seconds"


def busy(retry_after_seconds: int) -> web.HTTPException:
    """A 503 "Terra is busy" (no room to store new messages) with ``Retry-After``."""
    return json_error(
        503,
        "Terra is busy right now and could not take your message. "
        f"Please try again in {seconds_text(retry_after_seconds)}.",
        headers={"Retry-After": str(retry_after_seconds)},
    )
