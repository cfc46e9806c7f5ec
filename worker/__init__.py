"""Terra's worker: consumes answer jobs from Redis and streams the agent's replies back.

Nothing runs at import. ``python -m worker`` (or ``terrarium-worker``) reads
:class:`WorkerSettings` from the environment and runs a :class:`Worker`; tests start one
in-process with ``async with Worker(settings) as worker: ...``.
"""

from worker.errors import AgentError, WorkerError
from worker.jobs import Worker
from worker.llm import AgentClient
from worker.settings import WorkerSettings

__all__ = ["AgentClient", "AgentError", "Worker", "WorkerError", "WorkerSettings"]
