"""Token counts from the model server's own tokenizer, where it has one (issue 16).

The context budget (:mod:`worker.conversation`) counts with a conservative estimate (a token
per 3 bytes), which over-counts English about 1.3 times and so trims history the model could
still read. Servers built on llama.cpp or vLLM tokenize on request:

- llama-cpp-python: ``POST /extras/tokenize/count`` ``{"input", "model"}`` -> ``{"count"}``;
- vLLM and llama.cpp's own server: ``POST /tokenize`` ``{"prompt"}`` (vLLM) or
  ``{"content"}`` (llama.cpp) -> ``{"count", "tokens"}`` / ``{"tokens"}``; one body with
  both keys suits both.

The routes sit at the server's root, beside ``/v1``. :class:`ServerTokenizer` finds the one
the server has with its first texts (a server that answers neither is asked no more; one that
cannot be reached is asked again next time), then counts each text once: counts are cached by
a digest of the text. Any failure while counting gives ``None`` and the caller keeps the
estimate; a count never makes a prompt fail. Only asked when the estimate says a prompt must
be trimmed, so most answers make no request here.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import structlog

__all__ = ["TOKENIZE_ROUTES", "ServerTokenizer", "server_root"]

logger = structlog.get_logger("worker.tokenizer")

#: Tried in this order, at the server's root.
TOKENIZE_ROUTES = ("/extras/tokenize/count", "/tokenize")

#: Texts whose counts are kept (by a 16-byte digest each).
CACHE_ENTRIES = 4096

#: Tokenize requests in flight at once for one prompt.
CONCURRENCY = 4


def server_root(base_url: str) -> str:
    """``http://host:port`` for an OpenAI base URL such as ``http://host:port/v1``."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _body(path: str, text: str, model: str) -> dict[str, Any]:
    if path == "/extras/tokenize/count":
        return {"input": text, "model": model}
    return {"model": model, "prompt": text, "content": text, "add_special_tokens": False}


def _count(answer: Any) -> int | None:
    """The count in a tokenize answer: ``count``, else the length of ``tokens``."""
    if not isinstance(answer, Mapping):
        return None
    count = answer.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    tokens = answer.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


class _NoRoute(Exception):
    """The server answered, but not with a count: this route is not a tokenizer."""


class ServerTokenizer:
    """Counts tokens with the server's tokenizer (module doc); never raises."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.root = server_root(base_url)
        self.model = model
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        #: The route that counts, once found; False: the server has none; None: not known.
        self.route: str | bool | None = None
        self._cache: OrderedDict[bytes, int] = OrderedDict()

    @property
    def available(self) -> bool:
        """False once the server proved it has no tokenize route."""
        return self.route is not False

    async def counts(self, texts: Iterable[str]) -> dict[str, int] | None:
        """Token counts of ``texts`` (None: no tokenizer, or it failed: use the estimate)."""
        if self.route is False:
            return None
        wanted = list(dict.fromkeys(texts))
        found: dict[str, int] = {}
        missing: list[str] = []
        for text in wanted:
            cached = self._cache.get(_digest(text))
            if cached is None:
                missing.append(text)
            else:
                found[text] = cached
        if not missing:
            return found
        try:
            async with aiohttp.ClientSession(timeout=self.timeout, headers=self._headers) as http:
                if not isinstance(self.route, str):
                    route = await self._find_route(http, missing[0])
                    if route is None:
                        return None
                gate = asyncio.Semaphore(CONCURRENCY)

                async def one(text: str) -> None:
                    async with gate:
                        found[text] = await self._ask(http, str(self.route), text)

                await asyncio.gather(*(one(text) for text in missing if text not in found))
        except (aiohttp.ClientError, TimeoutError, ValueError, _NoRoute) as exc:
            logger.info("worker.tokenizer_failed", error=type(exc).__name__)
            return None
        for text in missing:
            self._remember(text, found[text])
        return found

    async def _find_route(self, http: aiohttp.ClientSession, text: str) -> str | None:
        """Probe the routes with ``text``; the first that counts is kept (and ``text``'s count)."""
        for path in TOKENIZE_ROUTES:
            try:
                count = await self._ask(http, path, text)
            except _NoRoute:
                continue
            self.route = path
            self._remember(text, count)
            logger.info("worker.tokenizer_found", route=path)
            return path
        self.route = False
        logger.info("worker.tokenizer_missing", hint="counting tokens with the estimate")
        return None

    async def _ask(self, http: aiohttp.ClientSession, path: str, text: str) -> int:
        cached = self._cache.get(_digest(text))
        if cached is not None:
            return cached
        async with http.post(self.root + path, json=_body(path, text, self.model)) as response:
            if response.status >= 500:
                raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
            if response.status != 200:
                raise _NoRoute(path)
            try:
                count = _count(await response.json(content_type=None))
            except ValueError as exc:
                raise _NoRoute(path) from exc
        if count is None:
            raise _NoRoute(path)
        return count

    def _remember(self, text: str, count: int) -> None:
        key = _digest(text)
        self._cache[key] = count
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
