"""The visitors: sockets that drop and resume, and posts with and without clientMessageId.

Sockets are the project's own :class:`tests.support.clients.ChatClient` (WebSocket v1/v2,
SSE v1/v2) with one addition, :meth:`Socket.drop`, which cuts the connection as a flaky
network would; the client then resumes on the next gateway with ``lastEventId``. Every post
is recorded in the :class:`Ledger` with what each attempt returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Literal

from tests.support.clients import ChatClient, post_message

__all__ = ["KINDS", "WALL_OFFSET", "Fleet", "Ledger", "Post", "Socket", "SocketKind"]

#: ``time.time() - time.monotonic()``: turns the clients' monotonic stamps into Unix time,
#: the clock of Redis stream ids (same host).
WALL_OFFSET = time.time() - time.monotonic()

SocketKind = Literal["ws-v2", "ws-v1", "sse-v2", "sse-v1"]
KINDS: tuple[SocketKind, ...] = ("ws-v2", "ws-v1", "sse-v2", "sse-v1")


@dataclass(eq=False)
class Socket(ChatClient):
    """A visitor's connection to one chat, which the scenario may cut at any time."""

    kind: SocketKind = "ws-v2"
    drops: int = 0
    #: ``time.monotonic()`` of each connection attempt made without ``lastEventId`` (a
    #: stream that starts at its handshake; before the first frame arrives, a reconnect is
    #: such a fresh start too).
    fresh_starts: list[float] = field(default_factory=list)

    def _query(self) -> dict[str, str]:
        if self.last_event_id is None:
            self.fresh_starts.append(time.monotonic())
        return super()._query()

    def handshake_start(self) -> float | None:
        """When the stream this socket's first frame belongs to began (``None``: resumed)."""
        if self.after is not None or not self.fresh_starts:
            return None
        first = next((f.at for f in self.frames if f.event_id is not None), None)
        earlier = [t for t in self.fresh_starts if first is None or t <= first]
        return max(earlier) if earlier else self.fresh_starts[0]

    def handshake_done_ms(self) -> int | None:
        """Unix ms when that stream's connection was established (its handshake point is
        earlier: every event appended after this instant belongs to the stream)."""
        began = self.handshake_start()
        if began is None:
            return None
        done = [at for _, at in self.connects if at >= began]
        return int((min(done) + WALL_OFFSET) * 1000) if done else None

    async def drop(self) -> None:
        """Cut the current connection and resume, with ``lastEventId``, on the next gateway."""
        if self._task is None or self._stop:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self.drops += 1
        self.closes.append((len(self.connects), "dropped", time.monotonic()))
        self._port_index += 1
        self._task = asyncio.create_task(self._run(), name=f"socket:{self.chat_id}")


@dataclass(eq=False)
class Post:
    """One visitor message the scenario sent, and what the gateways answered."""

    chat_id: str
    content: str
    client_message_id: str | None
    #: The demo agent is told to fail this message (its reply may be an apology).
    poisoned: bool = False
    started_at: float = 0.0
    #: The scenario's phase (or round and its fault) when it was posted.
    phase: str = ""
    #: Status (or exception name) of every attempt, in order.
    attempts: list[int | str] = field(default_factory=list)
    #: Message ids of every 200 answer (all equal when idempotency holds).
    accepted_ids: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return bool(self.accepted_ids)

    @property
    def message_id(self) -> str | None:
        return self.accepted_ids[0] if self.accepted_ids else None


@dataclass
class Ledger:
    """Every post of a run."""

    posts: list[Post] = field(default_factory=list)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def content(self, tokens: int, directive: str = "") -> str:
        """A unique message text asking the demo agent for ``tokens`` pieces."""
        return f"[[demo:tokens={tokens}]]{directive} guarantee check m{next(self._serial)}"

    def by_chat(self) -> dict[str, list[Post]]:
        chats: dict[str, list[Post]] = {}
        for post in self.posts:
            chats.setdefault(post.chat_id, []).append(post)
        return chats


class Fleet:
    """Opens sockets and sends posts; all randomness comes from the run's seeded ``rng``."""

    def __init__(self, rng: random.Random, ports: list[int], retry_within: float = 90.0) -> None:
        self.rng = rng
        self.ports = ports
        self.retry_within = retry_within
        self.sockets: list[Socket] = []
        self.ledger = Ledger()
        #: Set by the scenario; every post records it.
        self.phase = ""

    async def open(
        self, chat_id: str, kind: SocketKind, *, after: str | None = None, first_port: int = 0
    ) -> Socket:
        """Open a socket of ``kind`` on ``chat_id`` (from ``after``, else from the handshake)."""
        ports = self.ports[first_port:] + self.ports[:first_port]
        socket = Socket(
            ports=ports,
            chat_id=chat_id,
            transport="ws" if kind.startswith("ws") else "sse",
            v2=kind.endswith("v2"),
            after=after,
            kind=kind,
        )
        self.sockets.append(socket)
        await socket.start(connected_within=60)
        return socket

    async def post(
        self,
        chat_id: str,
        content: str,
        *,
        with_client_id: bool,
        poisoned: bool = False,
        port_index: int | None = None,
    ) -> Post:
        """POST ``content``; with a ``clientMessageId`` it is retried (as the widget does)
        on another gateway until accepted. Without one, a failed attempt is not retried."""
        client_id = f"cm-{self.rng.getrandbits(64):016x}" if with_client_id else None
        post = Post(chat_id, content, client_id, poisoned, time.monotonic(), self.phase)
        self.ledger.posts.append(post)
        index = self.rng.randrange(len(self.ports)) if port_index is None else port_index
        deadline = time.monotonic() + self.retry_within
        while True:
            port = self.ports[index % len(self.ports)]
            result = await post_message(port, chat_id, content, client_message_id=client_id)
            post.attempts.append(result.status)
            if result.status == 200:
                post.accepted_ids.append(result.message_id)
                return post
            if client_id is None or time.monotonic() > deadline:
                return post
            index += 1
            await asyncio.sleep(0.2)

    async def repeat(self, post: Post) -> None:
        """Send an accepted post again with the same ``clientMessageId`` (a retry)."""
        if post.client_message_id is None:
            return
        port = self.ports[self.rng.randrange(len(self.ports))]
        result = await post_message(
            port, post.chat_id, post.content, client_message_id=post.client_message_id
        )
        post.attempts.append(result.status)
        if result.status == 200:
            post.accepted_ids.append(result.message_id)

    async def drop_some(self, share: float) -> int:
        """Cut a random ``share`` of the sockets at once; they resume by themselves."""
        chosen = [s for s in self.sockets if self.rng.random() < share]
        await asyncio.gather(*(s.drop() for s in chosen))
        return len(chosen)

    async def close(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.sockets))
