"""write_enhancement_request: leave the owner a note with a visitor's idea (capped).

Caps (issue 11): ``ENHANCEMENT_MAX_PER_CHAT`` files per chat per UTC day, so one visitor
cannot use up the folder for everyone, and ``ENHANCEMENT_MAX_FILES`` files in the folder in
all (what the owner has not reviewed yet: a bound on the disk). A chat's files are found by
the ``Chat:`` line of the day's files (their names start with the date).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.errors import ToolLimitReached, ToolUnavailable
from tools.settings import ToolSettings

__all__ = ["EnhancementRequestParams", "create_write_enhancement_request_tool", "slugify"]

_NON_SLUG = re.compile(r"[^a-z0-9]+")
_SLUG_CHARS = 50
_FILE_GLOB = "*.txt"
#: Bytes read from the top of a file to find its ``Chat:`` line.
_HEADER_BYTES = 512


class EnhancementRequestParams(ToolParams):
    summary: str = Field(min_length=1, max_length=200, description="One-line summary of the idea.")
    details: str = Field("", max_length=20_000, description="Optional details.")


def slugify(text: str, limit: int = _SLUG_CHARS) -> str:
    """Lower-case ASCII words joined by dashes, at most ``limit`` characters."""
    slug = _NON_SLUG.sub("-", text.lower()).strip("-")[:limit].strip("-")
    return slug or "request"


def _write_exclusive(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o640)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _chat_of(path: Path) -> str | None:
    """The ``Chat:`` line of a request file (None: unreadable or missing)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEADER_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in head.splitlines():
        if line.startswith("Chat: "):
            return line[len("Chat: ") :]
    return None


def _written_today(directory: Path, now: datetime, chat_id: str) -> int:
    """Files of ``chat_id`` written on ``now``'s UTC day."""
    today = directory.glob(f"{now:%Y%m%d}T{_FILE_GLOB}")
    return sum(1 for path in today if path.is_file() and _chat_of(path) == chat_id)


def _write_request(
    directory: Path, *, now: datetime, summary: str, details: str, chat_id: str,
    max_files: int, max_per_chat: int, max_bytes: int,
) -> tuple[str, bool]:  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    if _written_today(directory, now, chat_id) >= max_per_chat:
        raise ToolLimitReached(
            f"This chat already left {max_per_chat} enhancement requests today; "
            "tell the visitor the idea was noted and can be sent again tomorrow"
        )
    existing = sum(1 for path in directory.glob(_FILE_GLOB) if path.is_file())
    if existing >= max_files:
        raise ToolLimitReached(
            f"Enhancement request limit reached ({max_files} files); "
            "the owner has to review the existing ones first"
        )
    header = (
        f"Summary: {summary}\nTimestamp: {now:%Y-%m-%d %H:%M:%S} UTC\nChat: {chat_id}\n\n"
    ).encode()
    body = details.strip().encode()
    truncated = len(header) + len(body) > max_bytes
    if truncated:
        marker = b"\n[truncated]\n"
        body = body[: max(0, max_bytes - len(header) - len(marker))]
        body = body.decode("utf-8", errors="ignore").encode() + marker
    stem = f"{now:%Y%m%dT%H%M%SZ}-{slugify(summary)}"
    for attempt in range(1, 100):
        name = f"{stem}.txt" if attempt == 1 else f"{stem}-{attempt}.txt"
        try:
            _write_exclusive(directory / name, header + body)
        except FileExistsError:
            continue
        return name, truncated
    raise ToolUnavailable("Could not pick a file name for the request")


def create_write_enhancement_request_tool(
    settings: ToolSettings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Tool[EnhancementRequestParams]:
    """The tool; ``clock`` gives the current UTC time (tests move it to another day)."""
    directory = settings.enhancement_dir
    lock = asyncio.Lock()  # the count check and the write happen together

    async def handle(params: EnhancementRequestParams, ctx: ToolContext) -> JsonObject:
        async with lock:
            try:
                name, truncated = await asyncio.to_thread(
                    _write_request,
                    directory,
                    now=clock(),
                    summary=" ".join(params.summary.split()),
                    details=params.details,
                    chat_id=ctx.chat_id,
                    max_files=settings.enhancement_max_files,
                    max_per_chat=settings.enhancement_max_per_chat,
                    max_bytes=settings.enhancement_max_bytes,
                )
            except OSError as exc:
                raise ToolUnavailable("Could not save the enhancement request") from exc
        payload: JsonObject = {"ok": True, "file": name, "summary": params.summary}
        if truncated:
            payload["truncated"] = True
        return payload

    return Tool(
        name="write_enhancement_request",
        description=(
            "Save a visitor's feature idea or improvement for the site or for you, so the "
            "owner can review it later. Keep the summary to one line."
        ),
        params=EnhancementRequestParams,
        handler=handle,
    )
