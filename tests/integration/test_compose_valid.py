"""compose.yaml is a valid Compose file (checked by the compose CLI, no engine needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
SERVICES = {"redis", "gateway", "worker", "demo-agent", "redis-exporter", "prometheus", "grafana"}


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_config_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_defines_the_services() -> None:
    result = _compose("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == SERVICES


def test_files_mounted_from_the_repo_exist() -> None:
    """Every ./infra/... path that compose bind-mounts is committed (secrets aside)."""
    paths = set(re.findall(r"\./(infra/[\w./-]+?)(?::|$)", COMPOSE.read_text(), re.M))
    assert paths, "no ./infra/ mounts found"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"compose.yaml mounts missing files: {missing}"
