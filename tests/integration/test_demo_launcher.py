"""`python -m demo` as a newcomer runs it: the printed URL and access code work, even when
the wanted port is taken, and Ctrl-C/SIGTERM stops everything it started."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.launcher import ChildFailed, Launcher, LaunchOptions, port_is_free
from tests.support.wait import wait_until_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCESS_CODE = "launcher-test-code"


class Demo:
    """``python -m demo --quiet`` as a subprocess, its stdout collected line by line."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AGENT_API_URL")}
        env["CHAT_PASSWORD"] = ACCESS_CODE
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo", "--quiet", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def banner_url(self) -> str:
        """The URL of the "running at" line, once printed (fails if the demo exits first)."""

        def printed() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited ({self.proc.returncode}):\n{self.text}")
            match = re.search(r"running at (http://\S+)", self.text)
            return match[1] if match else None

        return wait_until_sync(printed, 90, f"the demo's banner; output so far:\n{self.text}")

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C would; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            self._reader.join(5)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_port_is_free_sees_a_listening_socket(taken_port: int) -> None:
    assert not port_is_free("127.0.0.1", taken_port)


def test_demo_moves_to_a_free_port_and_says_so_when_the_port_is_taken(taken_port: int) -> None:
    demo = Demo("--port", str(taken_port))
    try:
        url = demo.banner_url()
        assert f"port {taken_port} is in use" in demo.text
        assert f":{taken_port}/" not in url
        # The printed URL and access code belong to this demo's gateway.
        assert _status(f"{url}healthz") == 200
        assert _status(f"{url}api/chat/launcher/messages?accessCode={ACCESS_CODE}") == 200
        assert _status(f"{url}api/chat/launcher/messages?accessCode=wrong") == 401
    finally:
        code = demo.stop()
    assert code == 0, demo.text
    assert "Traceback" not in demo.text
    port = int(url.rsplit(":", 1)[1].strip("/"))
    assert port_is_free("127.0.0.1", port), "the demo's gateway outlived the demo"


def test_the_printed_url_finds_the_worker_checked_in() -> None:
    """The banner means the whole system is up: a visitor who opens the URL at once must not
    be told that Terra is away because the worker had not published its first heartbeat."""
    demo = Demo()
    try:
        url = demo.banner_url()
        with urllib.request.urlopen(f"{url}api/health?accessCode={ACCESS_CODE}", timeout=10) as r:
            health = json.load(r)
        worker = next(node for node in health["chain"] if node["id"] == "worker")
        assert health["workerReady"], health
        assert worker["status"] == "online", worker
    finally:
        code = demo.stop()
    assert code == 0, demo.text


def test_a_worker_that_never_checks_in_fails_the_start_with_its_reason(tmp_path: Path) -> None:
    launcher = Launcher(
        LaunchOptions(quiet=True, workdir=tmp_path, redis_url="redis://127.0.0.1:1")
    )
    try:
        with pytest.raises(ChildFailed) as failed:
            launcher.add_worker("worker0", {"HEARTBEAT_INTERVAL_MS": "-1"}, ready_within=60)
    finally:
        launcher.stop()
    assert "worker0 never checked in" in str(failed.value)
    assert "HEARTBEAT_INTERVAL_MS" in str(failed.value)  # the worker's own one-line refusal
