"""fetch_live_page: the current text of an allowlisted live page (site or social profile)."""

from __future__ import annotations

from pydantic import Field
from yarl import URL

from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.errors import ToolError
from tools.fetch_site_page import site_page
from tools.html_text import html_to_text, normalise_whitespace
from tools.live_fetch import LiveFetcher, LivePage, normalise_host
from tools.site_content import SiteContent

__all__ = [
    "LIVE_TEXT_LIMIT",
    "FetchLivePageParams",
    "create_fetch_live_page_tool",
    "fetch_or_fail",
]

LIVE_TEXT_LIMIT = 100_000


class FetchLivePageParams(ToolParams):
    slug_or_url: str = Field(
        min_length=1,
        max_length=2000,
        description="A path on the site (e.g. 'blog') or a full allowed URL.",
    )


def _cached_fallback(site: SiteContent, fetcher: LiveFetcher, url: URL | None) -> JsonObject:
    """``{"cached": {slug, content}}`` when the failed URL is a site page we have cached."""
    if url is None:
        return {}
    site_host = normalise_host(fetcher.base_url.raw_host or "")
    host = normalise_host(url.raw_host or "")
    if host.removeprefix("www.") != site_host.removeprefix("www."):
        return {}
    try:
        return {"cached": site_page(site, url.path or "/")}
    except ToolError:
        return {}


async def fetch_or_fail(site: SiteContent, fetcher: LiveFetcher, slug_or_url: str) -> LivePage:
    """Fetch a live page; every failure is re-raised as ``Live fetch failed: <reason>``
    (same error class) with the cached copy of a site page attached when there is one."""
    url: URL | None = None
    try:
        url = fetcher.target_url(slug_or_url)
        return await fetcher.fetch(url)
    except ToolError as exc:
        raise type(exc)(
            f"Live fetch failed: {exc.message}", extra=_cached_fallback(site, fetcher, url)
        ) from exc


def page_text(page: LivePage) -> str:
    """Readable text of a page: HTML converted, plain text tidied."""
    return html_to_text(page.text) if page.is_html else normalise_whitespace(page.text)


def create_fetch_live_page_tool(
    site: SiteContent, fetcher: LiveFetcher, *, owner: str
) -> Tool[FetchLivePageParams]:
    async def handle(params: FetchLivePageParams, ctx: ToolContext) -> JsonObject:
        page = await fetch_or_fail(site, fetcher, params.slug_or_url)
        text = page_text(page)
        payload: JsonObject = {"url": page.url, "content": text[:LIVE_TEXT_LIMIT]}
        if page.truncated or len(text) > LIVE_TEXT_LIMIT:
            payload["truncated"] = True
        return payload

    return Tool(
        name="fetch_live_page",
        description=(
            f"Fetch the current text of a page on {owner}'s live website or his allowed "
            "social profiles. Slower than the cache; use it when the cache is stale or missing."
        ),
        params=FetchLivePageParams,
        handler=handle,
        timeout=fetcher.timeout + 2,
    )
