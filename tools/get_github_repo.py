"""get_github_repo: a cached file (the README) of one of the owner's repositories."""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePosixPath

from pydantic import Field

from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.errors import ToolInputError, ToolNotAllowed, ToolNotFound
from tools.site_content import SiteContent, is_inside, read_limited

__all__ = ["REPO_CHAR_LIMIT", "GetGithubRepoParams", "create_get_github_repo_tool"]

REPO_CHAR_LIMIT = 100_000


class GetGithubRepoParams(ToolParams):
    name: str = Field(min_length=1, max_length=140, description="Repository name.")
    file: str = Field(
        "README.md", min_length=1, max_length=300, description="File in the repo (README.md)."
    )


def _child_named(directory: Path, name: str) -> Path | None:
    """The entry of ``directory`` called ``name``, matched case-insensitively."""
    exact = directory / name
    if exact.exists():
        return exact
    try:
        for entry in directory.iterdir():
            if entry.name.lower() == name.lower():
                return entry
    except OSError:
        return None
    return None


def _relative_file(file: str) -> PurePosixPath:
    if "\\" in file or "\x00" in file:
        raise ToolNotAllowed("Path escapes the repository")
    path = PurePosixPath(file)
    if path.is_absolute() or any(part in {"..", "."} for part in path.parts) or not path.parts:
        raise ToolNotAllowed("Path escapes the repository")
    return path


def create_get_github_repo_tool(
    site: SiteContent, *, owner: str, github_owner: str
) -> Tool[GetGithubRepoParams]:
    """``owner`` is the person's name for the description, ``github_owner`` the account."""

    def read(params: GetGithubRepoParams) -> JsonObject:
        name = params.name
        if "/" in name:
            repo_owner, _, name = name.partition("/")
            if repo_owner.lower() != github_owner.lower() or "/" in name:
                raise ToolNotFound(f"Only {github_owner}'s repositories are cached")
        if not name or name in {".", ".."}:
            raise ToolInputError("name is required")
        github = site.root / "github"
        owner_dir = _child_named(github, github_owner) if github.is_dir() else None
        repo_dir = _child_named(owner_dir, name) if owner_dir and owner_dir.is_dir() else None
        if repo_dir is None or not repo_dir.is_dir() or not is_inside(repo_dir, github):
            raise ToolNotFound(f"No cached repository named {name}")
        relative = _relative_file(params.file)
        target: Path | None = repo_dir
        for part in relative.parts:
            target = _child_named(target, part) if target is not None else None
        if target is None or not target.is_file():
            raise ToolNotFound(
                f"{params.file} is not cached for {repo_dir.name} (only READMEs are cached)"
            )
        if not is_inside(target, repo_dir):
            raise ToolNotAllowed("Path escapes the repository")
        text = read_limited(target, REPO_CHAR_LIMIT * 4)
        payload: JsonObject = {
            "repo": repo_dir.name,
            "file": target.relative_to(repo_dir).as_posix(),
            "content": text[:REPO_CHAR_LIMIT],
        }
        if len(text) > REPO_CHAR_LIMIT:
            payload["truncated"] = True
        return payload

    async def handle(params: GetGithubRepoParams, ctx: ToolContext) -> JsonObject:
        return await asyncio.to_thread(read, params)

    return Tool(
        name="get_github_repo",
        description=(
            f"Read the cached README of one of {owner}'s GitHub repositories "
            "(names from list_github_repos)."
        ),
        params=GetGithubRepoParams,
        handler=handle,
    )
