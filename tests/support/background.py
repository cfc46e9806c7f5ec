"""A long check (say, mypy over the tree) started in a process of its own while other tests
run, its result collected later by the test that asserts on it.

Most tests wait on real processes (Redis, gateways, workers, a browser) more than they
compute: a check that takes half a minute of CPU and reads only files can run on what they
leave idle. When the test command runs in several processes (pytest-xdist), the first one to
claim a check starts it and the others read its result from the files it leaves, so it runs
once whichever process holds the test that collects it.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Protocol

from tests.support.wait import wait_until_sync

__all__ = ["BackgroundCheck", "BackgroundResult", "BackgroundRun", "start_or_follow"]

#: The file a finished run leaves in its workdir: its exit status, written last.
RETURNCODE = "returncode"


class BackgroundCheck(Protocol):
    """A check running in the background, as the test that collects it sees it."""

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Wait for the command to end and return its status and output."""
        ...

    def stop(self) -> None:
        """Release the check at the end of the session."""
        ...


class BackgroundRun:
    """One command, started at once; its output goes to files (a pipe could fill and block it)."""

    def __init__(
        self, args: list[str], *, cwd: Path, workdir: Path, nice: int = 0, linger: float = 0.0
    ) -> None:
        """Start ``args`` in ``cwd``, its output in ``workdir``, at niceness ``nice`` (0 to 19:
        19 runs only on CPU time nothing else wants). ``linger``: seconds :meth:`stop` lets
        an unfinished run go on, for a test in another process that may still collect it."""
        self.args = args
        self._workdir = workdir
        self._linger = linger
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
        threading.Thread(target=self._record_exit, name="background-check", daemon=True).start()

    def _record_exit(self) -> None:
        """Leave the exit status beside the output once the command ends (other processes
        wait for that file)."""
        code = self.proc.wait()
        partial = self._workdir / f"{RETURNCODE}.partial"
        partial.write_text(str(code))
        partial.replace(self._workdir / RETURNCODE)

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Wait for the command to end (``subprocess.TimeoutExpired`` after ``timeout``)."""
        code = self.proc.wait(timeout)
        return subprocess.CompletedProcess(
            self.args, code, self._stdout.read_text(), self._stderr.read_text()
        )

    def stop(self) -> None:
        """Kill the command if it still runs (after ``linger`` seconds)."""
        if self.proc.poll() is None:
            try:
                self.proc.wait(self._linger)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class BackgroundResult:
    """A run another test process started: its result read from the files it leaves."""

    def __init__(self, args: list[str], *, workdir: Path) -> None:
        self.args = args
        self._workdir = workdir

    def result(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Wait for the other process's run to leave its exit status."""
        status = self._workdir / RETURNCODE
        wait_until_sync(status.is_file, timeout, f"{self.args} run by another test process")
        return subprocess.CompletedProcess(
            self.args,
            int(status.read_text()),
            (self._workdir / "stdout").read_text(),
            (self._workdir / "stderr").read_text(),
        )

    def stop(self) -> None:
        """Nothing to release: the process that started the run stops it."""


def start_or_follow(
    args: list[str], *, cwd: Path, shared: Path, name: str, nice: int, linger: float
) -> BackgroundCheck:
    """Start ``args`` unless another process sharing ``shared`` claimed ``name`` first; then
    follow that process's run."""
    workdir = shared / f"background-{name}"
    try:
        os.close(os.open(shared / f"background-{name}.claim", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return BackgroundResult(args, workdir=workdir)
    return BackgroundRun(args, cwd=cwd, workdir=workdir, nice=nice, linger=linger)
