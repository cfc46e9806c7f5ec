"""search_site: ranked search over the cached site's pages."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.site_content import SiteContent

__all__ = ["MAX_SITE_RESULTS", "SearchSiteParams", "create_search_site_tool"]

MAX_SITE_RESULTS = 10


class SearchSiteParams(ToolParams):
    query: str = Field(min_length=1, max_length=300, description="Words to look for.")
    max_results: int = Field(3, ge=1, le=MAX_SITE_RESULTS, description="How many pages (1-10).")

    @field_validator("max_results", mode="before")
    @classmethod
    def _clamp(cls, value: Any) -> Any:
        if value is None:
            return 3
        if isinstance(value, int | float | str):
            try:
                return min(max(int(value), 1), MAX_SITE_RESULTS)
            except ValueError:
                return value
        return value


def create_search_site_tool(site: SiteContent, *, owner: str) -> Tool[SearchSiteParams]:
    async def handle(params: SearchSiteParams, ctx: ToolContext) -> JsonObject:
        hits = await site.search(params.query, params.max_results)
        if not hits:
            return {"result": "No matches in cached content", "query": params.query}
        return {
            "query": params.query,
            "results": [
                {"file": hit.file, "slug": hit.slug, "snippet": hit.snippet} for hit in hits
            ],
        }

    return Tool(
        name="search_site",
        description=(
            f"Search the cached pages of {owner}'s website (bio, projects, FAQ, blog). "
            "Returns the best-matching pages with a snippet around the matched words."
        ),
        params=SearchSiteParams,
        handler=handle,
    )
