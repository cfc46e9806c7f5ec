"""A long check (say, mypy over the tree) started in a process of its own while other tests
run, its result collected later by the test that asserts on it.

The test command runs one test at a time; most unit tests keep one core busy and leave the
other idle. A check that takes half a minute and reads only files can use that core.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["BackgroundRun"]


class BackgroundRun:
    """One command, started at once; its output goes to files (a pipe could fill and block it)."""

    def __init__(self, args: list[str], *, cwd: Path, workdir: Path) -> None:
        self.args = args
        workdir.mkdir(parents=True, exist_ok=True)
        self._stdout = workdir / "stdout"
        self._stderr = workdir / "stderr"
        with self._stdout.open("wb") as out, self._stderr.open("wb") as err:
            self.proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=err)

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
