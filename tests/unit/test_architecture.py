"""The architecture's rules, enforced by the test command: only bus/ talks to Redis, the
gateway and the worker meet only in bus, nothing imports its callers, and the tree is lint-clean.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.background import BackgroundCheck

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/setup dev,demo")
    return found


def test_import_contracts_hold() -> None:
    """pyproject.toml [tool.importlinter]: contracts checked by import-linter."""
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_is_clean_including_the_redis_ban() -> None:
    """ruff with TID251: `redis` may be imported in bus/ (and tests, the bare baseline) only."""
    result = subprocess.run(
        [_tool("ruff"), "check", "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_format_is_clean() -> None:
    """Every file is as ``ruff format`` writes it, so a diff shows only what changed."""
    result = subprocess.run(
        [_tool("ruff"), "format", "--check", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.background_check("mypy")
def test_mypy_is_clean(background_checks: dict[str, BackgroundCheck]) -> None:
    """mypy --strict over the packages configured in pyproject.toml (started in the
    background with the session: tests/conftest.py background_checks)."""
    result = background_checks["mypy"].result(timeout=110)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_bus_exports_its_front_ends_not_its_redis_plumbing() -> None:
    """Callers get role front ends, schemas' neighbours and errors; never a Redis client."""
    import bus

    assert sorted(bus.__all__) == sorted(
        [
            *("open_gateway_bus", "GatewayBus", "FeedStatus"),
            *("open_worker_bus", "WorkerBus", "ChatLog", "JobQueue", "JobRef", "ChatLease"),
            *("ChatAnswering", "JobClose", "Opening"),
            "Presence",
            *("open_arq_redis", "close_arq_redis", "BusSettings", "BusKeys"),
            "describe_settings_error",
            *("BusError", "BusUnavailable", "BusRejected", "BacklogFull", "ResumeGap"),
            *("misconfigurations", "RedisMisconfigCollector"),
            *("StorageFull", "TooManyWaiting", "QuotaExceeded"),
            *("SchemaError", "SlowConsumer", "LogRestarted"),
            *("AcceptedMessage", "Delivery", "EventRecord", "RateDecision", "Budget"),
            *("compare_ids", "is_stream_id", "is_valid_chat_id"),
            *("ByoAccepted", "ChatModeConflict", "ReplyInProgress"),
        ]
    )
    assert not hasattr(bus, "create_redis")
