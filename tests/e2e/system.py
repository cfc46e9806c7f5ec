"""The real system under test, started as subprocesses by demo.launcher (`python -m demo`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from demo.launcher import Launcher, LaunchOptions, free_port, wait_for_port

ACCESS_CODE = "e2e-access-code"


@dataclass
class RunningSystem:
    """One running system (Redis, demo agent, gateway, worker) and its gateway's kill switch."""

    launcher: Launcher
    url: str
    access_code: str

    @property
    def gateway(self) -> subprocess.Popen[bytes]:
        for proc in self.launcher.children:
            if isinstance(proc.args, list | tuple) and str(proc.args[-1]) == "gateway":
                return proc
        raise LookupError("the launcher started no gateway")

    def kill_gateway(self) -> None:
        """SIGKILL the gateway: no close frames, no goodbye, like a crash."""
        proc = self.gateway
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def start_gateway(self) -> None:
        """Start a new gateway on the same port, with the environment the launcher gives it."""
        launcher = self.launcher
        options = launcher.options
        env = {
            **os.environ,
            "REDIS_URL": launcher.redis_url,
            **options.extra_env,
            "CHAT_PASSWORD": self.access_code,
            "HOST": options.host,
            "PORT": str(options.port),
            "DEMO_AGENT": "true" if launcher.demo_agent else "false",
        }
        old = self.gateway
        with (launcher.tmpdir / "gateway.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway"],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        launcher.children[launcher.children.index(old)] = proc
        wait_for_port(options.host, options.port, 20, proc)

    def logs(self, tail: int = 4000) -> str:
        """The end of every child's log, for failure messages."""
        parts = []
        for log in sorted(self.launcher.tmpdir.glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)


def start_system() -> Iterator[RunningSystem]:
    """Start Redis, demo agent, gateway and worker; stop them all afterwards."""
    options = LaunchOptions(
        port=free_port(),
        access_code=ACCESS_CODE,
        quiet=True,
        # Tests send more messages per minute than a visitor would.
        extra_env={"RATE_LIMIT_MAX_PER_IP": "10000", "RATE_LIMIT_MAX_PER_CHAT": "10000"},
    )
    launcher = Launcher(options)
    try:
        launcher.start()
    except Exception:
        launcher.stop()
        raise
    try:
        yield RunningSystem(launcher=launcher, url=launcher.url, access_code=ACCESS_CODE)
    finally:
        launcher.stop()
