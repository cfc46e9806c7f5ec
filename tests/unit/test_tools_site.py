"""Site tools over the content bundle: fetch_site_page, search_site, what_matthew_wants."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tools import ToolContext, ToolRegistry, ToolSettings, create_default_registry
from tools.base import JsonObject
from tools.settings import DEFAULT_CONTENT_DIR
from tools.site_search import make_snippet, split_passages, tokenize


@pytest.fixture
def content(tmp_path: Path) -> Path:
    target = tmp_path / "content"
    shutil.copytree(DEFAULT_CONTENT_DIR, target)
    return target


@pytest.fixture
def registry(content: Path, tmp_path: Path) -> ToolRegistry:
    settings = ToolSettings(_env_file=None, content_dir=content, enhancement_dir=tmp_path / "e")
    return create_default_registry(settings)


@pytest.fixture
async def ctx() -> AsyncIterator[ToolContext]:
    async with aiohttp.ClientSession() as http:
        yield ToolContext(chat_id="c", http=http)


async def run(registry: ToolRegistry, ctx: ToolContext, tool: str, /, **args: object) -> JsonObject:
    result = await registry.execute(tool, args, ctx)
    return result.payload


def test_example_bundle_is_marked_as_example() -> None:
    files = [p for p in DEFAULT_CONTENT_DIR.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {
        "bio.md", "projects.md", "faq.md", "index.md", "terra.md", "what_matthew_wants.txt",
        "site_map.json", "repos.json", "README.md",
    }  # fmt: skip
    assert any(p.name.startswith("blog-") for p in files)
    assert len(list((DEFAULT_CONTENT_DIR / "github").glob("*/*/README.md"))) >= 2
    for path in files:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            assert json.loads(text)["_note"].startswith("EXAMPLE CONTENT")
        else:
            assert text.lstrip("> ").startswith("EXAMPLE CONTENT"), path


# --- fetch_site_page -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "slug"),
    [
        ("bio", "bio"),
        ("BIO", "bio"),
        ("/projects/", "projects"),
        ("https://example.com/blog/fair-dice.html", "blog-fair-dice"),
        ("https://example.com/fair-dice?x=1#top", "fair-dice-missing"),
        ("", "index"),
        ("/", "index"),
        ("terra.md", "terra"),
    ],
)
async def test_fetch_site_page_resolves_slugs_and_urls(
    registry: ToolRegistry, ctx: ToolContext, argument: str, slug: str
) -> None:
    payload = await run(registry, ctx, "fetch_site_page", slug_or_url=argument)
    if argument == "":
        assert payload == {"error": "slug_or_url is required"}
    elif slug.endswith("-missing"):
        assert payload == {"error": f"No cached content found for {argument}"}
    else:
        assert payload["slug"] == slug
        assert payload["content"].startswith("> EXAMPLE CONTENT")


@pytest.mark.parametrize(
    "argument",
    ["*", "b*", "../../../etc/passwd", "site_map", "github", ".refresh", "%2e%2e/%2e%2e/bio.md/x"],
)
async def test_fetch_site_page_never_globs_or_escapes(
    registry: ToolRegistry, ctx: ToolContext, argument: str
) -> None:
    payload = await run(registry, ctx, "fetch_site_page", slug_or_url=argument)
    assert payload == {"error": f"No cached content found for {argument}"}


async def test_fetch_site_page_caps_content(
    registry: ToolRegistry, ctx: ToolContext, content: Path
) -> None:
    (content / "long.md").write_text("word " * 10_000)
    payload = await run(registry, ctx, "fetch_site_page", slug_or_url="long")
    assert len(payload["content"]) == 20_000
    assert payload["truncated"] is True


async def test_fetch_site_page_ignores_symlinks_out_of_the_bundle(
    registry: ToolRegistry, ctx: ToolContext, content: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("top secret")
    os.symlink(secret, content / "leak.md")
    payload = await run(registry, ctx, "fetch_site_page", slug_or_url="leak")
    assert "error" in payload


# --- search_site ---------------------------------------------------------------------------


async def test_search_site_ranks_pages_and_snippets_around_the_match(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    payload = await run(registry, ctx, "search_site", query="histogram advantage")
    results = payload["results"]
    assert payload["query"] == "histogram advantage"
    assert results[0]["file"] == "blog-fair-dice.md"
    assert results[0]["slug"] == "blog-fair-dice"
    assert "histogram" in results[0]["snippet"].lower()
    assert "EXAMPLE CONTENT" not in results[0]["snippet"]
    assert len(results) <= 3
    for result in results:
        assert set(result) == {"file", "slug", "snippet"}
        assert len(result["snippet"]) <= 502


async def test_search_site_snippet_is_not_the_head_of_the_file(
    registry: ToolRegistry, ctx: ToolContext, content: Path
) -> None:
    filler = "\n\n".join(f"Paragraph {i} talks about gardening and chillies." for i in range(40))
    (content / "long-page.md").write_text(f"# Long page\n\n{filler}\n\nThe zeppelin hangar.\n")
    payload = await run(registry, ctx, "search_site", query="zeppelin")
    assert payload["results"][0]["file"] == "long-page.md"
    snippet = payload["results"][0]["snippet"]
    assert "zeppelin" in snippet
    assert "Paragraph 0 " not in snippet


async def test_search_site_skips_site_map_and_json(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    payload = await run(registry, ctx, "search_site", query="sections slug path", max_results=10)
    files = [r["file"] for r in payload.get("results", [])]
    assert "site_map.json" not in files
    assert all(f.endswith((".md", ".txt")) for f in files)


async def test_search_site_no_match_and_stopword_queries(
    registry: ToolRegistry, ctx: ToolContext
) -> None:
    for query in ("xylophone quasar", "the of and"):
        payload = await run(registry, ctx, "search_site", query=query)
        assert payload == {"result": "No matches in cached content", "query": query}


async def test_search_site_clamps_max_results(registry: ToolRegistry, ctx: ToolContext) -> None:
    payload = await run(registry, ctx, "search_site", query="Matthew", max_results=500)
    assert 3 < len(payload["results"]) <= 10
    payload = await run(registry, ctx, "search_site", query="Matthew", max_results=0)
    assert len(payload["results"]) == 1
    assert len({r["file"] for r in payload["results"]}) == len(payload["results"])


def _swap_in_new_bundle(content: Path, files: dict[str, str]) -> None:
    fresh = content.parent / "fresh"
    fresh.mkdir()
    for name, text in files.items():
        (fresh / name).write_text(text)
    content.rename(content.parent / "old")
    fresh.rename(content)


async def test_search_index_follows_content_changes(
    registry: ToolRegistry, ctx: ToolContext, content: Path, tmp_path: Path
) -> None:
    first = await run(registry, ctx, "search_site", query="platypus")
    assert "result" in first
    (content / "zoo.md").write_text("# Zoo\n\nA platypus lives here.\n")
    second = await run(registry, ctx, "search_site", query="platypus")
    assert second["results"][0]["file"] == "zoo.md"
    # a swapped-in directory (what the refresher does) is picked up too
    _swap_in_new_bundle(content, {"aviary.md": "A platypus would be lost among parrots.\n"})
    third = await run(registry, ctx, "search_site", query="platypus")
    assert [r["file"] for r in third["results"]] == ["aviary.md"]


def test_passages_follow_headings_and_skip_the_banner() -> None:
    text = "> EXAMPLE CONTENT: sample.\n\n# Title\n\nIntro.\n\n## Part two\n\nBody text here."
    passages = split_passages(text, file="p.md", slug="p")
    assert [p.heading for p in passages] == ["Title", "Part two"]
    assert all("EXAMPLE" not in p.text for p in passages)
    long = split_passages("word " * 2000, file="l.md", slug="l")
    assert len(long) > 5
    assert all(len(p.text) <= 1000 for p in long)


def test_tokenize_folds_plurals_and_drops_stopwords() -> None:
    assert tokenize("The projects and the stories of dice") == ["project", "story", "dice"]


def test_snippet_centres_on_the_densest_match() -> None:
    text = "alpha " * 200 + "needle haystack " + "omega " * 200
    snippet = make_snippet(text, ["needle", "haystack"])
    assert "needle haystack" in snippet
    assert snippet.startswith("…")
    assert snippet.endswith("…")
    assert len(snippet) <= 502


# --- what_matthew_wants --------------------------------------------------------------------


async def test_what_matthew_wants(registry: ToolRegistry, ctx: ToolContext, content: Path) -> None:
    payload = await run(registry, ctx, "what_matthew_wants")
    assert "dice notation roller" in payload["content"]
    assert payload["content"] == payload["content"].strip()
    (content / "what_matthew_wants.txt").unlink()
    payload = await run(registry, ctx, "what_matthew_wants")
    assert payload["content"] == ""
    assert payload["note"]
