"""fetch_site_page: one page of the cached site, by slug or URL."""

from __future__ import annotations

import asyncio

from pydantic import Field

from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.errors import ToolNotFound
from tools.site_content import SiteContent

__all__ = ["PAGE_CHAR_LIMIT", "FetchSitePageParams", "create_fetch_site_page_tool", "site_page"]

PAGE_CHAR_LIMIT = 20_000


class FetchSitePageParams(ToolParams):
    slug_or_url: str = Field(
        min_length=1,
        max_length=500,
        description="Page slug such as 'projects' or 'blog/first-post', or a URL on the site.",
    )


def site_page(site: SiteContent, slug_or_url: str) -> JsonObject:
    """``{slug, content}`` of a cached page (content capped at 20,000 characters).

    Raises ``ToolNotFound`` (``No cached content found for X``) when no page matches.
    """
    document = site.find_page(slug_or_url)
    if document is None:
        raise ToolNotFound(f"No cached content found for {slug_or_url[:200]}")
    text = site.read(document)
    payload: JsonObject = {"slug": document.slug, "content": text[:PAGE_CHAR_LIMIT]}
    if len(text) > PAGE_CHAR_LIMIT:
        payload["truncated"] = True
    return payload


def create_fetch_site_page_tool(site: SiteContent) -> Tool[FetchSitePageParams]:
    async def handle(params: FetchSitePageParams, ctx: ToolContext) -> JsonObject:
        return await asyncio.to_thread(site_page, site, params.slug_or_url)

    return Tool(
        name="fetch_site_page",
        description=(
            "Read one page of the cached copy of the website (fast, always available). "
            "Use a slug from search_site results, or 'index' for the home page."
        ),
        params=FetchSitePageParams,
        handler=handle,
    )
