"""A background check runs once however many test processes claim it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests.support.background import BackgroundResult, BackgroundRun, start_or_follow

COMMAND = [sys.executable, "-c", "import sys; print('checked'); sys.exit(3)"]


def test_the_second_claimant_follows_the_first_ones_run(tmp_path: Path) -> None:
    first = start_or_follow(COMMAND, cwd=tmp_path, shared=tmp_path, name="c", nice=0, linger=0)
    second = start_or_follow(COMMAND, cwd=tmp_path, shared=tmp_path, name="c", nice=0, linger=0)
    try:
        assert isinstance(first, BackgroundRun)
        assert isinstance(second, BackgroundResult)
        followed = second.result(timeout=30)
        assert (followed.returncode, followed.stdout) == (3, "checked\n")
        own = first.result(timeout=30)
        assert (own.returncode, own.stdout) == (3, "checked\n")
    finally:
        first.stop()
        second.stop()


def test_a_run_still_going_at_the_end_is_killed_after_its_linger(tmp_path: Path) -> None:
    waits_for_a_signal = [sys.executable, "-c", "import signal; signal.pause()"]
    run = BackgroundRun(waits_for_a_signal, cwd=tmp_path, workdir=tmp_path / "w", linger=0.1)
    run.stop()
    assert run.proc.returncode == -signal.SIGKILL
