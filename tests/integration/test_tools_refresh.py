"""Content refresh: file mode, URL mode with crawl, GitHub cache, atomic swap into place."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from structlog.testing import capture_logs

from tools import ToolContext, ToolSettings, create_default_registry
from tools.refresh_content import (
    MANIFEST,
    RefreshError,
    RefreshOptions,
    main,
    refresh_content,
    swap_into_place,
)
from tools.settings import DEFAULT_CONTENT_DIR


def html(title: str, body: str, links: Sequence[str] = ()) -> str:
    anchors = "".join(f'<a href="{href}">{href}</a>' for href in links)
    head = f"<head><title>{title}</title><script>x()</script></head>"
    return f"<html>{head}<body>{body}{anchors}</body></html>"


HOME_LINKS = ["/about", "/blog/", "https://other.test/x", "/logo.png", "mailto:a@b.c", "/deep/a#f"]
SITE_PAGES: dict[str, tuple[str, str]] = {
    "/": ("text/html", html("Home", "<p>Welcome home</p>", HOME_LINKS)),
    "/about": ("text/html", html("About", "<p>About</p>", ["/", "/notes.txt", "/broken"])),
    "/blog/": ("text/html", html("Blog", "<p>Posts</p>", ["post-1.html", "/blog/post-2?u=x"])),
    "/blog/post-1.html": ("text/html", html("Post one", "<p>The zeppelin post</p>")),
    "/blog/post-2": ("text/html", html("Post two", "<p>Second post</p>", ["/broken"])),
    "/deep/a": ("text/html", html("A", "<p>level one</p>", ["/deep/b"])),
    "/deep/b": ("text/html", html("B", "<p>level two</p>", ["/deep/c"])),
    "/deep/c": ("text/html", html("C", "<p>level three</p>")),
    "/notes.txt": ("text/plain", "plain notes"),
    "/logo.png": ("image/png", "PNG"),
}


def site_app(requests: list[str]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        requests.append(request.path)
        if request.path == "/broken":
            return web.Response(status=500, text="boom")
        if request.path == "/moved":
            raise web.HTTPFound("https://elsewhere.test/")
        found = SITE_PAGES.get(request.path)
        if found is None:
            raise web.HTTPNotFound()
        content_type, text = found
        return web.Response(text=text, content_type=content_type)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


REPOS_PAGE_1 = [
    {"name": "dice-roller", "description": "Rolls dice", "topics": ["dice"], "stargazers_count": 3,
     "pushed_at": "2025-01-02T03:04:05Z", "html_url": "https://github.com/me/dice-roller",
     "default_branch": "main"},
    {"name": "Secret-Stuff", "private": True, "description": "private"},
    {"name": "../escape", "description": "hostile name"},
]  # fmt: skip
REPOS_PAGE_2 = [
    {"name": "NoReadme", "description": None, "topics": None, "stargazers_count": 0,
     "pushed_at": None, "html_url": "https://github.com/me/NoReadme", "default_branch": "main"},
    {"name": "MixedCase", "description": "m", "stargazers_count": 1,
     "html_url": "https://github.com/me/MixedCase", "default_branch": "dev"},
]  # fmt: skip


def github_app(seen: list[tuple[str, str | None]]) -> web.Application:
    async def repos(request: web.Request) -> web.Response:
        seen.append((request.path_qs, request.headers.get("Authorization")))
        if request.match_info["owner"] != "me":
            raise web.HTTPNotFound()
        if request.query.get("page") == "2":
            return web.json_response(REPOS_PAGE_2)
        assert request.query["per_page"] == "100"
        assert request.query["type"] == "owner"
        next_url = request.url.update_query(page="2")
        return web.json_response(REPOS_PAGE_1, headers={"Link": f'<{next_url}>; rel="next"'})

    async def readme(request: web.Request) -> web.Response:
        seen.append((request.path_qs, request.headers.get("Authorization")))
        name = request.match_info["name"]
        if name == "NoReadme":
            raise web.HTTPNotFound()
        text = f"# {name}\n\nReadme of {name}. " + ("long " * 30_000 if name == "MixedCase" else "")
        content = base64.b64encode(text.encode()).decode()
        return web.json_response({"encoding": "base64", "content": content})

    app = web.Application()
    app.router.add_get("/users/{owner}/repos", repos)
    app.router.add_get("/repos/{owner}/{name}/readme", readme)
    return app


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, list[str]]]:
    requests: list[str] = []
    server = TestServer(site_app(requests), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/")), requests
    finally:
        await server.close()


@pytest.fixture
async def github() -> AsyncIterator[tuple[str, list[tuple[str, str | None]]]]:
    seen: list[tuple[str, str | None]] = []
    server = TestServer(github_app(seen), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/")), seen
    finally:
        await server.close()


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """The current bundle: the example content, with one hand-written extra."""
    target = tmp_path / "srv" / "content"
    shutil.copytree(DEFAULT_CONTENT_DIR, target)
    (target / "hand-written.md").write_text("# Kept\n\nWritten by hand.\n")
    return target


def local_site(root: Path) -> Path:
    files = {
        "index.html": html("Home", "<p>Local home</p>"),
        "about.html": html("About", "<p>About locally</p>"),
        "blog/index.html": html("Blog", "<p>Local blog</p>"),
        "blog/Post One.html": html("Post", "<p>A local post about zeppelins</p>"),
        "notes.md": "# Notes\n\nMarkdown stays markdown.",
        "deep/a/b/too-deep.html": html("Deep", "<p>too deep</p>"),
        "index.nginx-debian.html": html("nginx", "<p>Welcome to nginx</p>"),
        ".hidden/secret.html": html("secret", "<p>secret</p>"),
        "style.css": "body {}",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    outside = root.parent / "outside.html"
    outside.write_text(html("Outside", "<p>outside</p>"))
    os.symlink(outside, root / "linked.html")
    return root


def tree(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def leftovers(content: Path) -> list[str]:
    return sorted(p.name for p in content.parent.iterdir() if p.name != content.name)


async def test_file_mode(content: Path, tmp_path: Path) -> None:
    root = local_site(tmp_path / "www")
    report = await refresh_content(RefreshOptions(content_dir=content, site_root=str(root)))
    assert report.pages == ["about.txt", "blog-post-one.txt", "blog.txt", "index.txt", "notes.md"]
    assert (content / "index.txt").read_text() == "Home\n\nLocal home\n"
    assert (content / "notes.md").read_text() == "# Notes\n\nMarkdown stays markdown.\n"
    assert "x()" not in (content / "blog-post-one.txt").read_text()
    site_map = json.loads((content / "site_map.json").read_text())
    assert {"slug": "blog-post-one", "path": "/blog/Post One.html"} in site_map["sections"]
    # hand-written files and the GitHub cache are carried over, old site pages replaced
    assert (content / "hand-written.md").is_file()
    assert (content / "bio.md").is_file()
    assert (content / "github" / "repos.json").is_file()
    assert not (content / "site_map.json").read_text().count("blog-fair-dice")
    assert "hand-written.md" in report.carried_over
    assert leftovers(content) == []
    assert json.loads((content / MANIFEST).read_text())["pages"] == report.pages


async def test_generated_pages_are_replaced_on_the_next_refresh(
    content: Path, tmp_path: Path
) -> None:
    root = local_site(tmp_path / "www")
    await refresh_content(RefreshOptions(content_dir=content, site_root=str(root)))
    (root / "about.html").unlink()
    report = await refresh_content(RefreshOptions(content_dir=content, site_root=str(root)))
    assert "about.txt" not in report.pages
    assert not (content / "about.txt").exists()
    assert (content / "hand-written.md").is_file()


async def test_url_mode_with_crawl(content: Path, site: tuple[str, list[str]]) -> None:
    base, requests = site
    options = RefreshOptions(content_dir=content, site_root=base, crawl=True, crawl_depth=2)
    report = await refresh_content(options, session=None)
    assert report.pages == [
        "about.txt", "blog-post-1.txt", "blog-post-2.txt", "blog.txt", "deep-a.txt",
        "deep-b.txt", "index.txt", "notes.txt",
    ]  # fmt: skip
    assert "/deep/c" not in requests  # depth 3
    assert "/logo.png" not in requests
    assert not any("other.test" in r for r in requests)
    assert requests.count("/") == 1
    assert (content / "blog-post-1.txt").read_text() == "Post one\n\nThe zeppelin post\n"
    sections = json.loads((content / "site_map.json").read_text())["sections"]
    assert {"slug": "notes", "path": "/notes.txt", "url": f"{base}notes.txt"} in sections
    assert report.warnings == [f"skipped {base}broken: not a 200 text page"]


async def test_url_mode_without_crawl_fetches_only_the_paths(
    content: Path, site: tuple[str, list[str]]
) -> None:
    base, requests = site
    typo = base.replace("http://", "http:/")
    options = RefreshOptions(content_dir=content, site_root=typo, paths=("", "about", "/moved"))
    report = await refresh_content(options)
    assert report.pages == ["about.txt", "index.txt"]
    assert sorted(requests) == ["/", "/about", "/moved"]
    assert any("redirected off the site" in w or "could not fetch" in w for w in report.warnings)


async def test_github_cache(
    content: Path, github: tuple[str, list[tuple[str, str | None]]]
) -> None:
    api, seen = github
    options = RefreshOptions(
        content_dir=content,
        github_owner="me",
        github_token=SecretStr("t0ken"),
        github_api_url=api,
    )
    report = await refresh_content(options)
    assert (report.repos, report.readmes) == (3, 2)
    repos = json.loads((content / "github" / "repos.json").read_text())["repos"]
    assert [r["name"] for r in repos] == ["dice-roller", "NoReadme", "MixedCase"]
    assert repos[0] == {
        "name": "dice-roller", "description": "Rolls dice", "topics": ["dice"], "stars": 3,
        "last_pushed": "2025-01-02T03:04:05Z", "url": "https://github.com/me/dice-roller",
        "default_branch": "main",
    }  # fmt: skip
    readme = content / "github" / "me" / "dice-roller" / "README.md"
    assert readme.read_text().startswith("# dice-roller")
    assert len((content / "github" / "me" / "MixedCase" / "README.md").read_text()) <= 100_001
    assert not (content / "github" / "example-owner").exists()
    assert all(auth == "Bearer t0ken" for _, auth in seen)
    assert not any("escape" in path or "Secret" in path for path, _ in seen)
    # pages were not refreshed: the example pages are all still there
    assert (content / "bio.md").is_file()
    assert (content / "site_map.json").is_file()

    # the tools read what was written
    settings = ToolSettings(_env_file=None, content_dir=content, github_owner="me")
    async with aiohttp.ClientSession() as http:
        ctx = ToolContext(chat_id="c", http=http)
        registry = create_default_registry(settings)
        listed = (await registry.execute("list_github_repos", {}, ctx)).payload
        got = (await registry.execute("get_github_repo", {"name": "mixedcase"}, ctx)).payload
    assert len(listed["repos"]) == 3
    assert got["repo"] == "MixedCase"


async def test_github_failure_keeps_the_cached_copy(
    content: Path, github: tuple[str, list[tuple[str, str | None]]], tmp_path: Path
) -> None:
    api, _ = github
    root = local_site(tmp_path / "www")
    options = RefreshOptions(
        content_dir=content, site_root=str(root), github_owner="nobody", github_api_url=api
    )
    report = await refresh_content(options)
    assert any("GitHub not refreshed" in w for w in report.warnings)
    assert (content / "github" / "example-owner" / "dice-notation" / "README.md").is_file()
    assert "index.txt" in report.pages


async def test_allowlist_limits_the_repos(
    content: Path, github: tuple[str, list[tuple[str, str | None]]]
) -> None:
    api, _ = github
    options = RefreshOptions(
        content_dir=content,
        github_owner="me",
        github_api_url=api,
        repo_allowlist=frozenset({"mixedcase"}),
    )
    report = await refresh_content(options)
    assert (report.repos, report.readmes) == (1, 1)


@pytest.mark.parametrize("site_root", ["missing-folder-{tmp}", "http://127.0.0.1:9/"])
async def test_failed_refresh_leaves_the_bundle_untouched(
    content: Path, tmp_path: Path, site_root: str
) -> None:
    before = tree(content)
    options = RefreshOptions(content_dir=content, site_root=site_root.format(tmp=tmp_path))
    with pytest.raises(RefreshError, match="no pages could be read"):
        await refresh_content(options)
    assert tree(content) == before
    assert leftovers(content) == []


async def test_nothing_to_refresh(content: Path) -> None:
    with pytest.raises(RefreshError, match="nothing to refresh"):
        await refresh_content(RefreshOptions(content_dir=content))


def test_swap_into_a_real_directory(tmp_path: Path) -> None:
    target = tmp_path / "content"
    target.mkdir()
    (target / "old.md").write_text("old")
    staging = tmp_path / ".content.refresh-1"
    staging.mkdir()
    (staging / "new.md").write_text("new")
    inode_before = target.stat().st_ino
    swap_into_place(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.md"]
    assert target.stat().st_ino != inode_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content"]


def test_swap_through_a_symlink(tmp_path: Path) -> None:
    first = tmp_path / ".content.refresh-a"
    first.mkdir()
    (first / "old.md").write_text("old")
    target = tmp_path / "content"
    target.symlink_to(first.name)
    staging = tmp_path / ".content.refresh-b"
    staging.mkdir()
    (staging / "new.md").write_text("new")
    swap_into_place(staging, target)
    assert target.is_symlink()
    assert os.readlink(target) == staging.name
    assert [p.name for p in target.iterdir()] == ["new.md"]
    assert not first.exists()


def test_swap_into_a_missing_target(tmp_path: Path) -> None:
    staging = tmp_path / ".content.refresh-1"
    staging.mkdir()
    swap_into_place(staging, tmp_path / "content")
    assert (tmp_path / "content").is_dir()
    assert not staging.exists()


def test_command_line(
    content: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    root = local_site(tmp_path / "www")
    with capture_logs():
        code = main(["--site-root", str(root), "--content-dir", str(content), "--no-github"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["pages"][0] == "about.txt"
    code = main(["--site-root", str(tmp_path / "nope"), "--content-dir", str(content)])
    assert code == 1
    assert "content left as it was" in capsys.readouterr().err
