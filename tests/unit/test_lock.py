"""The lock files in requirements/ cover pyproject.toml: every dependency pinned, with hashes.

A dependency added to pyproject.toml without `scripts/lock` fails here, before an install
on a clean machine does.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return [Requirement(name) for name in names]


def _pins(lock: str) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) of one lock file."""
    pins: dict[str, tuple[Version, int]] = {}
    current = ""
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match["name"])
            pins[current] = (Version(match["version"]), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("runtime.txt", ()), ("demo.txt", ("demo",)), ("dev.txt", ("dev", "demo"))],
)
def test_every_dependency_is_pinned_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    pins = _pins(lock)
    for requirement in _requirements(extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements/{lock}: run scripts/lock"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements/{lock} pins {name}=={version}, outside {requirement.specifier}: "
            "run scripts/lock"
        )


@pytest.mark.parametrize("lock", ["runtime.txt", "demo.txt", "dev.txt"])
def test_every_pin_carries_hashes(lock: str) -> None:
    pins = _pins(lock)
    assert pins, f"requirements/{lock} pins nothing"
    unhashed = sorted(name for name, (_, hashes) in pins.items() if hashes == 0)
    assert not unhashed, f"requirements/{lock} has pins without hashes: {unhashed}"


def test_runtime_pins_match_the_larger_sets() -> None:
    """The demo and dev sets never run other versions of the runtime packages."""
    runtime = _pins("runtime.txt")
    for lock in ("demo.txt", "dev.txt"):
        larger = _pins(lock)
        differing = {
            name: (str(version), str(larger[name][0]))
            for name, (version, _) in runtime.items()
            if name in larger and larger[name][0] != version
        }
        assert not differing, f"requirements/{lock} differs from runtime.txt: {differing}"
