"""Ranked search over the cached site: pages cut into passages, BM25 (bm25s), snippets
centred on the matched terms."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Passage",
    "SearchHit",
    "SiteIndex",
    "make_snippet",
    "split_passages",
    "tokenize",
]

SNIPPET_CHARS = 500
_TARGET_PASSAGE = 600
_MAX_BLOCK = 1000
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset(
    {
        "a", "about", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "did",
        "do", "does", "for", "from", "had", "has", "have", "he", "her", "his", "how", "i", "if",
        "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our", "she", "so",
        "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to",
        "was", "we", "were", "what", "when", "where", "which", "who", "whom", "why", "will",
        "with", "would", "you", "your",
    }
)  # fmt: skip
#: First lines that only say the file is example content are not indexed.
BANNER_PREFIXES = ("> example content", "example content")


def _stem(word: str) -> str:
    """A deliberately small plural folding, applied to documents and queries alike."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased word stems without stopwords or one-letter words."""
    tokens = []
    for match in _WORD.finditer(text.lower()):
        word = match.group(0)
        if len(word) > 1 and word not in _STOPWORDS:
            tokens.append(_stem(word))
    return tokens


@dataclass(frozen=True, slots=True)
class Passage:
    """A few paragraphs of one page, with the heading they sit under."""

    file: str
    slug: str
    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class SearchHit:
    file: str
    slug: str
    heading: str
    snippet: str
    score: float


def strip_banner(text: str) -> str:
    """Drop leading example-content banner lines (they would match every query)."""
    lines = text.splitlines()
    while lines and (not lines[0].strip() or lines[0].strip().lower().startswith(BANNER_PREFIXES)):
        lines.pop(0)
    return "\n".join(lines)


def _split_long(block: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(block):
        while len(sentence) > _MAX_BLOCK:  # no sentence breaks: cut on a space
            cut = sentence.rfind(" ", 0, _TARGET_PASSAGE)
            cut = cut if cut > 0 else _TARGET_PASSAGE
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + len(sentence) > _TARGET_PASSAGE:
            pieces.append(current)
            current = ""
        current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def split_passages(text: str, *, file: str, slug: str) -> list[Passage]:
    """Cut a page into passages of about 600 characters; a heading starts a new passage."""
    passages: list[Passage] = []
    heading = ""
    current: list[str] = []

    def flush() -> None:
        body = "\n".join(current).strip()
        if body:
            passages.append(Passage(file=file, slug=slug, heading=heading, text=body))
        current.clear()

    for raw_block in re.split(r"\n\s*\n", strip_banner(text)):
        block = raw_block.strip()
        if not block:
            continue
        if block.startswith("#"):
            flush()
            first, _, rest = block.partition("\n")
            heading = first.lstrip("#").strip()
            current.append(first)
            block = rest.strip()
            if not block:
                continue
        for piece in _split_long(block) if len(block) > _MAX_BLOCK else [block]:
            if current and sum(len(p) for p in current) + len(piece) > _TARGET_PASSAGE:
                flush()
            current.append(piece)
    flush()
    return passages


def make_snippet(text: str, terms: Iterable[str], width: int = SNIPPET_CHARS) -> str:
    """Up to ``width`` characters of ``text`` around the densest cluster of query terms.

    Whitespace is collapsed; an ellipsis marks each cut end. Without any match the start of
    the text is returned.
    """
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    wanted = set(terms)
    hits = [
        (m.start(), _stem(m.group(0).lower()))
        for m in _WORD.finditer(flat)
        if _stem(m.group(0).lower()) in wanted
    ]
    start = 0
    if hits:
        lead = width // 5
        best = -1
        for position, _ in hits:
            begin = max(0, position - lead)
            covered = {term for pos, term in hits if begin <= pos < begin + width - 20}
            if len(covered) > best:
                best, start = len(covered), begin
    start = min(start, max(0, len(flat) - width))
    if start > 0:
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < start + 30 else start
    end = start + width
    if end < len(flat):
        space = flat.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    snippet = flat[start:end].strip()
    return ("…" if start > 0 else "") + snippet + ("…" if end < len(flat) else "")


class SiteIndex:
    """A BM25 index over passages. Build once per content version; searching is cheap."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self._passages = list(passages)
        self._retriever: Any = None
        if self._passages:
            import bm25s  # imported lazily: it pulls in numpy and scipy

            corpus = [
                tokenize(f"{p.slug.replace('-', ' ')} {p.heading} {p.text}") or ["_"]
                for p in self._passages
            ]
            retriever = bm25s.BM25()
            retriever.index(corpus, show_progress=False)
            self._retriever = retriever

    def __len__(self) -> int:
        return len(self._passages)

    def search(self, query: str, limit: int) -> list[SearchHit]:
        """The best passage of each of the ``limit`` best-matching pages, best first."""
        terms = tokenize(query)
        if not terms or self._retriever is None or limit < 1:
            return []
        k = min(len(self._passages), max(limit * 8, 20))
        documents, scores = self._retriever.retrieve([terms], k=k, show_progress=False)
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for index, score in zip(documents[0], scores[0], strict=True):
            passage = self._passages[int(index)]
            if float(score) <= 0 or passage.file in seen:
                continue
            seen.add(passage.file)
            hits.append(
                SearchHit(
                    file=passage.file,
                    slug=passage.slug,
                    heading=passage.heading,
                    snippet=make_snippet(passage.text, terms),
                    score=round(float(score), 3),
                )
            )
            if len(hits) >= limit:
                break
        return hits
