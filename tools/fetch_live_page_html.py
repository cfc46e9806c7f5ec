"""fetch_live_page_html: the raw HTML of an allowlisted live page (same guards)."""

from __future__ import annotations

from tools.base import JsonObject, Tool, ToolContext
from tools.fetch_live_page import LIVE_TEXT_LIMIT, FetchLivePageParams, fetch_or_fail
from tools.live_fetch import LiveFetcher
from tools.site_content import SiteContent

__all__ = ["create_fetch_live_page_html_tool"]


def create_fetch_live_page_html_tool(
    site: SiteContent, fetcher: LiveFetcher
) -> Tool[FetchLivePageParams]:
    async def handle(params: FetchLivePageParams, ctx: ToolContext) -> JsonObject:
        page = await fetch_or_fail(site, fetcher, params.slug_or_url)
        payload: JsonObject = {"url": page.url, "html": page.text[:LIVE_TEXT_LIMIT]}
        if page.truncated or len(page.text) > LIVE_TEXT_LIMIT:
            payload["truncated"] = True
        return payload

    return Tool(
        name="fetch_live_page_html",
        description=(
            "Like fetch_live_page but returns the page's HTML source; use it only when the "
            "text version is missing something (links, structure)."
        ),
        params=FetchLivePageParams,
        handler=handle,
        aliases=("fetch_live_page_source",),
        timeout=fetcher.timeout + 2,
    )
