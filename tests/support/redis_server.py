"""A private ``redis-server`` per test: free port, own directory, restartable and killable."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from demo.launcher import find_redis_server, free_port, redis_server_args
from tests.support.wait import wait_until_sync

__all__ = ["RedisServer", "free_port", "redis_server_binary"]


def redis_server_binary() -> str | None:
    """The redis-server the tests use (Redis 7 preferred; see ``find_redis_server``)."""
    return os.environ.get("REDIS_SERVER_BIN") or find_redis_server()


class RedisServer:
    """Owns one redis-server process; ``url`` points at it."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra: list[str] | None = None,
        binary: str | None = None,
    ):
        self.workdir = workdir
        self.port = port or free_port()
        self.extra = list(extra or [])
        self.proc: subprocess.Popen[bytes] | None = None
        binary = binary or redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server binary found")
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, appendonly: bool = False) -> RedisServer:
        args = redis_server_args(
            self.binary,
            self.port,
            self.workdir,
            appendonly=appendonly,
            extra=["--logfile", str(self.workdir / "redis.log"), *self.extra],
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Return once the server answers PING; fail at once if it exited."""

        def pong() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.workdir / "redis.log").read_text()[-500:]
                raise RuntimeError(f"redis-server exited: {log}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")

        wait_until_sync(
            pong, timeout, f"redis-server on port {self.port}", interval=0.05, ignore=(OSError,)
        )

    def stop(self) -> None:
        """Graceful stop (SIGTERM); AOF is flushed."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """Hard stop (SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, *, appendonly: bool = False, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start(appendonly=appendonly)
