"""The worker's settings, read once from the environment by ``worker.__main__``.

Env names are the upper-cased field names. Those of the original worker keep their
meaning (``AGENT_API_URL``, ``AGENT_MODEL``, ``AGENT_HEALTH_URL``, ``MAX_CONCURRENT_CHATS``,
``STATUS_POLL_INTERVAL_SECONDS``, ``LLM_STATUS_POLL_INTERVAL_SECONDS``, ``LOG_LEVEL``), so
an existing env file still works; the relay-polling ones are gone (jobs come from Redis).
Redis and the storage policy are :class:`bus.settings.BusSettings` fields (same env names),
shared with every process. Tests build ``WorkerSettings(redis_url=..., agent_api_url=...,
_env_file=None)``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from bus import BusSettings

__all__ = ["WorkerSettings", "default_worker_name"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
PositiveMs = Annotated[int, Field(ge=1)]


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_worker_name() -> str:
    """``<hostname>-<pid>``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(BusSettings):
    """Everything the worker reads from the environment. Secrets are ``SecretStr``."""

    model_config = SettingsConfigDict(
        env_file=".env", env_prefix="", case_sensitive=False, extra="ignore", frozen=True
    )

    # --- Redis: connection and storage policy come from bus.BusSettings -------------
    worker_name: str = Field(
        default_factory=default_worker_name, min_length=1, max_length=128, pattern=r"^\S+$"
    )
    #: The worker crosses hosts to reach Redis: plaintext ``redis://`` to any host but
    #: loopback is refused at start-up unless this says it is meant (a private network).
    redis_allow_plaintext: bool = Field(False, validate_default=True)
    #: arq's Redis, for the scheduled content refresh (``worker/scheduled.py``): a small
    #: standalone Redis (same TLS files and plaintext rule as ``REDIS_URL``). Unset: arq
    #: shares ``REDIS_URL``, except with ``REDIS_CLUSTER``, where arq cannot run; there a
    #: worker with ``CONTENT_REFRESH_ENABLED`` refuses to start until this is set.
    arq_redis_url: SecretStr | None = None

    # --- the agent (terrarium-agent's OpenAI-compatible API) -------------------------
    #: Full URL of ``/v1/chat/completions`` (as in the original); a base URL ending in
    #: ``/v1`` is accepted too.
    agent_api_url: str
    agent_model: str = "terra-webchat"
    agent_api_key: SecretStr | None = None
    #: Derived from ``agent_api_url`` when absent: the part before ``/v1/`` plus ``/health``.
    agent_health_url: str | None = None
    agent_timeout_seconds: float = Field(60.0, gt=0, le=600)
    agent_max_attempts: int = Field(3, ge=1, le=10)
    #: First retry waits about this long; later ones double, capped at 8 s, jittered.
    agent_retry_base_seconds: float = Field(1.0, ge=0, le=30)
    agent_temperature: float = Field(0.7, ge=0, le=2)
    #: The answer's ``max_tokens`` (also kept free in the prompt's context budget).
    agent_max_tokens: int = Field(1024, ge=1, le=131_072)
    #: The model's context length when ``/v1/models`` does not say ``max_model_len``
    #: (llama.cpp); caps the server's figure when both are known. Unset: 4096.
    agent_context_tokens: int | None = Field(None, ge=256, le=10_000_000)
    #: False for chat templates without a system role: the system prompt then opens the
    #: first user turn (as Gemma's own template places it).
    agent_system_role: bool = True
    #: Consecutive agent failures that open the circuit breaker, and for how long.
    agent_circuit_threshold: int = Field(3, ge=1)
    agent_circuit_open_seconds: float = Field(10.0, gt=0)
    #: While the agent cannot be reached, a message waits (state ``queued``, "Terra is
    #: reconnecting to her model") this long before the visitor gets the apology.
    agent_patience_seconds: float = Field(120.0, ge=0, le=3600)
    #: Replaces the prompt generated from the tool registry (``tools.build_system_prompt``).
    system_prompt: str | None = None

    # --- the tool loop --------------------------------------------------------------------
    #: Model calls per reply (the last one is offered no tools); 1 turns tools off.
    max_tool_rounds: int = Field(8, ge=1, le=32)
    #: A tool result longer than this (characters) is shortened for the model.
    tool_result_max_chars: int = Field(6000, ge=500, le=200_000)
    #: Calls beyond this many in one round get an error result instead of running.
    max_tool_calls_per_round: int = Field(8, ge=1, le=64)

    # --- jobs ----------------------------------------------------------------------------
    max_concurrent_chats: int = Field(2, ge=1, le=256)
    job_block_ms: PositiveMs = 2000
    #: Chunk coalescing window: a reply's first piece goes at once, then one write per
    #: window for every streaming chat; under load it grows up to 4x (worker/chunks.py).
    chunk_interval_ms: int = Field(35, ge=1, le=1000)
    max_turns: int = Field(16, ge=1, le=200)
    reclaim_min_idle_ms: int = Field(30_000, ge=100)
    #: How often idle jobs are reclaimed and departed workers' jobs taken over.
    reclaim_interval_ms: PositiveMs = 2000
    max_deliveries: int = Field(3, ge=1)
    chat_lease_ms: int = Field(30_000, ge=100)
    #: While the agent sends nothing, a stop request is checked this often.
    cancel_poll_ms: int = Field(200, ge=10, le=5000)
    #: On SIGTERM, running replies get this long to finish before they are left pending.
    shutdown_grace_seconds: float = Field(20.0, ge=0)

    # --- health and heartbeat -----------------------------------------------------------
    heartbeat_interval_ms: PositiveMs = 2000
    #: A worker whose heartbeat has not renewed its liveness for this long (Redis's clock)
    #: is departed: live workers take over its jobs and chat leases at once.
    worker_dead_after_ms: int = Field(6000, ge=300)
    #: Cheap probes (``/health``, or ``/v1/models`` without it): an outage shows this fast.
    status_poll_interval_seconds: float = Field(5.0, gt=0)
    llm_status_poll_interval_seconds: float = Field(180.0, gt=0)

    # --- runtime ------------------------------------------------------------------------
    #: Run on uvloop when it is installed (``UVLOOP=0``: the stdlib asyncio loop).
    uvloop: bool = True

    # --- observability ------------------------------------------------------------------
    log_level: LogLevel = "INFO"
    #: Prometheus exposition on ``127.0.0.1:<port>``; off when unset.
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    @field_validator("redis_allow_plaintext")
    @classmethod
    def _no_plaintext_across_hosts(cls, allowed: bool, info: ValidationInfo) -> bool:
        url = info.data.get("redis_url")
        if url is None or allowed:
            return allowed
        parts = urlsplit(url.get_secret_value())
        if parts.scheme == "redis" and not _loopback(parts.hostname):
            raise ValueError(
                "REDIS_URL is plaintext redis:// to another host: use rediss:// "
                "(infra/README.md), or set REDIS_ALLOW_PLAINTEXT=true on a private network"
            )
        return allowed

    @field_validator("arq_redis_url")
    @classmethod
    def _arq_redis_url(cls, url: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if url is None:
            return None
        parts = urlsplit(url.get_secret_value())
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("must be rediss://[user:password@]host[:port][/db] (or redis://)")
        allowed = info.data.get("redis_allow_plaintext", False)
        if parts.scheme == "redis" and not _loopback(parts.hostname) and not allowed:
            raise ValueError(
                "plaintext redis:// to another host: use rediss://, or set "
                "REDIS_ALLOW_PLAINTEXT=true on a private network"
            )
        return url

    @model_validator(mode="after")
    def _liveness_outlasts_heartbeats(self) -> WorkerSettings:
        if self.worker_dead_after_ms < 2 * self.heartbeat_interval_ms:
            raise ValueError("WORKER_DEAD_AFTER_MS must be at least twice HEARTBEAT_INTERVAL_MS")
        return self

    @model_validator(mode="after")
    def _answer_fits_context(self) -> WorkerSettings:
        if self.agent_context_tokens is not None and (
            self.agent_max_tokens >= self.agent_context_tokens
        ):
            raise ValueError("AGENT_MAX_TOKENS must be smaller than AGENT_CONTEXT_TOKENS")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("agent_api_url", "agent_health_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    # --- derived values -------------------------------------------------------------
    @property
    def arq_url(self) -> SecretStr | None:
        """arq's Redis: ``ARQ_REDIS_URL``, else ``REDIS_URL`` unless that is a cluster."""
        if self.arq_redis_url is not None:
            return self.arq_redis_url
        return None if self.redis_cluster else self.redis_url

    @property
    def agent_base_url(self) -> str:
        """The openai ``base_url``: ``AGENT_API_URL`` without ``/chat/completions``."""
        url = self.agent_api_url
        suffix = "/chat/completions"
        return url[: -len(suffix)] if url.endswith(suffix) else url

    @property
    def health_url(self) -> str:
        """``AGENT_HEALTH_URL``, given or derived."""
        return self.agent_health_url or derive_health_url(self.agent_api_url)


def derive_health_url(agent_api_url: str) -> str:
    """The original's rule: the part of the agent URL before ``/v1/`` (or ``/v1``) + ``/health``."""
    url = agent_api_url.rstrip("/")
    index = url.find("/v1/")
    if index != -1:
        return url[:index] + "/health"
    if url.endswith("/v1"):
        return url[: -len("/v1")] + "/health"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/health"
