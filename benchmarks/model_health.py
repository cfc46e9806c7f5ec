"""How fast the worker's health view follows a model server going down and coming back.

``python -m benchmarks.model_health [--rounds 3] [--outage 8] [--quirk no_health]`` runs the
worker's real :class:`worker.health.HealthMonitor` with the worker's default intervals
against the demo agent over loopback, stops the agent for ``--outage`` seconds, starts it
again on the same port, and prints per round how long the ``llm`` node took to go offline
and to come back online. A script that prints figures, not a test (issue 16: before, the
node stayed online through a 45 s outage and offline 45-100 s after it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence

from demo.agent import DemoAgentConfig, run_demo_agent
from demo.agent_script import QUIRKS, Quirk
from demo.launcher import free_port
from worker.health import HealthMonitor
from worker.llm import AgentClient
from worker.settings import WorkerSettings

__all__ = ["main"]


async def _until(condition: Callable[[], bool], within: float) -> float:
    """Seconds until ``condition()`` holds (checked every 10 ms); raises after ``within``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise TimeoutError("the health view never changed")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _run(rounds: int, outage: float, quirks: frozenset[Quirk]) -> None:
    defaults = WorkerSettings.model_validate(
        {"redis_url": "redis://127.0.0.1:1", "agent_api_url": "http://127.0.0.1:1/v1"}
    )
    port = free_port()
    config = DemoAgentConfig(token_delay_ms=0, quirks=quirks)
    url = f"http://127.0.0.1:{port}"
    client = AgentClient(base_url=f"{url}/v1", model="m", timeout_seconds=5)
    monitor = HealthMonitor(
        client,
        f"{url}/health",
        interval_seconds=defaults.status_poll_interval_seconds,
        llm_interval_seconds=defaults.llm_status_poll_interval_seconds,
        timeout_seconds=min(10.0, defaults.agent_timeout_seconds),
    )
    stop = asyncio.Event()
    down: list[float] = []
    up: list[float] = []
    print(
        f"probe every {defaults.status_poll_interval_seconds:g} s, inference probe every "
        f"{defaults.llm_status_poll_interval_seconds:g} s; outage {outage:g} s; "
        f"quirks: {', '.join(sorted(quirks)) or 'none'}"
    )
    async with run_demo_agent(config, port=port):
        probing = asyncio.create_task(monitor.run(stop))
        await _until(lambda: monitor.llm.status == "online", 60)
    try:
        for index in range(rounds):
            down.append(await _until(lambda: monitor.llm.status == "offline", outage + 60))
            await asyncio.sleep(max(0.0, outage - down[-1]))
            async with run_demo_agent(config, port=port):
                up.append(await _until(lambda: monitor.llm.status == "online", 60))
                print(
                    f"round {index + 1}: offline after {down[-1]:.2f} s, "
                    f"online after {up[-1]:.2f} s"
                )
                await asyncio.sleep(1.0)
    finally:
        stop.set()
        await probing
        await client.aclose()
    print(
        f"median: offline after {statistics.median(down):.2f} s (max {max(down):.2f}), "
        f"online after {statistics.median(up):.2f} s (max {max(up):.2f})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point (see the module doc)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_health")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--outage", type=float, default=8.0, help="seconds the agent is down")
    parser.add_argument("--quirk", action="append", choices=QUIRKS, default=[])
    args = parser.parse_args(argv)
    asyncio.run(_run(args.rounds, args.outage, frozenset(args.quirk)))


if __name__ == "__main__":
    main()
