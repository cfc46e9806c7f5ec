"""``python -m worker`` (the ``terrarium-worker`` script): run one worker until SIGTERM.

The worker answers with Terra's tools (:class:`worker.toolkit.ToolKit`, configured by
:class:`tools.ToolSettings` from the same environment). With ``CONTENT_REFRESH_ENABLED``
the arq scheduled jobs (:class:`worker.scheduled.ScheduledJobs`) run alongside.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import structlog
from pydantic import ValidationError

from bus import BusRejected, describe_settings_error
from logsetup import configure_logging
from tools.settings import ToolSettings
from worker.jobs import Worker
from worker.scheduled import ArqRedisUnusable, ScheduledJobs
from worker.settings import WorkerSettings
from worker.toolkit import ToolKit

T = TypeVar("T")

__all__ = ["loop_factory", "main", "run"]

logger = structlog.get_logger("worker")

#: Refusals of a cluster node to a client that does not know it talks to a cluster.
_CLUSTER_KINDS = ("MOVED", "ASK", "CROSSSLOT")


def load_settings() -> WorkerSettings:
    """Settings from the environment, or exit with one clear line (no value echoed)."""
    return _load(WorkerSettings)


def load_tool_settings() -> ToolSettings:
    """The tools' settings from the environment, or exit like :func:`load_settings`."""
    return _load(ToolSettings)


def _load(factory: Callable[[], T]) -> T:
    try:
        return factory()  # required fields come from the environment
    except ValidationError as exc:
        _refuse(describe_settings_error(exc))


def _refuse(problems: str) -> NoReturn:
    print(f"worker: invalid configuration: {problems}. Refusing to start.", file=sys.stderr)
    raise SystemExit(2)


async def run(settings: WorkerSettings, tool_settings: ToolSettings | None = None) -> None:
    """Run a worker until SIGTERM or SIGINT, then stop it gracefully.

    With ``tool_settings`` the worker has its tools, and the scheduled jobs run when enabled.
    """
    tools = ToolKit.from_settings(tool_settings, settings) if tool_settings else None
    try:
        scheduled = ScheduledJobs(settings, tool_settings) if tool_settings else None
    except ArqRedisUnusable as exc:
        _refuse(f"{exc.setting} ({exc})")
    except ValueError as exc:
        _refuse(f"CONTENT_REFRESH_CRON ({exc})")
    worker = Worker(settings, tools=tools)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    started = False
    try:
        async with worker:
            started = True
            # The start-up's objects (modules, settings, connections, tool data) leave
            # the GC's generations: each full collection then scans only what answers
            # create (the worker's 1.2 ms per short exchange spent ~6 % in the GC). And a
            # young collection every 10,000 allocations instead of 700: each walks the
            # live tasks and futures of every answer in flight, while reference counting
            # frees nearly all of an answer's garbage anyway.
            gc.freeze()
            gc.set_threshold(10_000, *gc.get_threshold()[1:])
            if scheduled is not None:
                try:
                    await scheduled.start()  # no-op unless CONTENT_REFRESH_ENABLED
                except ArqRedisUnusable as exc:
                    _refuse(f"{exc.setting} ({exc})")
            await worker.wait_stop_requested()
            logger.info("worker.stop_requested")
    except BusRejected as exc:  # Redis answered and refused at start-up: a setting is wrong
        if started:
            raise
        hint = " (a Redis Cluster needs REDIS_CLUSTER=true)" if exc.kind in _CLUSTER_KINDS else ""
        _refuse(f"REDIS_URL ({exc}{hint})")
    finally:
        if scheduled is not None:
            await scheduled.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when wanted and installed, else None (the stdlib loop)."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    """Entry point of the ``terrarium-worker`` console script."""
    settings = load_settings()
    tool_settings = load_tool_settings()
    configure_logging(settings.log_level)
    factory = loop_factory(settings.uvloop)
    logger.info("worker.event_loop", loop="uvloop" if factory else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run(settings, tool_settings))


if __name__ == "__main__":
    main()
