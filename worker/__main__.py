"""``python -m worker`` (the ``terrarium-worker`` script): run one worker until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
from pydantic import ValidationError

from logsetup import configure_logging
from worker.consumer import Worker
from worker.settings import WorkerSettings

__all__ = ["main", "run"]

logger = structlog.get_logger("worker")


def load_settings() -> WorkerSettings:
    """Settings from the environment, or exit with one clear line (no value echoed)."""
    try:
        return WorkerSettings()  # required fields come from the environment
    except ValidationError as exc:
        problems = sorted(
            f"{str(err['loc'][0]).upper()} ({err['msg']})" if err["loc"] else err["msg"]
            for err in exc.errors(include_input=False, include_url=False)
        )
        print(
            f"worker: invalid configuration: {'; '.join(problems)}. Refusing to start.",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


async def run(settings: WorkerSettings) -> None:
    """Run a worker until SIGTERM or SIGINT, then stop it gracefully."""
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    try:
        async with worker:
            await worker.wait_stop_requested()
            logger.info("worker.stop_requested")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main() -> None:
    """Entry point of the ``terrarium-worker`` console script."""
    settings = load_settings()
    configure_logging(settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
