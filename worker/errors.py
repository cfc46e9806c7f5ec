"""Errors raised inside the worker.

::

    WorkerError
    └── AgentError      the agent call failed; ``category`` is one of CATEGORIES

Redis trouble reaches the worker only as :class:`bus.BusError` (the bus translates every
Redis failure at its boundary): :class:`bus.BusUnavailable` is an outage, ridden out and
tried again (:mod:`worker.job_runner`); any other bus error leaves the job pending for a
later reclaim. Losing a chat lease cancels the job's task. openai exceptions are translated
into :class:`AgentError` in :mod:`worker.llm` (:mod:`worker.agent_failures`), cause chained.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["CATEGORIES", "AgentError", "ErrorCategory", "WorkerError"]

ErrorCategory = Literal[
    "timeout", "network", "server_error", "http_error", "auth", "circuit_open", "unknown"
]

#: Failure categories, as the original worker reported them in ``detail``.
CATEGORIES: tuple[ErrorCategory, ...] = (
    "timeout",
    "network",
    "server_error",
    "http_error",
    "auth",
    "circuit_open",
    "unknown",
)


class WorkerError(Exception):
    """Base class of the worker's own errors."""


class AgentError(WorkerError):
    """A failed call to the agent.

    ``retryable`` says whether the same request may succeed later (timeouts, network
    errors, 5xx, 429); ``status`` is the HTTP status when there was one and
    ``retry_after`` the server's ``Retry-After`` in seconds.
    """

    def __init__(
        self,
        category: ErrorCategory,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{category}: {message}")
        self.category: ErrorCategory = category
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after

    @property
    def detail(self) -> str:
        """``"<category>: <message>"``, the worker-state detail of the original."""
        return f"{self.category}: {self.message}"
