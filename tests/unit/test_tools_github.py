"""GitHub cache tools: list_github_repos and get_github_repo (with its traversal guard)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tools import ToolContext, ToolRegistry, ToolSettings, create_default_registry
from tools.base import JsonObject
from tools.settings import DEFAULT_CONTENT_DIR


@pytest.fixture
def content(tmp_path: Path) -> Path:
    target = tmp_path / "content"
    shutil.copytree(DEFAULT_CONTENT_DIR, target)
    mixed = target / "github" / "example-owner" / "MixedCase-Repo"
    mixed.mkdir()
    (mixed / "README.md").write_text("# MixedCase\n")
    (mixed / "docs").mkdir()
    (mixed / "docs" / "Guide.md").write_text("guide")
    (tmp_path / "outside.txt").write_text("not yours")
    return target


@pytest.fixture
def registry(content: Path, tmp_path: Path) -> ToolRegistry:
    settings = ToolSettings(_env_file=None, content_dir=content, enhancement_dir=tmp_path / "e")
    return create_default_registry(settings)


@pytest.fixture
async def ctx() -> AsyncIterator[ToolContext]:
    async with aiohttp.ClientSession() as http:
        yield ToolContext(chat_id="c", http=http)


async def run(registry: ToolRegistry, ctx: ToolContext, tool: str, /, **args: object) -> JsonObject:
    return (await registry.execute(tool, args, ctx)).payload


async def test_list_github_repos(registry: ToolRegistry, ctx: ToolContext, content: Path) -> None:
    payload = await run(registry, ctx, "list_github_repos")
    assert list(payload) == ["repos"]
    names = [repo["name"] for repo in payload["repos"]]
    assert names == ["dice-notation", "oh-heck-scorekeeper", "pocket-garden"]
    assert set(payload["repos"][0]) == {
        "name", "description", "topics", "stars", "last_pushed", "url", "default_branch",
    }  # fmt: skip
    (content / "github" / "repos.json").write_text("{broken")
    assert await run(registry, ctx, "list_github_repos") == {"repos": []}
    shutil.rmtree(content / "github")
    assert await run(registry, ctx, "list_github_repos") == {"repos": []}


@pytest.mark.parametrize(
    ("name", "repo"),
    [
        ("dice-notation", "dice-notation"),
        ("Dice-Notation", "dice-notation"),
        ("mixedcase-repo", "MixedCase-Repo"),
        ("example-owner/pocket-garden", "pocket-garden"),
    ],
)
async def test_get_github_repo_matches_names_case_insensitively(
    registry: ToolRegistry, ctx: ToolContext, name: str, repo: str
) -> None:
    payload = await run(registry, ctx, "get_github_repo", name=name)
    assert payload["repo"] == repo
    assert payload["file"] == "README.md"
    assert payload["content"]


async def test_get_github_repo_reads_other_cached_files(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    payload = await run(
        registry, ctx, "get_github_repo", name="mixedcase-repo", file="DOCS/guide.md"
    )
    assert payload == {"repo": "MixedCase-Repo", "file": "docs/Guide.md", "content": "guide"}


@pytest.mark.parametrize(
    "file",
    [
        "../../repos.json",
        "../pocket-garden/README.md",
        "/etc/passwd",
        "docs/../../../outside.txt",
        "..\\..\\repos.json",
        "README.md\x00.png",
    ],
)
async def test_get_github_repo_refuses_traversal(
    registry: ToolRegistry, ctx: ToolContext, file: str
) -> None:
    payload = await run(registry, ctx, "get_github_repo", name="dice-notation", file=file)
    assert payload == {"error": "Path escapes the repository"}


async def test_get_github_repo_refuses_symlinks_out_of_the_repo(
    registry: ToolRegistry, ctx: ToolContext, content: Path, tmp_path: Path
) -> None:
    repo = content / "github" / "example-owner" / "dice-notation"
    os.symlink(tmp_path / "outside.txt", repo / "LINK.md")
    payload = await run(registry, ctx, "get_github_repo", name="dice-notation", file="LINK.md")
    assert payload == {"error": "Path escapes the repository"}
    os.symlink(tmp_path, content / "github" / "example-owner" / "escape")
    payload = await run(registry, ctx, "get_github_repo", name="escape", file="outside.txt")
    assert payload == {"error": "No cached repository named escape"}


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("no-such-repo", "No cached repository named no-such-repo"),
        ("..", "name is required"),
        ("someone-else/dice-notation", "Only example-owner's repositories are cached"),
        ("example-owner/a/b", "Only example-owner's repositories are cached"),
    ],
)
async def test_get_github_repo_errors(
    registry: ToolRegistry, ctx: ToolContext, name: str, error: str
) -> None:
    assert await run(registry, ctx, "get_github_repo", name=name) == {"error": error}


async def test_get_github_repo_missing_file_and_cap(
    registry: ToolRegistry, ctx: ToolContext, content: Path
) -> None:
    payload = await run(registry, ctx, "get_github_repo", name="dice-notation", file="setup.py")
    assert payload == {
        "error": "setup.py is not cached for dice-notation (only READMEs are cached)"
    }
    readme = content / "github" / "example-owner" / "dice-notation" / "README.md"
    readme.write_text("x" * 150_000)
    payload = await run(registry, ctx, "get_github_repo", name="dice-notation")
    assert len(payload["content"]) == 100_000
    assert payload["truncated"] is True


async def test_owner_comes_from_settings(content: Path, tmp_path: Path, ctx: ToolContext) -> None:
    other = content / "github" / "Someone"
    (other / "thing").mkdir(parents=True)
    (other / "thing" / "README.md").write_text("hello")
    settings = ToolSettings(
        _env_file=None, content_dir=content, github_owner="someone", enhancement_dir=tmp_path
    )
    payload = await run(create_default_registry(settings), ctx, "get_github_repo", name="thing")
    assert payload["content"] == "hello"
    assert json.loads((content / "github" / "repos.json").read_text())["repos"]
