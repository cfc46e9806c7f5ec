"""A fake OpenAI-compatible provider on loopback, for bring-your-own-model tests.

A real aiohttp server: ``POST /v1/chat/completions`` streams SSE chunks and ``GET
/v1/models`` lists models, both only with ``Authorization: Bearer <key>``. The model
name picks the behaviour:

- ``echo`` (and any other known model): "You said: <last user message>", word by word;
- ``slow``: the same, ``slow_delay`` seconds per word (stop and resume tests);
- ``stall``: two words, then silence until :attr:`FakeProvider.release` is set;
- ``long``: 2,000 words (answer-size cap);
- ``length``: a few words, then ``finish_reason: "length"``;
- ``cut``: a few words, then the body ends without a finish reason or ``[DONE]``;
- ``stream-error``: a few words, then an ``error`` event that echoes the key;
- ``fail-401``, ``fail-402``, ``fail-429``, ``fail-500``: that status, with a body that echoes
  the key as some providers do (the gateway must not pass it on); an unknown model is a 404.

Every request is recorded (model, messages, whether the key matched) in ``requests``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["MODELS", "FakeProvider", "run_fake_provider"]

MODELS = [
    *("echo", "slow", "stall", "long", "length", "cut", "stream-error"),
    *("fail-401", "fail-402", "fail-429", "fail-500"),
]


@dataclass
class FakeProvider:
    """The server's state: the key it accepts, what it saw, and the stall's release."""

    key: str
    base_url: str = ""
    word_delay: float = 0.002
    slow_delay: float = 0.05
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when a ``stall`` request has sent its first words.
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    #: Streams that ended because the client went away.
    disconnects: int = 0

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.key}"

    def _refusal(self, status: int, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")
        return web.json_response(
            {"error": {"message": f"Incorrect API key or quota: {given}", "code": status}},
            status=status,
        )

    async def models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refusal(401, request)
        return web.json_response({"object": "list", "data": [{"id": m} for m in MODELS]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model"))
        authorized = self._authorized(request)
        self.requests.append(
            {"model": model, "messages": body.get("messages"), "authorized": authorized}
        )
        if not authorized:
            return self._refusal(401, request)
        if model.startswith("fail-"):
            return self._refusal(int(model.removeprefix("fail-")), request)
        if model not in MODELS:
            return web.json_response({"error": {"message": f"no model {model}"}}, status=404)
        last = next(
            (m["content"] for m in reversed(body["messages"]) if m.get("role") == "user"), ""
        )
        words = f"You said: {last}".split(" ")
        if model == "long":
            words = [f"w{i}" for i in range(2000)]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delay = self.slow_delay if model == "slow" else self.word_delay
        try:
            for index, word in enumerate(words):
                if model == "stall" and index == 2:
                    self.stalled.set()
                    await self.release.wait()
                text = word if index == 0 else " " + word
                await _event(response, {"choices": [{"index": 0, "delta": {"content": text}}]})
                if model == "cut" and index == 2:
                    return response
                if model == "stream-error" and index == 2:
                    given = request.headers.get("Authorization", "")
                    await _event(response, {"error": {"message": f"overloaded for {given}"}})
                    return response
                if model == "length" and index == 3:
                    await _event(
                        response,
                        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
                    )
                    break
                await asyncio.sleep(delay)
            else:
                await _event(
                    response, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                )
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response


async def _event(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(data)}\n\n".encode())


@asynccontextmanager
async def run_fake_provider(key: str, **options: Any) -> AsyncIterator[FakeProvider]:
    """Serve a :class:`FakeProvider` on a free loopback port (``base_url`` ends in ``/v1``)."""
    fake = FakeProvider(key=key, **options)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.completions)
    app.router.add_get("/v1/models", fake.models)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        fake.release.set()
        await runner.cleanup()
