"""How agent failures are classified and when the worker stops calling the agent.

:func:`classify_error` translates openai, timeout and network exceptions into
:class:`~worker.errors.AgentError` categories (the original worker's: timeout, network,
server_error, http_error, auth, circuit_open, unknown); :class:`CircuitBreaker` opens after
consecutive failures so a down agent is not hammered.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import openai

from worker.errors import AgentError

__all__ = ["CircuitBreaker", "classify_error", "counts_against_agent", "status_error"]

#: A 429's ``Retry-After`` is honoured up to this many seconds.
MAX_RETRY_AFTER_SECONDS = 10.0


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures, for ``open_seconds``."""

    def __init__(
        self,
        threshold: int = 3,
        open_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        """True while calls are refused."""
        return self._clock() < self._open_until

    def check(self) -> None:
        """Raise ``AgentError("circuit_open")`` while the circuit is open."""
        remaining = self._open_until - self._clock()
        if remaining > 0:
            raise AgentError(
                "circuit_open", f"agent failing; next try in {remaining:.1f}s", retryable=False
            )

    def record_success(self) -> None:
        """Close the circuit and forget past failures."""
        self._failures = 0
        self._open_until = 0.0

    def record_failure(self) -> None:
        """Count a failure; open the circuit at the threshold (again after a failed trial)."""
        self._failures += 1
        if self._failures >= self.threshold:
            self._open_until = self._clock() + self.open_seconds


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify_error(exc: BaseException) -> AgentError:
    """Translate an exception raised while talking to the agent into an :class:`AgentError`."""
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return AgentError("timeout", "the agent did not answer in time", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        reason = type(cause).__name__ if cause is not None else "connection failed"
        return AgentError("network", f"could not reach the agent ({reason})", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        return status_error(exc.status_code, exc.message, exc.response.headers.get("retry-after"))
    if isinstance(exc, openai.APIError):
        # An in-stream {"error": {...}} object: the agent failed mid-generation.
        return AgentError("server_error", _short(exc.message), retryable=True)
    return AgentError("unknown", type(exc).__name__)


def status_error(status: int, message: str, retry_after: str | None = None) -> AgentError:
    """The :class:`AgentError` for an HTTP error answer (the openai client's or aiohttp's)."""
    if status in (401, 403):
        return AgentError("auth", f"HTTP {status}", status=status)
    if status == 429:
        return AgentError(
            "http_error",
            "HTTP 429 (rate limited)",
            retryable=True,
            status=429,
            retry_after=_retry_after(retry_after),
        )
    if status >= 500:
        return AgentError("server_error", f"HTTP {status}", retryable=True, status=status)
    return AgentError("http_error", f"HTTP {status}: {_short(message)}", status=status)


def _retry_after(value: str | None) -> float | None:
    try:
        return min(float(value), MAX_RETRY_AFTER_SECONDS) if value else None
    except ValueError:
        return None


def counts_against_agent(err: AgentError) -> bool:
    """Whether a failure says the agent is unhealthy (counts towards the breaker)."""
    return err.retryable or err.category == "auth"
