"""How one job run treats bus errors: an outage (BusUnavailable) is ridden out and the job
tried again once Redis answers; a refusal (BusRejected) leaves the job pending at once.
In-memory fakes of the bus and of the answer handler (no Redis)."""

from __future__ import annotations

import asyncio

from bus import BusError, BusRejected, BusUnavailable, Delivery
from bus.schemas import AnswerMessage
from worker.chat_holds import ChatHolds
from worker.job_runner import JobRunner, RunningJob
from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings


class Leases:
    async def acquire(self, chat_id: str) -> bool:
        return True

    async def release(self, chat_id: str) -> None:
        return None


class Jobs:
    def __init__(self) -> None:
        self.acked: list[str] = []

    async def ack(self, entry_id: str, partition: int = 0) -> None:
        self.acked.append(entry_id)


class Bus:
    def __init__(self) -> None:
        self.jobs = Jobs()
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1


class Handler:
    """Fails ``already_answered`` with each of ``errors`` in turn, then says "answered"."""

    def __init__(self, *errors: BusError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def already_answered(self, chat_id: str, message_id: str) -> bool:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return True


def delivery() -> Delivery:
    job = AnswerMessage(
        job_id="j1", chat_id="c1", message_id="m1", request_id="r1", enqueued_at=0.0
    )
    return Delivery("1-0", job.model_dump_json(), job)


async def run(handler: Handler) -> tuple[Bus, WorkerMetrics]:
    bus, metrics, stopping = Bus(), WorkerMetrics(), asyncio.Event()
    settings = WorkerSettings(
        redis_url="redis://127.0.0.1:1/0",  # never connected: the bus is a fake
        agent_api_url="http://agent.invalid/v1/chat/completions",
        _env_file=None,
    )
    holds = ChatHolds(Leases(), 1, lease_wait_seconds=1.0, stopping=stopping)  # type: ignore[arg-type]
    runner = JobRunner(
        bus,  # type: ignore[arg-type]
        handler,  # type: ignore[arg-type]
        holds,
        settings,
        stopping=stopping,
        metrics=metrics,
    )
    job = RunningJob(delivery(), "c1")
    job.task = asyncio.create_task(runner.run(job))
    await job.task
    return bus, metrics


def outcomes(metrics: WorkerMetrics) -> dict[str, float]:
    return {
        outcome: value
        for outcome in ("duplicate", "abandoned")
        if (
            value := metrics.registry.get_sample_value(
                "terrarium_worker_jobs_total", {"outcome": outcome}
            )
        )
    }


async def test_an_outage_is_ridden_out_and_the_job_tried_again() -> None:
    handler = Handler(BusUnavailable("Redis unreachable (ConnectionError)"))
    bus, metrics = await run(handler)
    assert (handler.calls, bus.pings, bus.jobs.acked) == (2, 1, ["1-0"])
    assert outcomes(metrics) == {"duplicate": 1}


async def test_a_refused_command_leaves_the_job_pending_at_once() -> None:
    handler = Handler(BusRejected("Redis refused the command (NOPERM)"))
    bus, metrics = await run(handler)
    assert (handler.calls, bus.pings, bus.jobs.acked) == (1, 0, [])
    assert outcomes(metrics) == {"abandoned": 1}
