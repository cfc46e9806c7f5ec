"""Issue 4's "done when", with real processes: gateway, ``python -m worker`` (tools from the
environment, the shipped content bundle), the demo agent and redis-server. A question that
needs two tool rounds streams a correct answer; a v=2 socket also sees the tool activity and
the reasoning, a v1 socket only the original frames."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from bus.schemas import EVENT_TYPES_V1
from tests.support.system import ACCESS_CODE, System

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _frames_until_responded(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while True:
            frame = await ws.receive_json()
            frames.append(frame)
            if frame.get("type") == "workerState" and frame["state"] in ("responded", "error"):
                return frames


async def test_two_tool_rounds_through_the_whole_system(system: System) -> None:
    system.start_agent(token_delay_ms=2)
    gateway = system.gateway()
    system.worker()
    base = f"http://127.0.0.1:{gateway.port}"
    question = (
        '[[demo:tool=search_site {"query": "dice"}]] '
        '[[demo:tool2=fetch_site_page {"slug_or_url": "blog-fair-dice"}]] '
        "[[demo:reasoning]] How does the dice roller work?"
    )
    socket = f"{base}/api/chat?chatId=sys-tools&accessCode={ACCESS_CODE}"
    async with aiohttp.ClientSession() as http:
        v1 = await http.ws_connect(socket)
        v2 = await http.ws_connect(f"{socket}&v=2")
        response = await http.post(
            f"{base}/api/chat/sys-tools/messages",
            json={"content": question, "accessCode": ACCESS_CODE},
        )
        assert response.status == 200, await response.text()
        old, new = await asyncio.gather(_frames_until_responded(v1), _frames_until_responded(v2))
        await v1.close()
        await v2.close()

    for frames in (old, new):
        (answer,) = [f for f in frames if f.get("sender") == "Terra"]
        text = "".join(f["content"] for f in frames if f.get("type") == "assistantChunk")
        assert text == answer["content"]
        assert answer["content"].startswith(
            "Here's what search_site turned up: “## Dice notation roller (2024)"
        )
    assert {f.get("type", "message") for f in old} <= EVENT_TYPES_V1
    tools = [(f["name"], f["status"]) for f in new if f.get("type") == "toolActivity"]
    assert tools == [
        ("search_site", "started"),
        ("search_site", "done"),
        ("fetch_site_page", "started"),
        ("fetch_site_page", "done"),
    ]
    thoughts = "".join(f["content"] for f in new if f.get("type") == "reasoning")
    assert "This looks like a job for search_site" in thoughts
    # the v1 socket got exactly the v=2 frames minus the new types
    assert old == [f for f in new if f.get("type", "message") in EVENT_TYPES_V1]
