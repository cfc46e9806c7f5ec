"""what_matthew_wants: the site owner's note on what visitors should hear about."""

from __future__ import annotations

import asyncio

from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.site_content import SiteContent, is_inside, read_limited

__all__ = ["WANTS_FILE", "WhatMatthewWantsParams", "create_what_matthew_wants_tool"]

WANTS_FILE = "what_matthew_wants.txt"
_CHAR_LIMIT = 20_000


class WhatMatthewWantsParams(ToolParams):
    """No arguments."""


def create_what_matthew_wants_tool(
    site: SiteContent, *, owner: str
) -> Tool[WhatMatthewWantsParams]:
    def read() -> JsonObject:
        path = site.root / WANTS_FILE
        try:
            if path.is_file() and is_inside(path, site.root):
                return {"content": read_limited(path).strip()[:_CHAR_LIMIT]}
        except OSError:
            pass
        return {"note": f"{owner} has not written anything here yet.", "content": ""}

    async def handle(params: WhatMatthewWantsParams, ctx: ToolContext) -> JsonObject:
        return await asyncio.to_thread(read)

    return Tool(
        name="what_matthew_wants",
        description=(
            f"{owner}'s own note on what he would like visitors to know about or try. "
            "Read it when you are unsure what to suggest."
        ),
        params=WhatMatthewWantsParams,
        handler=handle,
    )
