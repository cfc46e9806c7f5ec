"""Refusals are misconfiguration, not outages (issue 13): MOVED, ASK, CROSSSLOT, NOPERM,
WRONGTYPE, NOSCRIPT become BusRejected with Redis's words and a kind, counted per process;
a cluster without a master for a slot, or no node answering, is an outage."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterCrossSlotError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from bus import scripts
from bus.errors import (
    MISCONFIG_KINDS,
    BusRejected,
    BusUnavailable,
    as_bus_error,
    misconfigurations,
    translates_redis_errors,
)


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (ResponseError("MOVED 4882 127.0.0.1:42993"), "MOVED", "(MOVED): 4882 127.0.0.1:42993"),
        (MovedError("4882 127.0.0.1:42993"), "MOVED", "(MOVED): 4882 127.0.0.1:42993"),  # type: ignore[no-untyped-call]
        (AskError("12 127.0.0.1:7001"), "ASK", "(ASK): 12 127.0.0.1:7001"),  # type: ignore[no-untyped-call]
        (ResponseError("CROSSSLOT Keys in request don't hash to the same slot"), "CROSSSLOT", ""),
        (ClusterCrossSlotError(), "CROSSSLOT", "CROSSSLOT"),
        (
            RedisClusterException("EVALSHA - all keys must map to the same key slot"),
            "CROSSSLOT",
            "same key slot",
        ),
        (RedisClusterException("transaction is deprecated in cluster mode"), "CROSSSLOT", ""),
        (
            NoPermissionError("User worker has no permissions to run the 'keys' command"),
            "NOPERM",
            "(NOPERM): User worker",
        ),
        (
            ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
            "WRONGTYPE",
            "",
        ),
        (NoScriptError("No matching script."), "NOSCRIPT", "(NOSCRIPT): No matching"),
        (AuthenticationError("invalid username-password pair"), "AUTH", "invalid username"),
        (RedisClusterException("Cluster mode is not enabled on this node"), "CLUSTER", ""),
        (ResponseError("BUSYKEY Target key name already exists."), "OTHER", "BUSYKEY"),
    ],
)
def test_refusals_are_misconfiguration_with_their_words_and_kind(
    error: Exception, kind: str, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = misconfigurations()[kind]
    with caplog.at_level(logging.ERROR, logger="bus"):
        translated = as_bus_error(error)
    assert isinstance(translated, BusRejected)
    assert translated.kind == kind
    assert words in str(translated)
    assert misconfigurations()[kind] == before + 1
    assert any(
        "bus.misconfigured" in r.getMessage() and kind in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    "error",
    [
        ClusterDownError("CLUSTERDOWN The cluster is down"),  # type: ignore[no-untyped-call]
        TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),  # type: ignore[no-untyped-call]
        SlotNotCoveredError("Slot 1 is not covered by the cluster."),
        RedisClusterException("Redis Cluster cannot be connected. Please provide at least one"),
        RedisConnectionError("Connection refused"),
        # a blocking XREADGROUP whose stream a reshard moved (or a restart lost) under it
        ResponseError("UNBLOCKED the stream key no longer exists"),
        # a connection to a master that failed over and now serves as a replica
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("LOADING Redis is loading the dataset in memory"),
    ],
)
def test_cluster_outages_are_outages_and_not_counted(error: Exception) -> None:
    before = misconfigurations()
    assert isinstance(as_bus_error(error), BusUnavailable)
    assert misconfigurations() == before


def test_a_url_with_credentials_never_reaches_the_message_or_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="bus"):
        translated = as_bus_error(ResponseError("ERR bad rediss://worker:s3cret@redis:6380/0"))
    assert "s3cret" not in str(translated)
    assert all("s3cret" not in r.getMessage() for r in caplog.records)


def test_every_kind_is_listed_from_the_start() -> None:
    assert set(misconfigurations()) == set(MISCONFIG_KINDS)


async def test_the_cluster_clients_own_refusal_is_translated_at_the_boundary() -> None:
    """RedisClusterException is not a RedisError: without this it escaped as a 500."""

    @translates_redis_errors
    class Part:
        async def command(self) -> None:
            raise RedisClusterException("EVALSHA - all keys must map to the same key slot")

    with pytest.raises(BusRejected) as caught:
        await Part().command()
    assert caught.value.kind == "CROSSSLOT"


@pytest.mark.parametrize(
    "script", [scripts.APPEND, scripts.CHUNK, scripts.BEGIN, scripts.ACCEPT, scripts.FINISH]
)
def test_chat_scripts_spublish_on_a_cluster_and_publish_on_one_redis(script: str) -> None:
    assert scripts.for_layout(script, cluster=False) == script
    sharded = scripts.for_layout(script, cluster=True)
    assert "'PUBLISH'" not in sharded
    assert sharded.count("'SPUBLISH'") == script.count("'PUBLISH'") == 1


def test_gateway_and_worker_metrics_count_misconfiguration_by_kind() -> None:
    from prometheus_client import generate_latest

    from gateway.metrics import GatewayMetrics
    from worker.metrics import WorkerMetrics

    registries = [GatewayMetrics().registry, WorkerMetrics().registry]
    as_bus_error(ResponseError("WRONGTYPE Operation against a key holding the wrong kind"))
    wanted = misconfigurations()["WRONGTYPE"]
    for registry in registries:
        text = generate_latest(registry).decode()
        assert f'terrarium_redis_misconfig_total{{kind="WRONGTYPE"}} {float(wanted)}' in text
        assert 'terrarium_redis_misconfig_total{kind="MOVED"}' in text  # zero series too


async def test_a_connection_redis_py_tore_down_under_a_command_is_an_outage() -> None:
    """During a cluster failover redis-py writes on a connection it just closed:
    ``'NoneType' object has no attribute 'writelines'`` from inside redis-py."""
    from redis.crc import key_slot

    @translates_redis_errors
    class Part:
        async def inside_redis(self) -> None:
            key_slot(None)  # type: ignore[arg-type]  # AttributeError raised in redis/crc.py

        async def ours(self) -> None:
            raise AttributeError("a bug of ours")

    with pytest.raises(BusUnavailable):
        await Part().inside_redis()
    with pytest.raises(AttributeError, match="a bug of ours"):
        await Part().ours()


def test_redis_at_maxmemory_is_storage_full_not_a_refusal_or_an_unknown_error() -> None:
    """noeviction's OOM refusal means "full", whichever write met it: every caller answers
    it as it answers a message over the memory budget (the gateway: 503 "Terra is busy")."""
    from redis.exceptions import OutOfMemoryError

    from bus.errors import StorageFull

    before = misconfigurations()
    error = as_bus_error(OutOfMemoryError("command not allowed when used memory > 'maxmemory'."))
    assert isinstance(error, StorageFull)
    assert "maxmemory" in str(error)
    assert misconfigurations() == before  # not counted as misconfiguration
