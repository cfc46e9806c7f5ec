"""A streaming client for an OpenAI-compatible provider, with the visitor's key.

The key is a parameter of each call and lives only in the ``Authorization`` header of that
request: it is never logged, stored or put in an error. Failures become
:class:`ProviderError` with a sentence a visitor can act on (bad key, quota, unknown
model...); the provider's own error text is never passed on (some echo part of the key).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from gateway.byo.providers import MODEL_NAME, ByoProvider

__all__ = ["Delta", "ProviderError", "list_models", "stream_chat"]

#: A provider's error body is read (then dropped) up to this many bytes.
_ERROR_BODY_BYTES = 64 * 1024


class ProviderError(Exception):
    """The provider refused or failed; ``sentence`` is for the visitor, ``kind`` for logs."""

    def __init__(self, sentence: str, kind: str, status: int | None = None) -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.kind = kind
        self.status = status


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer, and the finish reason once the provider gives one."""

    text: str = ""
    finish_reason: str | None = None


def _status_error(provider: ByoProvider, model: str, status: int) -> ProviderError:
    name = provider.name
    if status in (401, 403):
        return ProviderError(
            f"{name} did not accept your API key (HTTP {status}). Check the key and try again.",
            "bad_key",
            status,
        )
    if status == 402:
        return ProviderError(
            f"{name} says your account has no credit left (HTTP 402).", "no_credit", status
        )
    if status == 429:
        return ProviderError(
            f"{name} refused the request: your rate limit or quota is used up (HTTP 429). "
            "Wait a moment or check your plan, then try again.",
            "quota",
            status,
        )
    if status == 404:
        return ProviderError(
            f"{name} does not know the model {model!r} (HTTP 404). Check the model's name.",
            "model_not_found",
            status,
        )
    if 400 <= status < 500:
        return ProviderError(
            f"{name} refused the request (HTTP {status}). Check the model's name and try again.",
            "refused",
            status,
        )
    return ProviderError(
        f"{name} had a problem answering (HTTP {status}). Please try again later.",
        "provider_failed",
        status,
    )


async def _raise_for_status(
    response: aiohttp.ClientResponse, provider: ByoProvider, model: str
) -> None:
    if response.status == 200:
        return
    await response.content.read(_ERROR_BODY_BYTES)  # let the connection be reused
    raise _status_error(provider, model, response.status)


def _unreachable(provider: ByoProvider) -> ProviderError:
    return ProviderError(f"Could not reach {provider.name}. Please try again later.", "unreachable")


async def stream_chat(
    session: aiohttp.ClientSession,
    provider: ByoProvider,
    key: str,
    model: str,
    messages: Sequence[Mapping[str, str]],
    *,
    max_tokens: int,
    request_timeout: float,
    idle_timeout: float,
) -> AsyncGenerator[Delta, None]:
    """Stream ``POST {baseUrl}/chat/completions``: text deltas, then the finish reason.

    ``request_timeout`` bounds the wait for the response to start, ``idle_timeout`` each
    silence within it. Raises :class:`ProviderError`.
    """
    body = {"model": model, "messages": list(messages), "stream": True, "max_tokens": max_tokens}
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    url = f"{provider.base_url}/chat/completions"
    try:
        async with asyncio.timeout(request_timeout):
            response = await session.post(url, json=body, headers=headers, allow_redirects=False)
    except TimeoutError:
        raise ProviderError(
            f"{provider.name} did not start answering within {request_timeout:g} seconds. "
            "Please try again later.",
            "timeout",
        ) from None
    except aiohttp.ClientError:
        raise _unreachable(provider) from None
    async with response:
        await _raise_for_status(response, provider, model)
        finished = False
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    line = await response.content.readline()
            except TimeoutError:
                raise ProviderError(
                    f"{provider.name} sent nothing for {idle_timeout:g} seconds; "
                    "the answer was cut off.",
                    "idle_timeout",
                ) from None
            except (aiohttp.ClientError, ValueError):  # a cut connection, a line too long
                raise ProviderError(
                    f"The connection to {provider.name} broke while it was answering.", "broken"
                ) from None
            if not line:
                break
            text = line.decode("utf-8", "replace").strip()
            if not text.startswith("data:"):
                continue
            data = text[5:].strip()
            if data == "[DONE]":
                finished = True
                break
            delta = _parse(data, provider)
            if delta is not None:
                yield delta
                if delta.finish_reason is not None:
                    finished = True
        if not finished:
            raise ProviderError(f"{provider.name} ended the answer before it was complete.", "cut")


def _parse(data: str, provider: ByoProvider) -> Delta | None:
    try:
        event = json.loads(data)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    if "error" in event:
        raise ProviderError(
            f"{provider.name} reported an error while answering. Please try again.",
            "stream_error",
        )
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
    content = delta.get("content") if isinstance(delta, dict) else None
    reason = choice.get("finish_reason")
    return Delta(
        text=content if isinstance(content, str) else "",
        finish_reason=reason if isinstance(reason, str) else None,
    )


async def list_models(
    session: aiohttp.ClientSession, provider: ByoProvider, key: str, *, wait_seconds: float
) -> list[str]:
    """Model ids from ``GET {baseUrl}/models`` (well-formed names only, sorted, at most 500)."""
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with asyncio.timeout(wait_seconds):
            async with session.get(
                f"{provider.base_url}/models", headers=headers, allow_redirects=False
            ) as response:
                if response.status == 404:
                    raise ProviderError(
                        f"{provider.name} does not list its models; type the model's name.",
                        "no_model_list",
                        404,
                    )
                await _raise_for_status(response, provider, "")
                raw = await response.content.read(4 * 1024 * 1024)
    except TimeoutError:
        raise ProviderError(
            f"{provider.name} did not list its models within {wait_seconds:g} seconds.", "timeout"
        ) from None
    except aiohttp.ClientError:
        raise _unreachable(provider) from None
    try:
        data = json.loads(raw).get("data", [])
    except (ValueError, AttributeError):
        data = []
    items = data if isinstance(data, list) else []
    ids = {
        item["id"]
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and MODEL_NAME.fullmatch(item["id"])
    }
    return sorted(ids)[:500]
