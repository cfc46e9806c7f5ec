"""Dead-lettering under fault (issue 9, item 9): a crash or a lost reply between copying a
job to the dead letters and acknowledging it never dead-letters it twice.

The copy and the ack are one script, so no process can die between them. What remains is
the script running twice for one job: the connection drops after Redis ran it but before
the reply arrived (the client, configured by ``bus.client.create_redis``, sends it again), or
a worker that took over a departed worker's job dead-letters it too. A TCP proxy between the
bus and a real redis-server injects the first fault exactly there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bus import scripts
from bus.client import create_redis
from bus.jobs import JobQueue
from bus.keys import BusKeys
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.integration]

KEYS = BusKeys()


class DropReplyOnce:
    """Forwards connections to Redis; the first command containing ``marker`` reaches Redis,
    its reply is read and thrown away, and the client's connection is closed."""

    def __init__(self, upstream_port: int, marker: bytes) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.armed = False
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> DropReplyOnce:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        replies = asyncio.create_task(self._pipe(up_reader, writer))
        try:
            while data := await reader.read(65536):
                drop = self.armed and self.marker in data
                if drop:  # stop forwarding replies before Redis can answer this one
                    self.armed = False
                    replies.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await replies
                up_writer.write(data)
                await up_writer.drain()
                if drop:
                    await up_reader.read(65536)  # Redis ran it: its reply, never delivered
                    self.dropped += 1
                    break
        finally:
            replies.cancel()
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()


@contextlib.asynccontextmanager
async def redis_for(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, Redis]]:
    server = RedisServer(tmp_path / "redis").start()
    direct = create_redis(server.url, client_name="dead-letter-check")
    try:
        yield server, direct
    finally:
        await direct.aclose()
        server.kill()


async def _one_delivered_job(direct: Redis, consumer: str) -> tuple[JobQueue, str]:
    queue = JobQueue(direct, KEYS, consumer)
    await queue.ensure_group()
    job = {"v": 1, "type": "AnswerMessage", "chat_id": "c", "message_id": "m1"}
    await direct.xadd(KEYS.jobs_stream(0), {"d": json.dumps(job)})
    return queue, consumer


async def _state(direct: Redis) -> tuple[int, int]:
    """``(dead letters, jobs pending)``."""
    pending = await direct.xpending(KEYS.jobs_stream(0), KEYS.jobs_group)
    return await direct.xlen(KEYS.dead_letters_stream(0)), int(pending["pending"])


@pytest.mark.timeout(60)
async def test_a_dead_letter_whose_reply_was_lost_is_stored_once(tmp_path: Path) -> None:
    async with redis_for(tmp_path) as (server, direct):
        queue, _ = await _one_delivered_job(direct, "w1")
        (delivery,) = await queue.read(count=1, block_ms=100)
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        async with DropReplyOnce(port, b"EVALSHA") as proxy:
            through = create_redis(f"redis://127.0.0.1:{proxy.port}/0", client_name="w1")
            try:
                flaky = JobQueue(through, KEYS, "w1")
                await through.ping()
                await direct.script_load(scripts.JOBS_DEAD_LETTER)  # as in a running worker
                proxy.armed = True
                await flaky.dead_letter(delivery, "delivered 4 times")
            finally:
                await through.aclose()
        assert proxy.dropped == 1  # the fault happened: Redis ran the script, the reply was lost
        assert await _state(direct) == (1, 0)


@pytest.mark.timeout(60)
async def test_a_job_dead_lettered_by_two_workers_is_stored_once(tmp_path: Path) -> None:
    """A worker stalled past its liveness dead-letters a job that another took over."""
    async with redis_for(tmp_path) as (_, direct):
        first, _ = await _one_delivered_job(direct, "w1")
        (delivery,) = await first.read(count=1, block_ms=100)
        second = JobQueue(direct, KEYS, "w2")
        (taken,) = await second.take_over("w1")
        await second.dead_letter(taken, "delivered 4 times")
        await first.dead_letter(delivery, "delivered 4 times")
        assert await _state(direct) == (1, 0)
        (entry,) = await direct.xrange(KEYS.dead_letters_stream(0))
        assert entry[1]["consumer"] == "w2"
