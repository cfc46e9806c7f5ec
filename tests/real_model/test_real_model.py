"""The visitor contract against a real model server (issue 16's on-demand tier).

Real redis-server, gateway and worker processes; the model is whatever
``scripts/test-real-model`` started (llama-cpp-python with the Gemma 3 270M GGUF). A base
model's words mean nothing, so only the contract is checked: states, chunks that add up to
the stored Message, follow-ups, stop, and the health chain.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.real_model.conftest import Deployment
from tests.support.clients import ChatClient, cancel, post_message
from tests.support.system import ACCESS_CODE
from tests.support.wait import wait_until
from worker.conversation import TOO_LONG_SENTENCE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: A slow CPU model takes up to ~20 s to the first token on a shared two-core machine.
ANSWER_WITHIN = 300.0


def streamed(client: ChatClient, reply_to: str) -> str:
    """The text a visitor saw streaming, from the reply's last stream reset on."""
    text = ""
    for frame in client.frames:
        if frame.data.get("replyTo") != reply_to:
            continue
        if frame.type == "streamReset":
            text = ""
        elif frame.type == "assistantChunk":
            text += str(frame.data.get("content") or "")
    return text


async def ask(deployment: Deployment, client: ChatClient, content: str) -> dict[str, Any]:
    posted = await post_message(deployment.gateway_port, client.chat_id, content)
    assert posted.status == 200, posted
    reply = await client.wait_reply(posted.message_id, within=ANSWER_WITHIN)
    return dict(reply.data) | {"_asked": posted.message_id}


async def test_answers_stream_and_follow_ups_keep_working(deployment: Deployment) -> None:
    async with ChatClient([deployment.gateway_port], "real-chat") as client:
        for question in ("Hello! Who are you?", "What can I find on this website?"):
            reply = await ask(deployment, client, question)
            assert reply.get("status") in (None, "truncated"), reply
            assert reply["content"].strip(), reply
            assert streamed(client, reply["_asked"]) == reply["content"]

            def done(asked: str = reply["_asked"]) -> list[Any]:
                chunks = client.chunks(asked, with_text=False)
                return [f for f in chunks if f.data.get("done") is True]

            # the done chunk is written right after the Message, so it may arrive just after
            assert len(await client.wait_for(done, within=10, what="the done chunk")) == 1


async def test_stop_keeps_exactly_what_was_streamed(deployment: Deployment) -> None:
    async with ChatClient([deployment.gateway_port], "real-stop") as client:
        posted = await post_message(
            deployment.gateway_port, client.chat_id, "Tell me a long story about a moss garden."
        )
        assert posted.status == 200, posted
        await client.wait_for(
            lambda: client.chunks(posted.message_id), within=ANSWER_WITHIN, what="a first chunk"
        )
        assert await cancel(deployment.gateway_port, client.chat_id) == 200
        reply = await client.wait_reply(posted.message_id, within=60)
    assert reply.data.get("status") == "stopped"
    assert streamed(client, posted.message_id) == reply.data["content"]


async def test_the_health_chain_shows_the_real_server(deployment: Deployment) -> None:
    url = f"http://127.0.0.1:{deployment.gateway_port}/api/health?accessCode={ACCESS_CODE}"

    async def chain() -> dict[str, dict[str, Any]] | None:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            if resp.status != 200:  # e.g. a rate budget: ask again later
                return None
            nodes = {n["id"]: n for n in (await resp.json())["chain"]}
        ready = nodes["agent"]["status"] == "online" and nodes["llm"]["status"] == "online"
        return nodes if ready else None

    nodes = await wait_until(chain, ANSWER_WITHIN, "agent and model online", interval=1.0)
    assert nodes["agent"].get("detail") != "HTTP 404"  # a missing /health is not "online"


async def test_a_message_too_long_for_the_context_gets_a_sentence(deployment: Deployment) -> None:
    """3,990 digits (a token each in Gemma's tokenizer, which splits numbers into digits)
    exceed a 2,048-token context, counted by the server's tokenizer or by the estimate: no
    model call. (Words would not: the worker now counts with the server's tokenizer.)"""
    async with ChatClient([deployment.gateway_port], "real-long") as client:
        reply = await ask(deployment, client, "1234567890" * 399)
    assert reply["status"] == "error"
    assert reply["content"] == TOO_LONG_SENTENCE
