"""Issue 10: the gateway runs on uvloop when installed; ``UVLOOP=0`` is the off switch."""

from __future__ import annotations

import asyncio

import pytest

from gateway.__main__ import event_loop
from gateway.settings import GatewaySettings


def test_uvloop_is_used_when_installed_and_wanted() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = event_loop(True)
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_the_off_switch_gives_the_stdlib_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UVLOOP", "0")
    settings = GatewaySettings(_env_file=None, chat_password="code", redis_url="redis://h:1/0")
    assert settings.uvloop is False
    loop = event_loop(settings.uvloop)
    try:
        assert type(loop).__module__.startswith("asyncio")
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
