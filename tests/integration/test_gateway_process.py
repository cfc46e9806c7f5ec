"""The gateway as a process: refuses to start without a code, never logs secrets."""

from __future__ import annotations

import os
import subprocess
import sys

import aiohttp
import pytest

from tests.support.redis_server import RedisServer
from tests.support.system import System

pytestmark = pytest.mark.integration


def test_gateway_without_access_code_exits_with_one_clear_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHAT_PASSWORD"}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "CHAT_PASSWORD is required" in lines[0]


def test_invalid_setting_is_named_without_echoing_values() -> None:
    env = {**os.environ, "CHAT_PASSWORD": "s3cret-code", "PORT": "not-a-port"}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "PORT" in proc.stderr
    assert "s3cret-code" not in proc.stderr
    assert "not-a-port" not in proc.stderr


def test_a_bad_redis_url_is_explained_without_its_password() -> None:
    env = {
        **os.environ,
        "CHAT_PASSWORD": "s3cret-code",
        "REDIS_URL": "http://gateway:hunter2-pw@redis.internal:6379/0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("gateway: invalid configuration: REDIS_URL (must be rediss://")
    assert "hunter2-pw" not in proc.stderr


async def test_access_code_never_reaches_the_logs(
    system: System, redis_server: RedisServer
) -> None:
    secret = "very-secret-code-1234"
    gw = system.gateway(CHAT_PASSWORD=secret)
    base = f"http://127.0.0.1:{gw.port}"
    async with aiohttp.ClientSession() as s:
        await s.post(f"{base}/api/chat/logs/messages", json={"content": "hi", "accessCode": secret})
        await s.post(
            f"{base}/api/chat/logs/messages", json={"content": "hi", "accessCode": "bad-guess"}
        )
        await s.get(f"{base}/api/chat/logs/messages", params={"accessCode": secret})
        await s.get(f"{base}/api/health", params={"accessCode": secret})
        await s.get(f"{base}/api/nope", params={"accessCode": secret})
        async with s.ws_connect(f"{base}/api/chat?chatId=logs&accessCode={secret}") as ws:
            await ws.close()
    gw.stop()
    output = gw.output()
    assert "gateway.request_finished" in output
    assert secret not in output
    assert "bad-guess" not in output
