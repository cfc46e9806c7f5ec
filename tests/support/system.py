"""Real processes for integration tests: gateway(s), worker(s) and the demo agent.

Each process is a subprocess with its own log file, so a test can kill (SIGKILL),
stop (SIGTERM) or restart any of them while the others keep running.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from demo.launcher import terminate
from tests.support.redis_server import RedisServer, free_port

__all__ = ["Process", "System", "sse_frames"]

ACCESS_CODE = "test-access-code"


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} never opened:\n{log.read_text()[-3000:]}")


class Process:
    """One child process of the system under test."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        workdir: Path,
        port: int | None = None,
    ) -> None:
        self.name, self.args, self.env, self.port = name, args, env, port
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            env={**os.environ, **self.env},
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
        if self.port is not None:
            _wait_port(self.port, self.proc, self.log)
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.pid

    def signal(self, sig: int) -> None:
        """Send ``sig`` (for example SIGTERM) without waiting for the process to exit."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 15) -> int | None:
        """Wait for the process to exit; its return code (``None`` if still running)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int | None:
        return terminate(self.proc, timeout) if self.proc else None

    def restart(self) -> None:
        self.stop()
        self.start()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class System:
    """Redis + demo agent + any number of gateways and workers, all real processes."""

    def __init__(self, workdir: Path, redis: RedisServer) -> None:
        self.workdir = workdir
        self.redis = redis
        self.processes: list[Process] = []
        self.agent_port = free_port()
        self.agent: Process | None = None

    @property
    def agent_base(self) -> str:
        return f"http://127.0.0.1:{self.agent_port}"

    def start_agent(self, token_delay_ms: float = 2) -> Process:
        self.agent = Process(
            "agent",
            [
                sys.executable,
                "-m",
                "demo.agent",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.agent_port),
                "--token-delay-ms",
                str(token_delay_ms),
            ],
            {},
            self.workdir,
            self.agent_port,
        ).start()
        self.processes.append(self.agent)
        return self.agent

    def gateway(self, name: str = "gateway", **env: str) -> Process:
        port = free_port()
        proc = Process(
            name,
            [sys.executable, "-m", "gateway"],
            {
                "CHAT_PASSWORD": ACCESS_CODE,
                "PORT": str(port),
                "REDIS_URL": self.redis.url,
                "LOG_LEVEL": "INFO",
                **env,
            },
            self.workdir,
            port,
        ).start()
        self.processes.append(proc)
        return proc

    def worker(self, name: str = "worker", **env: str) -> Process:
        proc = Process(
            name,
            [sys.executable, "-m", "worker"],
            {
                "REDIS_URL": self.redis.url,
                "AGENT_API_URL": f"{self.agent_base}/v1/chat/completions",
                "WORKER_NAME": name,
                "HEARTBEAT_INTERVAL_MS": "500",
                "LOG_LEVEL": "INFO",
                **env,
            },
            self.workdir,
        ).start()
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.kill()

    def dump_logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()[-4000:]}" for p in self.processes)


@contextmanager
def running_system(workdir: Path, redis: RedisServer) -> Iterator[System]:
    system = System(workdir, redis)
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
