"""The worker package's shape: it reaches the bus only through its front end, and no module
grows past what one reader can hold (400 lines). (No redis import and no import cycle: the
import-linter contracts in pyproject.toml, run by test_architecture.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[2] / "worker"
MODULES = sorted(WORKER.glob("*.py"))
MAX_LINES = 400
#: The bus modules the worker may import: the front end (``bus``), the schemas it writes,
#: and arq's connection for the scheduled jobs.
BUS_SURFACE = {"bus", "bus.schemas", "bus.scheduler"}


def _bus_imports(path: Path) -> set[str]:
    """The ``bus`` modules ``path`` imports (``TYPE_CHECKING`` blocks included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".", 1)[0] == "bus"}


def test_the_worker_reaches_the_bus_only_through_its_front_end() -> None:
    offenders = {path.name: sorted(_bus_imports(path) - BUS_SURFACE) for path in MODULES}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_worker_module_is_over_the_line_budget(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines"
