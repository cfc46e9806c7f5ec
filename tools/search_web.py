"""search_web: web search through a SearxNG-compatible JSON API (SEARCH_API_URL)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from pydantic import Field, field_validator
from yarl import URL

from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.errors import ToolTimeout, ToolUnavailable
from tools.live_fetch import read_capped
from tools.settings import ToolSettings

__all__ = ["MAX_WEB_RESULTS", "SearchWebParams", "create_search_web_tool", "map_results"]

MAX_WEB_RESULTS = 5
_MAX_RESPONSE_BYTES = 2_000_000
_SNIPPET_CHARS = 500


class SearchWebParams(ToolParams):
    query: str = Field(min_length=1, max_length=300, description="The search query.")
    max_results: int | None = Field(
        None, ge=1, le=MAX_WEB_RESULTS, description="How many results (1-5)."
    )

    @field_validator("max_results", mode="before")
    @classmethod
    def _clamp(cls, value: Any) -> Any:
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                return min(max(int(value), 1), MAX_WEB_RESULTS)
            except ValueError:
                return value
        return value


def _first_text(item: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    return ""


def map_results(data: Any, limit: int) -> list[JsonObject]:
    """``{title, url, snippet}`` from a SearxNG (``results``) or generic (``items``) answer.

    Items without an http(s) URL are skipped; snippets are capped at 500 characters.
    """
    if not isinstance(data, dict):
        return []
    items = data.get("results")
    if not isinstance(items, list):
        items = data.get("items")
    if not isinstance(items, list):
        return []
    results: list[JsonObject] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        url = _first_text(item, "url", "link")
        if not url.lower().startswith(("http://", "https://")):
            continue
        results.append(
            {
                "title": _first_text(item, "title", "name")[:300],
                "url": url[:2000],
                "snippet": _first_text(item, "content", "snippet", "summary")[:_SNIPPET_CHARS],
            }
        )
        if len(results) >= limit:
            break
    return results


def create_search_web_tool(settings: ToolSettings) -> Tool[SearchWebParams]:
    endpoint = URL(str(settings.search_api_url)) if settings.search_api_url else None
    timeout = settings.search_timeout_seconds
    headers = {"Accept": "application/json"}
    if settings.search_api_key is not None:
        headers["Authorization"] = f"Bearer {settings.search_api_key.get_secret_value()}"

    async def handle(params: SearchWebParams, ctx: ToolContext) -> JsonObject:
        if endpoint is None:
            raise ToolUnavailable("Web search is not configured")
        limit = params.max_results or settings.search_max_results
        query = {
            "q": params.query,
            "format": "json",
            "language": "en",
            "safesearch": "1",
            "max_results": str(limit),
        }
        try:
            async with ctx.http.get(
                endpoint.update_query(query),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise ToolUnavailable(f"Web search failed: HTTP {response.status}")
                body, truncated = await read_capped(response, _MAX_RESPONSE_BYTES)
        except TimeoutError as exc:
            raise ToolTimeout(f"Web search timed out after {timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise ToolUnavailable("Web search failed: the search service is unreachable") from exc
        if truncated:
            raise ToolUnavailable("Web search failed: the answer was too large")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ToolUnavailable("Web search failed: the answer was not JSON") from exc
        return {"query": params.query, "results": map_results(data, limit), "source": "searxng"}

    return Tool(
        name="search_web",
        description=(
            "Search the public web. Use it last, for questions the site, GitHub and live "
            "pages cannot answer."
        ),
        params=SearchWebParams,
        handler=handle,
        timeout=timeout + 1,
    )
