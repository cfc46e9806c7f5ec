"""gateway.starters: the widget's starter prompts, read from the content bundle."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.settings import GatewaySettings
from gateway.starters import MAX_PROMPTS, STARTERS_FILE, starter_prompts


def test_the_shipped_bundle_offers_starter_prompts() -> None:
    settings = GatewaySettings(_env_file=None, chat_password="code", redis_url="redis://h:1/0")
    prompts = starter_prompts(settings.content_dir)
    assert prompts[0] == "What projects are on this site?"
    assert 1 <= len(prompts) <= MAX_PROMPTS


def test_only_list_items_count_and_bad_ones_are_skipped(tmp_path: Path) -> None:
    (tmp_path / STARTERS_FILE).write_text(
        "# Starters\n> a note\n\n- First   question?\n* Second\n- First question?\n"
        f"- {'x' * 121}\nplain line\n+ Third\n- Fourth\n- Fifth\n",
        encoding="utf-8",
    )
    assert starter_prompts(tmp_path) == ["First question?", "Second", "Third", "Fourth"]


def test_a_missing_or_unreadable_file_means_no_prompts(tmp_path: Path) -> None:
    assert starter_prompts(tmp_path) == []
    (tmp_path / STARTERS_FILE).write_bytes(b"- \xff\xfe not utf-8\n")
    assert starter_prompts(tmp_path) == []


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / STARTERS_FILE
    path.write_text("- Old\n", encoding="utf-8")
    assert starter_prompts(tmp_path) == ["Old"]
    path.write_text("- New one\n", encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert starter_prompts(tmp_path) == ["New one"]
