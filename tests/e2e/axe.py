"""axe-core in the page under test: the accessibility checker of the browser tests.

axe-core comes from the npm registry, pinned in tests/e2e/package.json (with its lock file);
it is installed into tests/e2e/node_modules on first use (`npm ci`) and never served to
visitors. Without npm the accessibility tests are skipped, saying why.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

HERE = Path(__file__).resolve().parent
AXE_JS = HERE / "node_modules" / "axe-core" / "axe.min.js"

#: WCAG 2.0-2.2 A and AA plus axe's best practices (landmarks, headings, focusable scroll).
RUN_OPTIONS = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"],
    },
    "resultTypes": ["violations"],
}


@cache
def axe_source() -> str:
    """The axe-core script, installed from the lock file when missing."""
    if not AXE_JS.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed, so axe-core can't be (apt-get install -y npm)")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            check=True,
            timeout=300,
        )
    return AXE_JS.read_text(encoding="utf-8")


def violations(page: Page) -> list[dict[str, Any]]:
    """Run axe on the whole page (open shadow roots included); the violations found."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(content=axe_source())
    result: dict[str, Any] = page.evaluate(
        "async (options) => await window.axe.run(document, options)", RUN_OPTIONS
    )
    return list(result["violations"])


def summary(found: list[dict[str, Any]]) -> str:
    """One line per violation: rule, impact and the first offending nodes."""
    lines = []
    for violation in found:
        targets = [str(node["target"]) for node in violation["nodes"][:3]]
        lines.append(f"{violation['id']} ({violation['impact']}): {', '.join(targets)}")
    return "\n".join(lines)
