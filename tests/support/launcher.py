"""The demo's launcher with the abilities only tests need: crash, restart and pause parts.

Product code (``demo.launcher``) keeps what ``python -m demo`` needs; what a test does to a
running system (SIGKILL the gateway and start it again on the same port, SIGSTOP the
workers, restart any process) lives here.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Mapping, Sequence
from typing import cast

from demo.launcher import Child, Launcher

__all__ = ["Process", "TestLauncher"]


class Process(Child):
    """A child a test may also restart."""

    @property
    def http(self) -> int:
        """The port this child serves HTTP on (a gateway, the agent, a ready worker's metrics)."""
        if self.port is None:
            raise RuntimeError(f"{self.name} serves no port")
        return self.port

    def restart(self) -> None:
        """Stop (SIGTERM) and start again with the same command, environment and port."""
        self.stop()
        self.start()


class TestLauncher(Launcher):
    """A :class:`~demo.launcher.Launcher` whose parts a test can crash and bring back."""

    __test__ = False  # not a test class, whatever pytest's name pattern says
    child_type = Process

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        port: int | None = None,
        ready_within: float | None = 20.0,
        host: str | None = None,
    ) -> Process:
        """As :meth:`Launcher.spawn`, typed as the restartable :class:`Process`."""
        child = super().spawn(name, args, env, port=port, ready_within=ready_within, host=host)
        return cast(Process, child)

    def add_agent(self, port: int, *args: str) -> Process:
        """As :meth:`Launcher.add_agent`, typed as :class:`Process`."""
        return cast(Process, super().add_agent(port, *args))

    def add_gateway(self, name: str, port: int, env: Mapping[str, str]) -> Process:
        """As :meth:`Launcher.add_gateway`, typed as :class:`Process`."""
        return cast(Process, super().add_gateway(name, port, env))

    def add_worker(
        self, name: str, env: Mapping[str, str], *, ready_within: float | None = None
    ) -> Process:
        """As :meth:`Launcher.add_worker`, typed as :class:`Process`."""
        return cast(Process, super().add_worker(name, env, ready_within=ready_within))

    def kill_gateway(self) -> None:
        """SIGKILL the gateway (a crash: no close frames); the rest keeps running."""
        if self.gateway is not None:
            self.gateway.kill()

    def start_gateway(self) -> None:
        """Start the gateway again on the same port, same environment; wait until it listens."""
        old = self.gateway
        if old is None:
            raise RuntimeError("no gateway was started")
        if old in self.children:
            self.children.remove(old)
        self.gateway = self.spawn(old.name, old.args, old.env, port=old.port)

    def kill_all(self) -> None:
        """SIGKILL every child, newest first, and remove the launcher's own work directory.

        The end of a test's system: nothing in it is checked any more, so the graceful
        :meth:`~demo.launcher.Launcher.stop` (SIGTERM, each child's shutdown grace) would
        only cost seconds per system.
        """
        for child in reversed(self.children):
            child.kill()
        self.children.clear()
        if self._own_workdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def pause_workers(self) -> None:
        """SIGSTOP every running worker: heartbeats stop, queued jobs wait."""
        for worker in self.workers:
            worker.signal(signal.SIGSTOP)

    def resume_workers(self) -> None:
        """SIGCONT the workers paused by :meth:`pause_workers`."""
        for worker in self.workers:
            worker.signal(signal.SIGCONT)
