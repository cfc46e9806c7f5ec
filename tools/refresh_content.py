"""Rebuild the content bundle the worker reads: ``python -m tools.refresh_content``.

Sources: a local site folder (``*.html``, ``*.htm``, ``*.md``, ``*.txt`` down to
``--max-depth``) or a site URL (the ``--paths`` list, optionally crawling same-host links
to ``--crawl-depth``), plus the owner's public GitHub repositories and their READMEs
(``GITHUB_TOKEN`` raises the API rate limit). Everything is written into a fresh directory
next to ``CONTENT_DIR`` and swapped into place in one step, so the worker never reads a
half-written bundle:

- a real directory is exchanged atomically with ``renameat2(RENAME_EXCHANGE)`` on Linux,
  elsewhere with two renames microseconds apart;
- a symlink (``CONTENT_DIR -> .content.refresh-xyz``) is replaced atomically with
  ``os.replace``.

Hand-written files of the current bundle (``bio.md``, ``what_matthew_wants.txt``...) are
carried over; generated pages are tracked in ``.refresh.json`` and replaced. When a source
fails, the previous copy of what it produces is kept; when no page at all can be read from
the site, nothing is swapped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import os
import re
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from pydantic import SecretStr
from yarl import URL

from tools.html_text import extract_links, html_to_text
from tools.live_fetch import read_capped
from tools.settings import ToolSettings
from tools.site_content import read_limited, slug_for_path

__all__ = [
    "RefreshError",
    "RefreshOptions",
    "RefreshReport",
    "main",
    "refresh_content",
    "swap_into_place",
]

log = structlog.stdlib.get_logger("tools.refresh_content")

MANIFEST = ".refresh.json"
PAGE_CHAR_LIMIT = 100_000
README_CHAR_LIMIT = 100_000
USER_AGENT = "terrarium-cache/1.0"
_MAX_SOURCE_BYTES = 2_000_000
_LOCAL_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".txt": "txt"}
_REMOTE_TYPES = {"text/html", "application/xhtml+xml", "text/plain", "text/markdown"}
_SKIPPED_LINK_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".ico", ".pdf", ".zip", ".gz", ".tar",
    ".css", ".js", ".json", ".xml", ".mp3", ".mp4", ".webm", ".woff", ".woff2", ".ttf",
)  # fmt: skip
_REPO_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_MAX_GITHUB_PAGES = 10


class RefreshError(Exception):
    """The refresh could not produce a usable bundle; the current one was left untouched."""


@dataclass(frozen=True, slots=True)
class RefreshOptions:
    """What to refresh and where. ``site_root`` None skips pages, ``github_owner`` None
    skips GitHub; whatever is skipped is carried over from the current bundle."""

    content_dir: Path
    site_root: str | None = None
    paths: tuple[str, ...] = ("",)
    max_depth: int = 2
    crawl: bool = False
    crawl_depth: int = 2
    max_pages: int = 200
    github_owner: str | None = None
    github_token: SecretStr | None = None
    github_api_url: str = "https://api.github.com"
    repo_allowlist: frozenset[str] = frozenset()
    timeout: float = 20.0

    @classmethod
    def from_settings(cls, settings: ToolSettings, **overrides: Any) -> RefreshOptions:
        """Options from ``CONTENT_REFRESH_*`` and ``GITHUB_*``. GitHub is refreshed only when
        ``GITHUB_OWNER`` was set explicitly (the default names the example account)."""
        explicit_owner = "github_owner" in settings.model_fields_set
        values: dict[str, Any] = {
            "content_dir": settings.content_dir,
            "site_root": settings.content_refresh_site_root,
            "paths": tuple(settings.content_refresh_paths) or ("",),
            "max_depth": settings.content_refresh_max_depth,
            "crawl": settings.content_refresh_crawl,
            "crawl_depth": settings.content_refresh_crawl_depth,
            "github_owner": settings.github_owner if explicit_owner else None,
            "github_token": settings.github_token,
            "github_api_url": str(settings.github_api_url),
            "repo_allowlist": frozenset(r.lower() for r in settings.content_refresh_repos),
        }
        values.update(overrides)
        return cls(**values)


@dataclass(slots=True)
class RefreshReport:
    """What a refresh wrote (sizes and names, no content)."""

    content_dir: str
    pages: list[str] = field(default_factory=list)
    repos: int = 0
    readmes: int = 0
    carried_over: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Page:
    slug: str
    suffix: str
    text: str
    path: str
    url: str | None = None

    @property
    def file_name(self) -> str:
        return f"{self.slug}{self.suffix}"


# --- site pages ---------------------------------------------------------------------------


def _is_url(site_root: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:/", site_root, re.IGNORECASE))


def normalise_site_url(site_root: str) -> URL:
    """``https:/host`` (a common typo) and bare ``host/path`` become proper http(s) URLs."""
    text = site_root.strip()
    text = re.sub(r"^(https?):/(?!/)", r"\1://", text, flags=re.IGNORECASE)
    if "://" not in text:
        text = f"https://{text}"
    url = URL(text)
    if url.scheme not in {"http", "https"} or not url.host:
        raise RefreshError(f"not an http(s) site URL: {site_root}")
    return url if url.path.endswith("/") else url.with_path(url.path + "/")


def collect_local_pages(root: Path, max_depth: int) -> list[_Page]:
    """Pages of a local site folder; ``max_depth`` counts directories below ``root``."""
    if not root.is_dir():
        raise RefreshError(f"site folder not found: {root}")
    pages: list[_Page] = []
    for dirpath, dirnames, filenames in os.walk(root):
        relative = Path(dirpath).relative_to(root)
        dirnames[:] = (
            []
            if len(relative.parts) >= max_depth
            else sorted(d for d in dirnames if not d.startswith(".") and d != "node_modules")
        )
        for name in sorted(filenames):
            path = Path(dirpath) / name
            kind = _LOCAL_SUFFIXES.get(path.suffix.lower())
            if kind is None or name.startswith((".", "index.nginx-debian")) or path.is_symlink():
                continue
            raw = read_limited(path, _MAX_SOURCE_BYTES)
            text = html_to_text(raw) if kind == "html" else raw.strip()
            site_path = "/" + (relative / name).as_posix()
            pages.append(
                _Page(
                    slug=slug_for_path(site_path),
                    suffix=".md" if kind == "md" else ".txt",
                    text=text[:PAGE_CHAR_LIMIT],
                    path=site_path,
                )
            )
    return pages


async def _fetch_page(
    session: aiohttp.ClientSession, url: URL, seconds: float
) -> tuple[URL, str, str] | None:
    async with session.get(
        url,
        headers={"User-Agent": USER_AGENT},
        timeout=aiohttp.ClientTimeout(total=seconds),
    ) as response:
        if response.status != 200 or response.content_type not in _REMOTE_TYPES:
            return None
        body, _ = await read_capped(response, _MAX_SOURCE_BYTES)
        text = body.decode(response.charset or "utf-8", errors="replace")
        return response.url, response.content_type, text


async def collect_remote_pages(
    session: aiohttp.ClientSession, options: RefreshOptions, report: RefreshReport
) -> list[_Page]:
    """Pages of a site URL: the listed paths, then same-host links breadth-first."""
    if options.site_root is None:
        raise RefreshError("no site root given")
    root = normalise_site_url(options.site_root)
    queue: deque[tuple[URL, int]] = deque(
        (root.join(URL(path.strip().lstrip("/"))), 0) for path in options.paths
    )
    seen: set[str] = set()
    pages: list[_Page] = []
    slugs: set[str] = set()
    while queue and len(pages) < options.max_pages:
        url, depth = queue.popleft()
        key = str(url.with_query(None).with_fragment(None)).rstrip("/")
        if key in seen:
            continue
        seen.add(key)
        try:
            fetched = await _fetch_page(session, url, options.timeout)
        except (aiohttp.ClientError, TimeoutError, UnicodeError, LookupError) as exc:
            report.warnings.append(f"could not fetch {url}: {type(exc).__name__}")
            continue
        if fetched is None:
            report.warnings.append(f"skipped {url}: not a 200 text page")
            continue
        final, content_type, body = fetched
        if final.host != root.host or final.port != root.port:
            report.warnings.append(f"skipped {url}: redirected off the site")
            continue
        is_html = content_type in {"text/html", "application/xhtml+xml"}
        slug = slug_for_path(final.path)
        if slug not in slugs:
            slugs.add(slug)
            text = html_to_text(body) if is_html else body.strip()
            pages.append(
                _Page(
                    slug=slug,
                    suffix=".md" if content_type == "text/markdown" else ".txt",
                    text=text[:PAGE_CHAR_LIMIT],
                    path=final.path,
                    url=str(final.with_fragment(None)),
                )
            )
        if options.crawl and is_html and depth < options.crawl_depth:
            for href in extract_links(body):
                try:
                    link = final.join(URL(href)).with_fragment(None).with_query(None)
                except (ValueError, TypeError):
                    continue
                if (
                    link.scheme in {"http", "https"}
                    and link.host == root.host
                    and link.port == root.port
                    and not link.path.lower().endswith(_SKIPPED_LINK_SUFFIXES)
                ):
                    queue.append((link, depth + 1))
    return pages


# --- GitHub -------------------------------------------------------------------------------


def _github_headers(token: SecretStr | None) -> dict[str, str]:
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": USER_AGENT,
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    return headers


async def _github_json(
    session: aiohttp.ClientSession, url: URL, headers: dict[str, str], seconds: float
) -> tuple[Any, URL | None]:
    async with session.get(
        url, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds), allow_redirects=False
    ) as response:
        if response.status == 404:
            return None, None
        if response.status != 200:
            raise RefreshError(f"GitHub answered HTTP {response.status} for {url.path}")
        body, truncated = await read_capped(response, 10_000_000)
        if truncated:
            raise RefreshError(f"GitHub answer too large for {url.path}")
        next_link = response.links.get("next")
        next_url = URL(str(next_link["url"])) if next_link and "url" in next_link else None
        return json.loads(body), next_url


async def collect_github(
    session: aiohttp.ClientSession, options: RefreshOptions
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Public repositories of the owner (``repos.json`` entries) and their READMEs."""
    if options.github_owner is None:
        raise RefreshError("no GitHub owner given")
    api = URL(options.github_api_url.rstrip("/") + "/")
    headers = _github_headers(options.github_token)
    url: URL | None = api.join(URL(f"users/{options.github_owner}/repos")).with_query(
        per_page="100", type="owner", sort="updated"
    )
    raw: list[Any] = []
    for _ in range(_MAX_GITHUB_PAGES):
        if url is None:
            break
        if url.host != api.host or url.port != api.port:  # never send the token elsewhere
            raise RefreshError("GitHub pagination pointed to another host")
        data, url = await _github_json(session, url, headers, options.timeout)
        if data is None:
            raise RefreshError(f"GitHub user {options.github_owner} not found")
        if not isinstance(data, list):
            raise RefreshError("unexpected GitHub answer for the repository list")
        raw.extend(data)
    repos: list[dict[str, Any]] = []
    readmes: dict[str, str] = {}
    for item in raw:
        if not isinstance(item, dict) or item.get("private"):
            continue
        name = item.get("name")
        if not isinstance(name, str) or not _REPO_NAME.fullmatch(name) or name in {".", ".."}:
            continue
        if options.repo_allowlist and name.lower() not in options.repo_allowlist:
            continue
        repos.append(
            {
                "name": name,
                "description": item.get("description") or "",
                "topics": [t for t in item.get("topics") or [] if isinstance(t, str)],
                "stars": item.get("stargazers_count", 0),
                "last_pushed": item.get("pushed_at"),
                "url": item.get("html_url"),
                "default_branch": item.get("default_branch"),
            }
        )
        readme_url = api.join(URL(f"repos/{options.github_owner}/{name}/readme"))
        readme, _ = await _github_json(session, readme_url, headers, options.timeout)
        if isinstance(readme, dict) and isinstance(readme.get("content"), str):
            try:
                text = base64.b64decode(readme["content"]).decode("utf-8", errors="replace")
            except ValueError:
                continue
            readmes[name] = text[:README_CHAR_LIMIT]
    return repos, readmes


