"""The real system under test, started as subprocesses by demo.launcher (`python -m demo`)."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from demo.launcher import LaunchOptions, free_port
from tests.support.launcher import TestLauncher

ACCESS_CODE = "e2e-access-code"


@dataclass
class RunningSystem:
    """One running system (Redis, demo agent, gateway, worker) and its gateway's kill switch."""

    launcher: TestLauncher
    url: str
    access_code: str

    def kill_gateway(self) -> None:
        """SIGKILL the gateway: no close frames, no goodbye, like a crash."""
        self.launcher.kill_gateway()

    def start_gateway(self) -> None:
        """Start a new gateway on the same port, with the environment the launcher gives it."""
        self.launcher.start_gateway()

    def pause_worker(self) -> None:
        """SIGSTOP every worker: its heartbeat stops, queued jobs wait."""
        for worker in self.launcher.workers:
            worker.signal(signal.SIGSTOP)

    def resume_worker(self) -> None:
        """SIGCONT every worker paused by pause_worker."""
        for worker in self.launcher.workers:
            worker.signal(signal.SIGCONT)

    def fail_agent(self, count: int, mode: str = "http500") -> None:
        """Make the demo agent fail its next `count` completion requests (POST /_demo/fail)."""
        base = self.launcher.agent_url.split("/v1/", 1)[0]
        body = json.dumps({"count": count, "mode": mode}).encode()
        request = urllib.request.Request(
            f"{base}/_demo/fail", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def logs(self, tail: int = 4000) -> str:
        """The end of every child's log, for failure messages."""
        parts = []
        for log in sorted(self.launcher.tmpdir.glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)


def start_system(
    extra_env: Mapping[str, str] | None = None, *, workers: int = 1
) -> Iterator[RunningSystem]:
    """Start Redis, demo agent, gateway and ``workers`` workers; stop them all afterwards."""
    options = LaunchOptions(
        port=free_port(),
        access_code=ACCESS_CODE,
        workers=workers,
        quiet=True,
        # Tests send more messages per minute than a visitor would.
        extra_env={
            "RATE_LIMIT_MAX_PER_IP": "10000",
            "RATE_LIMIT_MAX_PER_CHAT": "10000",
            "MAX_QUEUED_PER_CLIENT": "10000",
            "CLIENT_BYTES_PER_DAY": "100000000000",
            **(extra_env or {}),
        },
    )
    launcher = TestLauncher(options)
    try:
        launcher.start()
    except Exception:
        launcher.kill_all()
        raise
    try:
        yield RunningSystem(launcher=launcher, url=launcher.url, access_code=ACCESS_CODE)
    finally:
        launcher.kill_all()
