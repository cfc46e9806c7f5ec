"""The bus's settings: where Redis is, how to reach it, and the storage policy.

Every process (gateway, worker, operators' console) loads the same ``BusSettings``, so the
storage policy a chat is written with does not depend on which process writes it. The role
settings (``GatewaySettings``, ``WorkerSettings``) extend this class: one env file carries
both, under the names the project has always used (``REDIS_URL``, ``REDIS_KEY_PREFIX``,
``REDIS_CA_CERT``, ``CHAT_RETENTION_HOURS``, ``EVENTS_MAXLEN``, ...).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.chatlog import ChatLimits
from bus.client import RedisOptions
from bus.keys import MAX_PARTITIONS, BusKeys

__all__ = ["BusSettings", "describe_settings_error"]


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BusSettings(BaseSettings):
    """Redis connection and storage policy; shared by every process."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # --- connection ----------------------------------------------------------------------
    #: ``rediss://user:password@host:port/0`` in production; ``redis://`` for development.
    #: Required: a process never guesses where its Redis is.
    redis_url: SecretStr
    #: CA bundle that signed the Redis server's certificate (``rediss://`` only).
    redis_ca_cert: str | None = None
    #: Client certificate and key, when Redis asks for mutual TLS.
    redis_client_cert: str | None = None
    redis_client_key: str | None = None
    #: Every key, stream and channel lives under ``<prefix>:``.
    redis_key_prefix: str = Field("terra", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    #: Redis Cluster: ``REDIS_URL`` names any one node (database 0); the client finds the
    #: rest. Implies the partitioned key layout (bus/keys.py).
    redis_cluster: bool = False
    #: Key partitions (1..1024): a chat's keys, its jobs and its queue live in one of them.
    #: 1 without a cluster is the legacy layout (the key names of every release so far);
    #: unset with REDIS_CLUSTER means 16. A single Redis moves between layouts with
    #: ``terrarium-ops layout migrate``.
    redis_partitions: int | None = Field(None, ge=1, le=MAX_PARTITIONS)
    #: More cluster nodes to start from, ``host:port,host:port`` (credentials and TLS as in
    #: ``REDIS_URL``): a process that starts while ``REDIS_URL``'s node is down still finds
    #: the cluster through one of these. Only with ``REDIS_CLUSTER``.
    redis_cluster_nodes: str = ""

    # --- storage policy (written by every process the same way) --------------------------
    #: A chat's keys expire this long after its last event. Three days: a visitor who comes
    #: back to the site within days finds the chat, and an anonymous visitor's words are not
    #: kept a week for nothing (every event refreshes the TTL, so a live chat never expires).
    chat_retention_hours: float = Field(24 * 3, gt=0, le=24 * 366)
    #: A chat's event log keeps about this many newest events.
    events_maxlen: int = Field(5000, ge=10, le=1_000_000)
    #: A chat's message stream keeps about this many newest messages.
    messages_maxlen: int = Field(1000, ge=10, le=100_000)
    #: How long a ``clientMessageId`` is remembered (never longer than the retention).
    idempotency_ttl_seconds: int = Field(24 * 3600, ge=1)
    #: At most this many unfinished jobs (waiting or in progress); past it a visitor's message
    #: is refused with 503 and Retry-After, never accepted and then dropped. Partitioned
    #: (REDIS_PARTITIONS > 1 or a cluster), each partition holds its even share (rounded up).
    jobs_maxlen: int = Field(10_000, ge=1)
    #: Messages one client (address or IPv6 prefix) may have waiting for Terra; past it
    #: its next message gets 429 and Retry-After. Jobs are served round robin by client.
    #: Partitioned, the count is kept per partition (a client's lane lives in its chat's
    #: partition): a client whose chats fall in several partitions may have this many
    #: waiting in each. CLIENT_BYTES_PER_DAY stays one budget per client in every layout.
    max_queued_per_client: int = Field(10, ge=1, le=100_000)
    #: New messages are refused with 503 "Terra is busy" once Redis uses this much memory
    #: (MB). 0: 80% of Redis's ``maxmemory`` (the room above is for replies to what was
    #: accepted; Redis must run ``noeviction``); no budget when Redis has no maxmemory.
    #: -1: no budget.
    redis_memory_budget_mb: float = Field(0, ge=-1)
    #: Bytes one client may have stored per day: each message's JSON (message, state, job)
    #: plus REPLY_BYTES_RESERVED for its reply; past it, 429 with Retry-After. Over the
    #: 3-day retention one client keeps at most 3 x 4 MiB, about 6% of the default memory
    #: budget (80% of 256 MB).
    client_bytes_per_day: int = Field(4 * 1024 * 1024, ge=1024)
    reply_bytes_reserved: int = Field(16 * 1024, ge=0)
    #: Bytes of visitor messages one chat may hold over its life; past it, 409 (start a new
    #: chat). With MESSAGES_MAXLEN and EVENTS_MAXLEN, the per-chat caps.
    chat_max_bytes: int = Field(1024 * 1024, ge=1024)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("must be rediss://[user:password@]host[:port][/db] (or redis://)")
        return value

    @field_validator("redis_cluster")
    @classmethod
    def _cluster_db(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("redis_url")
        if value and isinstance(url, SecretStr):
            db = urlsplit(url.get_secret_value()).path.strip("/")
            if db not in ("", "0"):
                raise ValueError("a cluster has only database 0: REDIS_URL must not name another")
        return value

    @field_validator("redis_cluster_nodes")
    @classmethod
    def _cluster_nodes(cls, value: str, info: ValidationInfo) -> str:
        if value.strip() and not info.data.get("redis_cluster"):
            raise ValueError("lists cluster nodes: set REDIS_CLUSTER=true too, or leave it empty")
        for node in _split_nodes(value):
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"must be host:port[,host:port...]; {node!r} is not")
        return value

    # --- derived ----------------------------------------------------------------------------
    @property
    def cluster_seeds(self) -> tuple[tuple[str, int], ...]:
        """``REDIS_CLUSTER_NODES`` as ``(host, port)`` pairs."""
        pairs = (node.rpartition(":") for node in _split_nodes(self.redis_cluster_nodes))
        return tuple((host.strip("[]"), int(port)) for host, _, port in pairs)

    @property
    def partitions(self) -> int:
        """Key partitions in use: REDIS_PARTITIONS, else 16 on a cluster, else 1."""
        if self.redis_partitions is not None:
            return self.redis_partitions
        return 16 if self.redis_cluster else 1

    @property
    def bus_keys(self) -> BusKeys:
        """The key layout of this deployment (prefix, partitions, cluster)."""
        return BusKeys(self.redis_key_prefix, self.partitions, self.redis_cluster)

    @property
    def limits(self) -> ChatLimits:
        """The storage policy as the chat log applies it."""
        retention_ms = int(self.chat_retention_hours * 3600 * 1000)
        return ChatLimits(
            events_maxlen=self.events_maxlen,
            messages_maxlen=self.messages_maxlen,
            retention_ms=retention_ms,
            # The idempotency record holds the message's content: it never outlives the chat.
            idempotency_ttl_ms=min(self.idempotency_ttl_seconds * 1000, retention_ms),
            jobs_maxlen=self.jobs_maxlen,
            queued_per_client=self.max_queued_per_client,
            memory_budget_bytes=-1
            if self.redis_memory_budget_mb < 0
            else int(self.redis_memory_budget_mb * 1024 * 1024),
            client_bytes_per_window=self.client_bytes_per_day,
            reply_bytes_reserved=self.reply_bytes_reserved,
            chat_max_bytes=self.chat_max_bytes,
        )

    def redis_options(
        self, *, socket_timeout: float | None = 5.0, max_connections: int = 64
    ) -> RedisOptions:
        """Connection options with this deployment's TLS files."""
        return RedisOptions(
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            ssl_ca_certs=self.redis_ca_cert,
            ssl_certfile=self.redis_client_cert,
            ssl_keyfile=self.redis_client_key,
            seeds=self.cluster_seeds,
        )

    @property
    def redis_tls(self) -> bool:
        """True when the Redis URL uses TLS (``rediss://``)."""
        return urlsplit(self.redis_url.get_secret_value()).scheme == "rediss"

    @property
    def redis_insecure(self) -> bool:
        """True for a plaintext connection to a non-loopback host (worth a warning)."""
        host = urlsplit(self.redis_url.get_secret_value()).hostname
        return not self.redis_tls and not _is_loopback(host)

    @property
    def redis_endpoint(self) -> str:
        """``scheme://host:port`` of Redis, safe to log (no credentials)."""
        parts = urlsplit(self.redis_url.get_secret_value())
        port = f":{parts.port}" if parts.port else ""
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        return f"{parts.scheme}://{host}{port}"


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each bad setting (as its env name) and why, never echoing a value."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        name = str(err["loc"][0]).upper() if err["loc"] else "settings"
        reason = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{name} ({reason})")
    return "; ".join(sorted(set(problems)))


def _split_nodes(value: str) -> list[str]:
    return [node.strip() for node in value.split(",") if node.strip()]
