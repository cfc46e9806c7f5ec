"""A chat's transcript, in the same two formats the visitor's download has.

``md`` and ``json`` match ``GET /api/chat/{chatId}/transcript`` byte for byte for the same
messages, so what an operator exports is what the visitor could download.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["FORMATS", "render_transcript"]

FORMATS = ("md", "json")


def render_transcript(chat_id: str, messages: Sequence[dict[str, Any]], fmt: str) -> str:
    """The transcript of ``messages`` (frames, oldest first) as ``fmt`` ("md" or "json")."""
    if fmt == "json":
        return json.dumps({"chatId": chat_id, "messages": list(messages)})
    if fmt != "md":
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    lines = [f"# Conversation with Terra ({chat_id})", ""]
    for message in messages:
        lines += [f"**{message['sender']}** — {message['createdAt']}", "", message["content"], ""]
    return "\n".join(lines)
