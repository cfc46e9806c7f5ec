"""Read access to the cached content bundle (``CONTENT_DIR``), shared by the site and GitHub
tools. Paths are never built from model input: names are looked up in directory listings."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tools.site_search import SearchHit, SiteIndex, split_passages

__all__ = [
    "DOCUMENT_SUFFIXES",
    "Document",
    "SiteContent",
    "is_inside",
    "page_slug_candidates",
    "read_limited",
    "slug_for_path",
]

#: Page files, in order of preference when two share a slug.
DOCUMENT_SUFFIXES = (".md", ".txt")
MAX_FILE_BYTES = 2_000_000
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,150}$")
_PAGE_EXTENSIONS = (".html", ".htm", ".md", ".txt", ".php")
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class Document:
    """A content page: ``slug`` is the file name without its suffix, lower-cased."""

    slug: str
    file: str
    path: Path


def _path_segments(path: str) -> list[str]:
    segments = [s for s in unquote(path).lower().split("/") if s not in {"", ".", ".."}]
    if segments:
        for ext in _PAGE_EXTENSIONS:
            if segments[-1].endswith(ext) and len(segments[-1]) > len(ext):
                segments[-1] = segments[-1][: -len(ext)]
                break
    if segments and segments[-1] == "index" and len(segments) > 1:
        segments.pop()
    return segments


def slug_for_path(path: str, *, fallback: str = "page") -> str:
    """The slug of a site path: ``/blog/post.html`` -> ``blog-post``, ``/`` -> ``index``,
    ``/docs/index.html`` -> ``docs``. Used by the refresher to name files and by lookups.
    A path whose characters are all unusable gives ``fallback``."""
    segments = _path_segments(path)
    if not segments:
        return "index"
    slug = _UNSAFE.sub("-", "-".join(segments)).strip("-.")
    return slug[:150] or fallback


def page_slug_candidates(slug_or_url: str) -> list[str]:
    """Slugs to try for a page name or URL, most specific first.

    ``https://site/blog/post-1.html`` gives ``blog-post-1`` (the refresher's naming) and then
    ``post-1``; ``/`` or an empty path gives ``index``. Query and fragment are ignored.
    """
    raw = slug_or_url.strip()
    parts = urlsplit(raw)
    path = parts.path if (parts.scheme or parts.netloc) else raw.split("?")[0].split("#")[0]
    candidates = [slug_for_path(path, fallback="")]
    segments = _path_segments(path)
    if len(segments) > 1:
        candidates.append(slug_for_path(segments[-1], fallback=""))
    return [c for c in dict.fromkeys(candidates) if _SLUG.fullmatch(c)]


def read_limited(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """Up to ``limit`` bytes of a file, decoded as UTF-8 (bad bytes replaced)."""
    with path.open("rb") as handle:
        return handle.read(limit).decode("utf-8", errors="replace")


def is_inside(path: Path, root: Path) -> bool:
    """True when ``path`` (symlinks resolved) lies under ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except (OSError, ValueError):
        return False
    return True


class SiteContent:
    """The content bundle at ``root``; the search index is rebuilt when the files change
    (including when the refresher swaps in a new directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: tuple[object, SiteIndex] | None = None
        self._lock = asyncio.Lock()

    def documents(self) -> dict[str, Document]:
        """Top-level pages (``*.md``, ``*.txt``; hidden files excluded) by slug."""
        found: dict[str, Document] = {}
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return found
        for path in entries:
            suffix = path.suffix.lower()
            if suffix not in DOCUMENT_SUFFIXES or path.name.startswith((".", "_")):
                continue
            if not path.is_file() or not is_inside(path, self.root):
                continue
            slug = path.stem.lower()
            current = found.get(slug)
            if current is None or DOCUMENT_SUFFIXES.index(suffix) < DOCUMENT_SUFFIXES.index(
                Path(current.file).suffix.lower()
            ):
                found[slug] = Document(slug=slug, file=path.name, path=path)
        return found

    def find_page(self, slug_or_url: str) -> Document | None:
        """The page a slug or URL names, trying ``page_slug_candidates`` in order."""
        documents = self.documents()
        for slug in page_slug_candidates(slug_or_url):
            if slug in documents:
                return documents[slug]
        return None

    def read(self, document: Document) -> str:
        return read_limited(document.path)

    def _signature(self) -> object:
        try:
            root_stat = self.root.stat()
        except OSError:
            return None
        files = []
        for doc in self.documents().values():
            try:
                stat = doc.path.stat()
            except OSError:
                continue
            files.append((doc.file, stat.st_mtime_ns, stat.st_size))
        return (root_stat.st_ino, root_stat.st_dev, tuple(files))

    def _build_index(self) -> SiteIndex:
        passages = []
        for doc in self.documents().values():
            try:
                text = self.read(doc)
            except OSError:
                continue
            passages.extend(split_passages(text, file=doc.file, slug=doc.slug))
        return SiteIndex(passages)

    async def index(self) -> SiteIndex:
        """The current index, rebuilt in a thread if the content changed since last time."""
        async with self._lock:
            signature = await asyncio.to_thread(self._signature)
            if self._index is None or self._index[0] != signature:
                self._index = (signature, await asyncio.to_thread(self._build_index))
            return self._index[1]

    async def search(self, query: str, limit: int) -> list[SearchHit]:
        """Ranked hits (one per page) for ``query``; empty when nothing matches."""
        return (await self.index()).search(query, limit)
