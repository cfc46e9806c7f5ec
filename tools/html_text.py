"""HTML to plain text (and link extraction) with the standard library's ``html.parser``."""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["extract_links", "html_to_text", "normalise_whitespace"]

# Elements whose content is never text a reader sees.
_SKIPPED = frozenset(
    {"script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object"}
)
# Elements that separate paragraphs (a blank line) or lines.
_PARAGRAPHS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "details", "div", "dl",
        "fieldset", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "main", "nav", "ol", "p", "pre", "section", "table", "title", "ul",
    }
)  # fmt: skip
_LINES = frozenset({"br", "dd", "dt", "figcaption", "li", "summary", "tr"})
_CELLS = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\f\v\r\u00a0]+")
_ANY_WHITESPACE = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._skip: list[str] = []
        self._pre_depth = 0
        self._pending_break = 0

    def _request_break(self, lines: int) -> None:
        self._pending_break = max(self._pending_break, lines)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skip.append(tag)
            return
        if tag == "pre":
            self._pre_depth += 1
        if tag in _PARAGRAPHS:
            self._request_break(2)
        elif tag in _LINES:
            self._request_break(1)
            if tag == "li":
                self._emit("- ")
        elif tag in _CELLS:
            self._emit(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _PARAGRAPHS:
            self._request_break(2)
        elif tag in _LINES:
            self._request_break(1)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            if tag in self._skip:
                while self._skip.pop() != tag:
                    pass
            return
        if self._skip:
            return
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag in _PARAGRAPHS:
            self._request_break(2)
        elif tag in _LINES and tag != "br":
            self._request_break(1)

    def _emit(self, text: str) -> None:
        if self._skip:
            return
        if self._pending_break and self.pieces:
            self.pieces.append("\n" * self._pending_break)
        self._pending_break = 0
        self.pieces.append(text)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._pre_depth:
            self._emit(data)
        elif data.strip():
            self._emit(_ANY_WHITESPACE.sub(" ", data))
        elif self.pieces and not self._pending_break:
            self.pieces.append(" ")


def normalise_whitespace(text: str) -> str:
    """Collapse runs of spaces, strip lines, keep at most one blank line between blocks."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = _SPACES.sub(" ", raw).strip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()


def html_to_text(markup: str) -> str:
    """Readable text of an HTML document: scripts and styles dropped, blocks on new lines,
    entities decoded, whitespace collapsed. Never raises on malformed markup."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return normalise_whitespace("".join(parser.pieces))


class _LinkExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for name, value in attrs:
                if name == "href" and value:
                    self.links.append(value.strip())


def extract_links(markup: str) -> list[str]:
    """The ``href`` of every ``<a>`` element, in document order, as written."""
    parser = _LinkExtractor()
    parser.feed(markup)
    parser.close()
    return parser.links
