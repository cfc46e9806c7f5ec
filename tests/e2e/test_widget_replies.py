"""How replies read: starter prompts on an empty chat, answers cut short, thoughts kept
after a refresh, and a second reply an operator asked for streamed like any other."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, expect

from bus import BusKeys, JobQueue
from bus.client import create_redis
from bus.ops import DeadLetter, open_ops_bus
from bus.settings import BusSettings
from tests.e2e.conftest import require_tools
from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

T = TypeVar("T")


def chat(page: Page, system: RunningSystem) -> Widget:
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    return widget


def test_starter_prompts_from_the_content_bundle_start_the_chat(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    widget = chat(page, system)
    starters = widget.host.locator(".starters button.starter")
    # The shipped bundle's content/_starter-prompts.md, in file order.
    expect(starters.first).to_have_text("What projects are on this site?")
    expect(widget.host.locator(".starters")).to_have_attribute("aria-label", "Suggested questions")
    assert 1 <= starters.count() <= 4
    widget.shot(shots, "replies-01-starters")

    starters.first.click()
    expect(widget.visitor.first.locator(".bubble")).to_have_text("What projects are on this site?")
    widget.wait_reply()
    expect(widget.host.locator(".empty")).to_be_hidden()
    expect(widget.textarea).to_be_focused()


def test_an_answer_cut_at_the_token_limit_says_so(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    widget = chat(page, system)
    # The demo agent answers with more pieces than AGENT_MAX_TOKENS (1024): finish_reason
    # "length", stored with status "truncated" (docs/protocol.md 9.9).
    widget.send("Go on and on [[demo:tokens=1100]] [[demo:delay=0]]")
    reply = widget.wait_reply(timeout=60_000)
    tag = reply.locator(".msg-meta .tag.truncated")
    expect(tag).to_have_text("Answer cut short")
    expect(tag).to_have_attribute("title", re.compile("length limit for one answer"))
    expect(reply.locator(".tag.warn")).to_have_count(0)  # not a failure
    expect(widget.banner).to_be_hidden()
    expect(widget.announcer).to_contain_text("(Answer cut short)")  # screen readers hear it
    reply.scroll_into_view_if_needed()
    widget.shot(shots, "replies-02-truncated")

    # A normal answer carries no such note.
    widget.send("Short one [[demo:tokens=5]]")
    expect(widget.wait_reply(2).locator(".tag")).to_have_count(0)


def test_show_thoughts_survives_a_refresh(page: Page, system: RunningSystem, shots: Path) -> None:
    widget = chat(page, system)
    widget.send("What is on the site? [[demo:tool=search_site]] [[demo:reasoning]]")
    reply = widget.wait_reply()
    toggle = reply.locator("button.thoughts-toggle")
    expect(toggle).to_have_text(re.compile(r"Show thoughts \(\d+\)"))
    live_label = toggle.inner_text()
    toggle.click()
    live_drawer = reply.locator(".thoughts").inner_text()
    assert "search_site" in live_drawer

    page.reload()
    widget = Widget(page)
    reply = widget.wait_reply()
    toggle = reply.locator("button.thoughts-toggle")
    expect(toggle).to_have_text(live_label)
    toggle.click()
    expect(reply.locator(".thoughts")).to_be_visible()
    assert reply.locator(".thoughts").inner_text() == live_drawer
    expect(reply.locator(".thoughts .tools li.done")).to_contain_text("Used search_site")
    widget.shot(shots, "replies-03-thoughts-after-refresh")

    # The original front end's history (no v=2) keeps its shape: no thoughts field.
    chat_id = page.evaluate("sessionStorage.getItem('terrarium-chat-id')")
    url = f"{system.url}api/chat/{chat_id}/messages?accessCode={system.access_code}"
    plain = page.request.get(url).json()
    assert all("thoughts" not in message for message in plain)
    extended = page.request.get(url + "&v=2").json()
    assert [set(m["thoughts"]) for m in extended if "thoughts" in m] == [{"tools", "reasoning"}]


@pytest.fixture
def workerless_system() -> Iterator[RunningSystem]:
    """A private system whose worker the test starts itself (none at first)."""
    require_tools()
    from tests.e2e.system import start_system

    yield from start_system(workers=0)


def test_a_reply_an_operator_requeued_streams_like_any_other(
    page: Page, workerless_system: RunningSystem, shots: Path
) -> None:
    system = workerless_system
    widget = chat(page, system)
    # Slow enough to watch the second reply stream (80 pieces, 60 ms apart).
    question = "Are you there, Terra? [[demo:tokens=80]] [[demo:delay=60]]"
    widget.send(question)
    expect(widget.visitor.first.locator("time")).to_be_visible()  # stored, job waiting

    # The job dies with a consumer once, then the worker's sweep finds it delivered more
    # than MAX_DELIVERIES (1) times: dead letter, and the apology (as in production).
    off_the_page_loop(_deliver_to_a_dying_consumer(system.launcher.redis_url))
    system.launcher.add_worker(
        "worker0",
        {
            "WORKER_NAME": "e2e-worker",
            "MAX_DELIVERIES": "1",
            "RECLAIM_INTERVAL_MS": "200",
            "RECLAIM_MIN_IDLE_MS": "1000",
        },
    )
    apology = widget.wait_reply(1)
    expect(apology.locator(".tag.warn")).to_be_visible()

    dead_id = off_the_page_loop(_only_dead_letter(system.launcher.redis_url))
    requeue = subprocess.run(
        [sys.executable, "-m", "ops", "requeue", dead_id],
        env={**os.environ, "REDIS_URL": system.launcher.redis_url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert requeue.returncode == 0, requeue.stderr

    # The second reply streams (it used to appear only whole, at its end) ...
    streamed = widget.stream.locator(".bubble")
    expect(streamed).to_be_visible(timeout=20_000)
    expect(streamed).to_contain_text("Are you there", timeout=10_000)
    expect(apology.locator("button.retry-reply")).to_have_count(0)  # already being answered
    widget.shot(shots, "replies-04-requeued-streaming")
    # ... and ends as a normal answer after the apology.
    answer = widget.wait_reply(2)
    expect(widget.stream).to_have_count(0)
    expect(answer.locator(".tag")).to_have_count(0)
    expect(answer.locator(".bubble")).to_contain_text("Are you there")


def off_the_page_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end in a thread of its own (Playwright's loop owns this one)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


async def _deliver_to_a_dying_consumer(redis_url: str) -> None:
    redis = create_redis(redis_url, client_name="e2e-dying-consumer")
    try:
        stuck = JobQueue(redis, BusKeys(), consumer="dying-worker")
        await stuck.ensure_group()
        # It dies with the job: left pending, reclaimed once idle (RECLAIM_MIN_IDLE_MS), which
        # counts a delivery (a job handed back at a graceful stop would not).
        (delivery,) = await stuck.read(count=1, block_ms=5000)
        assert delivery.deliveries == 1
    finally:
        await redis.aclose()


async def _only_dead_letter(redis_url: str) -> str:
    async with open_ops_bus(BusSettings(redis_url=redis_url)) as ops:

        async def letters() -> list[DeadLetter] | None:
            return await ops.dead_letters() or None

        (dead,) = await wait_until(letters, 20, "the job to be dead-lettered")
        return dead.dead_id