# --- writing and swapping -----------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


def _load_manifest(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _carry_over(
    current: Path, staging: Path, *, pages_replaced: bool, github_replaced: bool
) -> tuple[list[str], list[str]]:
    """Copy what this refresh does not regenerate; returns (carried names, old page files)."""
    if not current.is_dir():
        return [], []
    old_pages = [p for p in _load_manifest(current).get("pages", []) if isinstance(p, str)]
    generated = set(old_pages) | {"site_map.json"}
    carried: list[str] = []
    for entry in sorted(current.iterdir()):
        name = entry.name
        if name.startswith(".") or (staging / name).exists():
            continue
        if pages_replaced and name in generated:
            continue
        if github_replaced and name == "github":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, staging / name, symlinks=True)
        else:
            shutil.copy2(entry, staging / name, follow_symlinks=False)
        carried.append(name)
    return carried, old_pages


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False if
    unsupported here."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    errno = ctypes.get_errno()
    if errno in {22, 38, 95}:  # EINVAL, ENOSYS, EOPNOTSUPP: filesystem cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), str(b))


def swap_into_place(staging: Path, target: Path) -> None:
    """Make ``staging`` the content at ``target`` in one step and delete the old content.

    ``staging`` must be a sibling of ``target`` (same filesystem). Raises ``OSError``.
    """
    if target.is_symlink():
        old = target.resolve()
        link = target.parent / f".{target.name}.link-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(staging.name, target_is_directory=True)
        os.replace(link, target)
        if old.parent == target.parent.resolve() and old.name.startswith(f".{target.name}."):
            shutil.rmtree(old, ignore_errors=True)
        return
    if not target.exists():
        staging.rename(target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old content
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _make_staging(target: Path) -> Path:
    """An empty, world-readable directory beside ``target`` (same filesystem)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.refresh-", dir=target.parent))
    staging.chmod(0o755)
    return staging


def _build(
    staging: Path,
    options: RefreshOptions,
    pages: list[_Page] | None,
    github: tuple[list[dict[str, Any]], dict[str, str]] | None,
    report: RefreshReport,
) -> None:
    owner = options.github_owner or ""
    if pages is not None:
        written: set[str] = set()
        sections = []
        for page in pages:
            if page.file_name in written:
                report.warnings.append(f"duplicate slug {page.slug} ({page.path}) skipped")
                continue
            written.add(page.file_name)
            _write_text(staging / page.file_name, page.text)
            section = {"slug": page.slug, "path": page.path}
            if page.url:
                section["url"] = page.url
            sections.append(section)
        _write_text(staging / "site_map.json", json.dumps({"sections": sections}, indent=2))
        report.pages = sorted(written)
    if github is not None:
        repos, readmes = github
        _write_text(staging / "github" / "repos.json", json.dumps({"repos": repos}, indent=2))
        for name, text in readmes.items():
            _write_text(staging / "github" / owner / name / "README.md", text)
        report.repos, report.readmes = len(repos), len(readmes)
    carried, old_pages = _carry_over(
        options.content_dir,
        staging,
        pages_replaced=pages is not None,
        github_replaced=github is not None,
    )
    report.carried_over = carried
    manifest = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "pages": report.pages if pages is not None else old_pages,
        "site_root": options.site_root,
        "github_owner": options.github_owner,
    }
    _write_text(staging / MANIFEST, json.dumps(manifest, indent=2))


async def refresh_content(
    options: RefreshOptions, *, session: aiohttp.ClientSession | None = None
) -> RefreshReport:
    """Fetch the sources, build a new bundle beside ``options.content_dir`` and swap it in.

    Raises ``RefreshError`` (bundle untouched) when the site yields no page at all, or when
    nothing is configured to refresh.
    """
    if options.site_root is None and options.github_owner is None:
        raise RefreshError("nothing to refresh: no site root and no GitHub owner")
    report = RefreshReport(content_dir=str(options.content_dir))
    own_session = session is None
    http = session or aiohttp.ClientSession(trust_env=True)
    try:
        pages: list[_Page] | None = None
        if options.site_root is not None:
            local = not _is_url(options.site_root) and await asyncio.to_thread(
                Path(options.site_root).is_dir
            )
            if not local:
                pages = await collect_remote_pages(http, options, report)
            else:
                pages = await asyncio.to_thread(
                    collect_local_pages, Path(options.site_root), options.max_depth
                )
            if not pages:
                raise RefreshError(f"no pages could be read from {options.site_root}")
        github = None
        if options.github_owner is not None:
            try:
                github = await collect_github(http, options)
            except (RefreshError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                report.warnings.append(f"GitHub not refreshed, keeping the cached copy: {exc}")
    finally:
        if own_session:
            await http.close()

    target = options.content_dir
    staging = await asyncio.to_thread(_make_staging, target)
    try:
        await asyncio.to_thread(_build, staging, options, pages, github, report)
        await asyncio.to_thread(swap_into_place, staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "tools.content_refreshed",
        pages=len(report.pages),
        repos=report.repos,
        readmes=report.readmes,
        warnings=len(report.warnings),
    )
    return report


# --- command line ---------------------------------------------------------------------------


def _parser(settings: ToolSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.refresh_content",
        description="Rebuild the cached site and GitHub content Terra's tools read.",
    )
    parser.add_argument(
        "--site-root",
        default=settings.content_refresh_site_root,
        help="local site folder or site URL (CONTENT_REFRESH_SITE_ROOT)",
    )
    parser.add_argument(
        "--content-dir", type=Path, default=settings.content_dir, help="target (CONTENT_DIR)"
    )
    parser.add_argument("--owner", help="GitHub user whose repos to cache (GITHUB_OWNER)")
    parser.add_argument("--no-github", action="store_true", help="do not refresh GitHub")
    parser.add_argument("--allowlist", type=Path, help="file of repo names, one per line")
    parser.add_argument("--max-depth", type=int, default=settings.content_refresh_max_depth)
    parser.add_argument(
        "--paths",
        nargs="*",
        default=list(settings.content_refresh_paths),
        help="URL mode: paths to fetch ('' is the home page)",
    )
    parser.add_argument("--crawl", action="store_true", default=settings.content_refresh_crawl)
    parser.add_argument("--crawl-depth", type=int, default=settings.content_refresh_crawl_depth)
    parser.add_argument("--max-pages", type=int, default=200)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints a JSON report. Exit status 1 when nothing swapped."""
    settings = ToolSettings()
    args = _parser(settings).parse_args(argv)
    overrides: dict[str, Any] = {
        "content_dir": args.content_dir,
        "site_root": args.site_root,
        "paths": tuple(args.paths) or ("",),
        "max_depth": args.max_depth,
        "crawl": args.crawl,
        "crawl_depth": args.crawl_depth,
        "max_pages": args.max_pages,
    }
    if args.owner:
        overrides["github_owner"] = args.owner
    if args.no_github:
        overrides["github_owner"] = None
    if args.allowlist:
        names = args.allowlist.read_text(encoding="utf-8").split()
        overrides["repo_allowlist"] = frozenset(n.strip().lower() for n in names if n.strip())
    options = RefreshOptions.from_settings(settings, **overrides)
    try:
        report = asyncio.run(refresh_content(options))
    except (RefreshError, OSError) as exc:
        print(f"refresh failed, content left as it was: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    from logsetup import configure_logging

    configure_logging()
    raise SystemExit(main())
