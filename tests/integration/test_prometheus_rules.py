"""The alert rules and their unit tests under infra/prometheus, checked by promtool.

Needs ``promtool`` (Debian: the ``prometheus`` package, which scripts/test installs);
skipped without it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROMETHEUS = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


@pytest.mark.parametrize(
    "args",
    [
        ("check", "rules", "rules/terrarium.yml"),
        ("test", "rules", "tests/terrarium_test.yml"),
    ],
    ids=["check", "unit-tests"],
)
def test_promtool(args: tuple[str, ...]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs promtool (apt-get install prometheus)")
    result = subprocess.run(
        [promtool, *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
