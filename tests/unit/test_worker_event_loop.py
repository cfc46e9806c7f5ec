"""Issue 10: the worker runs on uvloop when installed; ``UVLOOP=0`` is the off switch."""

from __future__ import annotations

import pytest

from worker.__main__ import loop_factory
from worker.settings import WorkerSettings


def test_uvloop_is_used_when_installed_and_wanted() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory(True) is uvloop.new_event_loop


def test_the_off_switch_gives_the_stdlib_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UVLOOP", "0")
    settings = WorkerSettings(
        redis_url="redis://127.0.0.1:1/0", agent_api_url="http://127.0.0.1:1/v1", _env_file=None
    )
    assert settings.uvloop is False
    assert loop_factory(settings.uvloop) is None
