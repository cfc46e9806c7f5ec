"""A long check (say, mypy over the tree) started in a process of its own while other tests
run, its result collected later by the test that asserts on it.

The test command runs one test at a time, and most tests wait on real processes (Redis,
gateways, workers, a browser) more than they compute: a check that takes half a minute of
CPU and reads only files can run on what they leave idle.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["BackgroundRun"]


class BackgroundRun:
    """One command, started at once; its output goes to files (a pipe could fill and block it)."""

    def __init__(self, args: list[str], *, cwd: Path, workdir: Path, nice: int = 0) -> None:
        """Start ``args`` in ``cwd``, its output in ``workdir``, at niceness ``nice`` (0 to 19:
        19 runs only on CPU time nothing else wants)."""
        self.args = args
        workdir.mkdir(parents=True, exist_ok=True)
        self._stdout = workdir / "stdout"
        self._stderr = workdir / "stderr"
        with self._stdout.open("wb") as out, self._stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                args,
                cwd=cwd,
                stdout=out,
                stderr=err,
                preexec_fn=(lambda: os.nice(nice)) if nice else None,
            )

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Wait for the command to end (``subprocess.TimeoutExpired`` after ``timeout``)."""
        code = self.proc.wait(timeout)
        return subprocess.CompletedProcess(
            self.args, code, self._stdout.read_text(), self._stderr.read_text()
        )

    def stop(self) -> None:
        """Kill the command if it still runs (the session ended before its test)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
