"""Many chats' reply chunks in one round trip: one pipeline of CHUNK script calls.

A worker streaming to many chats writes every chat's pending text once per coalescing tick
(:mod:`worker.chunks`). Each chunk is still one :data:`bus.scripts.CHUNK` call, so every
guarantee of :meth:`bus.chatlog.ChatLog.append_chunk` holds per chat (log, publish with the
previous id, ``streaming`` marker, cancel flag); only the round trips are shared.

The calls go as ``EVALSHA`` in a non-transactional pipeline (on a cluster, one per node
holding some of the chats, sent concurrently): redis-py's registered-script
objects in a pipeline send a ``SCRIPT EXISTS`` before every execute, and a fresh Redis (a
restart, a failover) would answer every call ``NOSCRIPT``. Here the script is loaded once
when Redis says it lacks it, and the calls that failed so are sent again, once.
The chunk's JSON is built with orjson (the same fields and order as
:class:`bus.schemas.ChunkProduced`), with one timestamp per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import NoScriptError, RedisError

from bus.errors import BusError, as_bus_error
from bus.schemas import iso_now

if TYPE_CHECKING:
    from bus.chatlog import ChatLog

__all__ = ["ChunkItem", "ChunkResult", "chunk_json", "write_chunks"]

#: One chunk to write: ``(chat_id, reply_to, content)``.
ChunkItem = tuple[str, str, str]
#: Its outcome: ``(event_id, cancel_requested)``, or the error that chat's call raised.
ChunkResult = tuple[str, bool] | Exception


def chunk_json(chat_id: str, reply_to: str, content: str, emitted_at: str) -> str:
    """An ``assistantChunk`` event (``done: false``) as stored, without a pydantic model."""
    return orjson.dumps(
        {
            "type": "assistantChunk",
            "v": 1,
            "chatId": chat_id,
            "content": content,
            "done": False,
            "emittedAt": emitted_at,
            "replyTo": reply_to,
        }
    ).decode()


async def write_chunks(log: ChatLog, items: Sequence[ChunkItem]) -> list[ChunkResult]:
    """Append and publish each chunk, all in one pipeline; one result per item, in order.

    A chat's failed call (for example a refusal) is returned as that item's result;
    :class:`bus.BusUnavailable` is raised when Redis cannot be reached at all.
    """
    if not items:
        return []
    lim = log.limits
    sha = log._chunk.sha
    emitted = iso_now()
    calls = [
        (
            log.chat_keys(chat_id),
            [
                log.keys.chat_channel(chat_id),
                chunk_json(chat_id, reply_to, content, emitted),
                str(lim.events_maxlen),
                str(lim.messages_maxlen),
                str(lim.retention_ms),
                reply_to,
            ],
        )
        for chat_id, reply_to, content in items
    ]
    try:
        replies = await _run(log, sha, calls)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            await log.redis.script_load(log._chunk.script)
            again = await _run(log, sha, [calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
    except (RedisError, OSError, TimeoutError) as exc:
        raise as_bus_error(exc) from exc
    out: list[ChunkResult] = []
    for reply in replies:
        if isinstance(reply, Exception):
            out.append(as_bus_error(reply) if isinstance(reply, RedisError) else reply)
        elif isinstance(reply, list | tuple) and len(reply) == 2:
            out.append((str(reply[0]), bool(int(reply[1]))))
        else:
            out.append(BusError(f"unexpected chunk script reply ({type(reply).__name__})"))
    return out


async def _run(log: ChatLog, sha: str, calls: list[tuple[list[str], list[str]]]) -> list[object]:
    pipe = log.redis.pipeline(transaction=False)
    for keys, args in calls:
        # execute_command, not evalsha(): a cluster pipeline refuses the method (it cannot
        # tell a script's node), yet routes the command by its keys, one batch per node.
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
    return list(await pipe.execute(raise_on_error=False))
