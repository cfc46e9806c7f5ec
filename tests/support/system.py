"""Real processes for integration and fault tests: gateway(s), worker(s) and the demo agent.

Built on the demo's launcher (``tests.support.launcher.TestLauncher``): the same commands
``python -m demo`` runs, each a subprocess with its own log file, so a test can kill
(SIGKILL), stop (SIGTERM) or restart any of them while the others keep running. Redis is a
``tests.support.redis_server.RedisServer`` the test owns (it restarts and kills it too), or a
``tests.support.redis_cluster.RedisCluster``: then every gateway and worker runs with
``REDIS_CLUSTER=true`` (and ``REDIS_PARTITIONS`` when given), ``REDIS_URL`` naming a seed node.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from demo.launcher import LaunchOptions, free_port
from tests.support.launcher import Process, TestLauncher
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer

__all__ = ["ACCESS_CODE", "Process", "System", "running_system", "sse_frames"]

ACCESS_CODE = "test-access-code"


class System:
    """Redis + demo agent + any number of gateways and workers, all real processes."""

    def __init__(
        self,
        workdir: Path,
        redis: RedisServer | RedisCluster,
        *,
        partitions: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.redis = redis
        #: Settings every gateway and worker gets (a test's ``env`` still wins).
        self.bus_env: dict[str, str] = {}
        if isinstance(redis, RedisCluster):
            self.bus_env["REDIS_CLUSTER"] = "true"
        if partitions is not None:
            self.bus_env["REDIS_PARTITIONS"] = str(partitions)
        self.agent_port = free_port()
        self.agent: Process | None = None
        self.launcher = TestLauncher(
            LaunchOptions(
                access_code=ACCESS_CODE,
                redis_url=redis.url,
                agent_url=f"{self.agent_base}/v1/chat/completions",
                quiet=True,
                workdir=workdir,
            )
        )

    @property
    def agent_base(self) -> str:
        """The demo agent's base URL (``http://127.0.0.1:<port>``)."""
        return f"http://127.0.0.1:{self.agent_port}"

    @property
    def processes(self) -> list[Process]:
        """Every process started so far, oldest first."""
        return [p for p in self.launcher.children if isinstance(p, Process)]

    def start_agent(self, token_delay_ms: float = 2) -> Process:
        """The demo agent, streaming a token every ``token_delay_ms``."""
        self.agent = self.launcher.add_agent(
            self.agent_port, "--token-delay-ms", str(token_delay_ms)
        )
        return self.agent

    def gateway(self, name: str = "gateway", **env: str) -> Process:
        """A gateway on a free port (``env``: settings that override the defaults).

        Every test client comes from 127.0.0.1, one client to the gateway's per-client
        budgets: reads, stream handshakes, open sockets, waiting messages and stored bytes are
        raised so hundreds of test readers fit (test_abuse_limits.py, test_abuse_storage.py
        and test_fair_scheduling.py in tests/integration test the budgets themselves).
        """
        many = {
            "RATE_LIMIT_READS_PER_IP": "100000",
            "RATE_LIMIT_STREAMS_PER_IP": "100000",
            "MAX_SOCKETS_PER_CLIENT": "100000",
            "READS_IN_FLIGHT_PER_CLIENT": "100000",
            "MAX_QUEUED_PER_CLIENT": "100000",
            "CLIENT_BYTES_PER_DAY": "100000000000",
            "CHAT_MAX_BYTES": "100000000000",
        }
        settings = {"LOG_LEVEL": "INFO", **many, **self.bus_env, **env}
        return self.launcher.add_gateway(name, free_port(), settings)

    def worker(self, name: str = "worker", **env: str) -> Process:
        """A worker named ``name`` with a 500 ms heartbeat (``env`` overrides)."""
        defaults = {"WORKER_NAME": name, "HEARTBEAT_INTERVAL_MS": "500", "LOG_LEVEL": "INFO"}
        return self.launcher.add_worker(name, {**defaults, **self.bus_env, **env})

    def close(self) -> None:
        """SIGKILL every process, newest first."""
        for proc in reversed(self.processes):
            proc.kill()

    def dump_logs(self) -> str:
        """The end of every process's log, for failure messages."""
        return "\n".join(f"--- {p.name} ---\n{p.output()[-4000:]}" for p in self.processes)


@contextmanager
def running_system(
    workdir: Path, redis: RedisServer | RedisCluster, *, partitions: int | None = None
) -> Iterator[System]:
    """A :class:`System`; its logs are printed when the body fails, its processes killed."""
    system = System(workdir, redis, partitions=partitions)
    try:
        yield system
    except BaseException:
        print(system.dump_logs())
        raise
    finally:
        system.close()


def sse_frames(raw: bytes) -> list[dict[str, Any]]:
    """Parse the ``data:`` payloads of an SSE byte stream (ignoring pings)."""
    frames = []
    for block in raw.decode().split("\n\n"):
        data = [line[5:].lstrip() for line in block.splitlines() if line.startswith("data:")]
        if data:
            frames.append(json.loads("\n".join(data)))
    return frames
