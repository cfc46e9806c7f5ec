"""Figures for the widget's weight and rendering cost, against a real system and Chromium.

    .venv/bin/python -m tests.e2e.measure_widget [--exchanges 150]

Prints JSON: what the host page loads before the visitor opens the bubble (requests and
bytes on the wire, by kind), what opening adds, and the layout + style + script time per
exchange over a long chat (Chromium's Performance.getMetrics, summed per window of
exchanges). Timings depend on the machine: compare runs with each other only.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from playwright.sync_api import Page, Request, expect, sync_playwright

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.system import start_system
from tests.e2e.widget import Widget

COSTS = ("LayoutDuration", "RecalcStyleDuration", "ScriptDuration")
#: A question of a typical length, with some Markdown for the reply (which echoes it).
QUESTION = (
    "How often should I **water** a closed terrarium with *moss*, ferns and `fittonia`? "
    "Mine sits on a north-facing sill; the glass fogs up every morning and clears by noon. "
    "Is that a sign of too much water, or just the normal cycle?"
)


class Traffic:
    """Requests the page made and the bytes they took on the wire."""

    def __init__(self, page: Page) -> None:
        self.rows: list[dict[str, Any]] = []
        page.on("requestfinished", self._finished)

    def _finished(self, request: Request) -> None:
        sizes = request.sizes()
        response = request.response()
        self.rows.append(
            {
                "url": request.url,
                "type": request.resource_type,
                "bytes": sizes["responseBodySize"] + sizes["responseHeadersSize"],
                "encoding": (response.headers.get("content-encoding") if response else None),
            }
        )

    def take(self) -> dict[str, Any]:
        rows, self.rows = self.rows, []
        scripts = [row for row in rows if row["type"] == "script"]
        return {
            "requests": len(rows),
            "bytes": sum(row["bytes"] for row in rows),
            "script_requests": len(scripts),
            "script_bytes": sum(row["bytes"] for row in scripts),
            "compressed": sum(1 for row in rows if row["encoding"]),
            "urls": [row["url"].split("/", 3)[-1] for row in rows],
        }


def metrics(session: Any) -> dict[str, float]:
    result = session.send("Performance.getMetrics")
    return {m["name"]: m["value"] for m in result["metrics"] if m["name"] in COSTS}


def measure(exchanges: int) -> dict[str, Any]:
    """Run the measurements once on a fresh system."""
    report: dict[str, Any] = {}
    for system in start_system():
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 820})
            traffic = Traffic(page)
            page.goto(system.url, wait_until="networkidle")
            widget = Widget(page)
            widget.launcher.wait_for()
            page.wait_for_load_state("networkidle")
            report["before_open"] = traffic.take()
            widget.open()
            page.wait_for_load_state("networkidle")
            report["on_open"] = traffic.take()
            widget.enter_code(system.access_code)
            widget.wait_connected()

            session = page.context.new_cdp_session(page)
            session.send("Performance.enable")
            window = max(1, exchanges // 6)
            windows = []
            start = metrics(session)
            started = time.monotonic()
            for index in range(1, exchanges + 1):
                widget.send(f"Exchange {index}: {QUESTION} [[demo:echo]]")
                # The reply echoes the question (the list may be capped: count-free wait).
                expect(widget.terra.last).to_contain_text(f"Exchange {index}:", timeout=60_000)
                expect(widget.stream).to_have_count(0)
                if index % window == 0 or index == exchanges:
                    now = metrics(session)
                    count = window if index % window == 0 else index % window
                    windows.append(
                        {
                            "up_to_exchange": index,
                            **{
                                f"{name}_ms_per_exchange": round(
                                    (now[name] - start[name]) * 1000 / count, 2
                                )
                                for name in COSTS
                            },
                            "list_items": widget.host.evaluate(
                                "(h) => h.shadowRoot.querySelectorAll('li').length"
                            ),
                            "shadow_elements": widget.host.evaluate(
                                "(h) => h.shadowRoot.querySelectorAll('*').length"
                            ),
                        }
                    )
                    start = now
            report["long_chat"] = {
                "exchanges": exchanges,
                "wall_seconds": round(time.monotonic() - started, 1),
                "windows": windows,
            }
            browser.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=150)
    args = parser.parse_args()
    print(json.dumps(measure(args.exchanges), indent=2))


if __name__ == "__main__":
    main()
