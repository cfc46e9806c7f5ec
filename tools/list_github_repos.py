"""list_github_repos: the cached list of the owner's public GitHub repositories."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.site_content import SiteContent, is_inside, read_limited

__all__ = ["REPOS_FILE", "ListGithubReposParams", "create_list_github_repos_tool", "load_repos"]

REPOS_FILE = "github/repos.json"
_MAX_REPOS = 100
_FIELDS = ("name", "description", "topics", "stars", "last_pushed", "url", "default_branch")


class ListGithubReposParams(ToolParams):
    """No arguments."""


def _clean(repo: dict[str, Any]) -> JsonObject:
    entry = {key: repo.get(key) for key in _FIELDS if key in repo}
    description = entry.get("description")
    if isinstance(description, str):
        entry["description"] = description[:300]
    return entry


def load_repos(site: SiteContent) -> list[JsonObject]:
    """The cached repositories (at most 100), or an empty list when nothing is cached."""
    path = site.root / REPOS_FILE
    try:
        if not path.is_file() or not is_inside(path, site.root):
            return []
        data = json.loads(read_limited(path))
    except (OSError, json.JSONDecodeError):
        return []
    repos = data.get("repos") if isinstance(data, dict) else None
    if not isinstance(repos, list):
        return []
    return [
        _clean(repo) for repo in repos[:_MAX_REPOS] if isinstance(repo, dict) and repo.get("name")
    ]


def create_list_github_repos_tool(site: SiteContent, *, owner: str) -> Tool[ListGithubReposParams]:
    async def handle(params: ListGithubReposParams, ctx: ToolContext) -> JsonObject:
        return {"repos": await asyncio.to_thread(load_repos, site)}

    return Tool(
        name="list_github_repos",
        description=(
            f"List {owner}'s public GitHub repositories (cached): name, description, "
            "topics, stars, last push, URL."
        ),
        params=ListGithubReposParams,
        handler=handle,
    )
