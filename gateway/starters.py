"""Starter prompts: the questions the widget offers before a visitor has written anything.

They come from the content bundle (``CONTENT_DIR``, shared with the worker's tools), file
``_starter-prompts.md``: one question per Markdown list item (``- ...`` or ``* ...``);
anything else in the file (a heading, a note) is ignored. Files starting with ``_`` are not
pages, so the tools never search this one. A missing or unreadable file means no prompts.
The file is read again when it changes (``tools.refresh_content`` swaps the directory).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["MAX_PROMPTS", "MAX_PROMPT_CHARS", "STARTERS_FILE", "starter_prompts"]

STARTERS_FILE = "_starter-prompts.md"
#: The widget has room for this many buttons; later items are ignored.
MAX_PROMPTS = 4
#: Longer items are ignored rather than cut mid-question.
MAX_PROMPT_CHARS = 120
#: A larger file is not a list of a few questions: ignored whole.
_MAX_FILE_BYTES = 16 * 1024
_ITEM = re.compile(r"^\s{0,3}[-*+]\s+(?P<text>\S.*?)\s*$")

_cache: dict[Path, tuple[tuple[int, int], list[str]]] = {}


def starter_prompts(content_dir: Path) -> list[str]:
    """The starter prompts of the bundle at ``content_dir``, in file order (may be empty)."""
    path = content_dir / STARTERS_FILE
    try:
        stat = path.stat()
    except OSError:
        return []
    signature = (stat.st_mtime_ns, stat.st_size)
    cached = _cache.get(path)
    if cached is not None and cached[0] == signature:
        return list(cached[1])
    prompts = _read(path) if stat.st_size <= _MAX_FILE_BYTES else []
    _cache[path] = (signature, prompts)
    return list(prompts)


def _read(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    prompts: list[str] = []
    for line in text.splitlines():
        match = _ITEM.match(line)
        if match is None:
            continue
        prompt = " ".join(match["text"].split())
        if len(prompt) <= MAX_PROMPT_CHARS and prompt not in prompts:
            prompts.append(prompt)
        if len(prompts) == MAX_PROMPTS:
            break
    return prompts
