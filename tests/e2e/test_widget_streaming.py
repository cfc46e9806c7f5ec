"""The streamed reply as a visitor watches it: it only ever grows until the final message."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

from playwright.sync_api import Page, expect

from tests.e2e.system import RunningSystem
from tests.e2e.widget import Widget

pytestmark = pytest.mark.e2e

#: Records every text the streaming bubble shows, in order, until it is stopped.
RECORD_STREAM = """
(host) => {
  const root = host.shadowRoot;
  const seen = [];
  const observer = new MutationObserver(() => {
    const bubble = root.querySelector('.streaming .bubble');
    const text = bubble ? bubble.textContent : '';
    if (seen[seen.length - 1] !== text) seen.push(text);
  });
  const options = {subtree: true, childList: true, characterData: true};
  observer.observe(root.querySelector('.log'), options);
  window.__streamSeen = seen;
  window.__stopRecording = () => observer.disconnect();
}
"""


def test_next_reply_streams_intact_when_sent_right_after_the_previous(
    page: Page, system: RunningSystem, shots: Path
) -> None:
    """The previous reply's late `done` chunk must not arm a timer that wipes the next reply.

    The gateway sends Terra's message before the reply's final `done` chunk, so a linger
    timer armed by that chunk used to fire 4 s later in the middle of the next reply.
    """
    page.goto(system.url)
    widget = Widget(page)
    widget.start_chat(system.access_code)
    widget.send("First question [[demo:echo]]")
    widget.wait_reply(1)

    # Sent at once; its answer streams for about 6 s, across the old 4 s linger window.
    widget.host.evaluate(RECORD_STREAM)
    widget.send("Second question [[demo:tokens=120]] [[demo:delay=50]]")
    final = widget.wait_reply(2, timeout=40_000)
    page.evaluate("window.__stopRecording()")
    widget.shot(shots, "streaming-01-second-reply-done")

    seen: list[str] = page.evaluate("window.__streamSeen")
    texts = [text for text in seen if text]
    assert len(texts) > 5, f"the second reply did not stream: {seen}"
    shrinks = [
        (before[-40:], after[:40])
        for before, after in itertools.pairwise(texts)
        if not after.startswith(before[:-1])
    ]
    assert not shrinks, f"the streamed text lost its beginning mid-reply: {shrinks[:3]}"
    # Between its first piece and the final message the bubble never vanished.
    first = seen.index(texts[0])
    assert "" not in seen[first:-1], "the streaming bubble vanished before the reply was stored"
    expect(final.locator(".bubble")).to_contain_text(texts[-1].strip()[:30])
