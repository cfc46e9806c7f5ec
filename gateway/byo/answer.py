"""Stream one BYO answer from the visitor's provider into the chat log.

The answer goes through the same chunk and finish scripts as Terra's, so every socket,
resume, transcript and stop works unchanged. The visitor's key is a field of
:class:`AnswerJob`, held in this task's memory only until the provider's response ends.

How an answer ends (the Message's ``status``, the worker state):

- the provider finished: complete, ``responded``;
- the visitor pressed stop: the text so far, ``stopped`` (seen at the next chunk write or
  within ``STOP_POLL_SECONDS`` while the provider is silent, when text already received is
  written too);
- ``finish_reason: length``, or past ``BYO_MAX_ANSWER_CHARS`` or ``BYO_MAX_ANSWER_SECONDS``:
  the text so far, ``truncated``;
- the provider refused or failed: the text so far plus a sentence saying what to do,
  ``error`` (state ``error``, detail ``byo: <kind>``);
- the gateway shut down: the text so far plus "interrupted, resend", ``error`` (detail
  ``byo: interrupted``); no one else holds the key to carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import structlog

from bus import GatewayBus
from gateway.byo.client import ProviderError, stream_chat
from gateway.byo.providers import ByoProvider
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

__all__ = ["INTERRUPTED", "AnswerJob", "lease_ms", "run_answer"]

log = structlog.get_logger("gateway.byo")

#: How often a silent provider's answer looks for the visitor's stop.
STOP_POLL_SECONDS = 0.2
#: Chunks are written at most this often (the rest is coalesced).
CHUNK_INTERVAL_SECONDS = 0.05
#: The conversation sent to the provider: at most this many newest messages and characters.
CONTEXT_MESSAGES = 40
CONTEXT_CHARS = 48_000

INTERRUPTED = (
    "The server restarted while this answer was being written, so it was interrupted. "
    "Please send your message again."
)

Status = Literal["complete", "stopped", "error", "truncated"]


@dataclass(slots=True)
class AnswerJob:
    """One answer to stream: the chat, the visitor message, the provider and the key."""

    chat_id: str
    message_id: str
    provider: ByoProvider
    model: str
    key: str = field(repr=False)
    #: How it ended, for the metrics: the Message status, or the provider error's kind.
    outcome: str = "unfinished"


@dataclass(slots=True)
class _Progress:
    text: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    chars: int = 0
    last_flush: float = 0.0
    last_renew: float = 0.0
    status: Status = "complete"
    #: Held while a chunk is written: the pump and the supervisor's flush keep their order.
    flushing: asyncio.Lock = field(default_factory=asyncio.Lock)


def conversation(history: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The chat's messages as the provider's ``messages`` (failed answers left out)."""
    turns: list[dict[str, str]] = []
    for message in history:
        if message.get("sender") == "Visitor":
            turns.append({"role": "user", "content": str(message.get("content", ""))})
        elif message.get("status") != "error" and message.get("content"):
            turns.append({"role": "assistant", "content": str(message["content"])})
    kept: list[dict[str, str]] = []
    total = 0
    for turn in reversed(turns[-CONTEXT_MESSAGES:]):
        total += len(turn["content"])
        if kept and total > CONTEXT_CHARS:
            break
        kept.append(turn)
    return kept[::-1]


async def run_answer(
    job: AnswerJob,
    bus: GatewayBus,
    session: aiohttp.ClientSession,
    settings: GatewaySettings,
    metrics: GatewayMetrics,
) -> None:
    """Stream the answer to ``job`` and store it; never raises but ``CancelledError``."""
    metrics.byo_streams.inc()
    try:
        await _run(job, bus, session, settings)
    finally:
        metrics.byo_streams.dec()
        metrics.byo_answers.labels(job.outcome).inc()


async def _run(
    job: AnswerJob, bus: GatewayBus, session: aiohttp.ClientSession, settings: GatewaySettings
) -> None:
    started = time.monotonic()
    progress = _Progress(last_renew=started)  # the first piece is written at once
    outcome: tuple[str, Literal["responded", "error"], str | None] = ("", "responded", None)
    try:
        outcome = await _answer(job, bus, session, settings, progress)
    except asyncio.CancelledError:
        outcome = (INTERRUPTED, "error", "byo: interrupted")
        progress.status = "error"
        await _finish(job, bus, progress, outcome, started)
        raise
    except Exception:  # a bus failure mid-answer: end the reply if Redis lets us
        log.exception("gateway.byo_answer_failed", chat_id=job.chat_id)
        progress.status = "error"
        outcome = (
            "Something went wrong while storing this answer. Please send your message again.",
            "error",
            "byo: failed",
        )
    finally:
        job.key = ""  # the key is dropped as soon as the provider's answer ends
    await _finish(job, bus, progress, outcome, started)


async def _answer(
    job: AnswerJob,
    bus: GatewayBus,
    session: aiohttp.ClientSession,
    settings: GatewaySettings,
    progress: _Progress,
) -> tuple[str, Literal["responded", "error"], str | None]:
    history = await bus.history(job.chat_id, CONTEXT_MESSAGES)
    pump = asyncio.create_task(_pump(job, bus, session, settings, history, progress))
    lease = lease_ms(settings)
    try:
        while True:
            done, _ = await asyncio.wait({pump}, timeout=STOP_POLL_SECONDS)
            if done:
                break
            now = time.monotonic()
            if now - progress.last_renew >= lease / 3000:  # the chat's answer is still ours
                progress.last_renew = now
                await bus.renew_byo_lease(job.chat_id, job.message_id, lease)
            # Text in hand while the provider is silent goes out now, not with its next word.
            quiet = now - progress.last_flush >= CHUNK_INTERVAL_SECONDS
            stop = quiet and await _flush(job, bus, progress)
            if stop or await bus.byo_stop_requested(job.chat_id, job.message_id):
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
                progress.status = "stopped"
                return ("", "responded", "stopped")
        return pump.result()
    finally:
        if not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump


async def _pump(
    job: AnswerJob,
    bus: GatewayBus,
    session: aiohttp.ClientSession,
    settings: GatewaySettings,
    history: list[dict[str, Any]],
    progress: _Progress,
) -> tuple[str, Literal["responded", "error"], str | None]:
    try:
        async with asyncio.timeout(settings.byo_max_answer_seconds):
            deltas = stream_chat(
                session,
                job.provider,
                job.key,
                job.model,
                conversation(history),
                max_tokens=settings.byo_max_tokens,
                request_timeout=settings.byo_request_timeout_seconds,
                idle_timeout=settings.byo_idle_timeout_seconds,
            )
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    text = delta.text
                    room = settings.byo_max_answer_chars - progress.chars
                    if len(text) > room:
                        text = text[:room]
                        progress.status = "truncated"
                    if text:
                        progress.pending.append(text)
                        progress.chars += len(text)
                    if delta.finish_reason == "length":
                        progress.status = "truncated"
                    now = time.monotonic()
                    due = now - progress.last_flush >= CHUNK_INTERVAL_SECONDS
                    if due and await _flush(job, bus, progress):
                        progress.status = "stopped"
                        return ("", "responded", "stopped")
                    if progress.status == "truncated":
                        break
    except TimeoutError:
        progress.status = "truncated"
    except ProviderError as exc:
        progress.status = "error"
        log.info(
            "gateway.byo_provider_error",
            chat_id=job.chat_id,
            provider=job.provider.id,
            kind=exc.kind,
            status=exc.status,
        )
        return (exc.sentence, "error", f"byo: {exc.kind}")
    detail = "truncated" if progress.status == "truncated" else None
    return ("", "responded", detail)


async def _flush(job: AnswerJob, bus: GatewayBus, progress: _Progress) -> bool:
    """Write the pending text as one chunk; True when the visitor asked to stop."""
    async with progress.flushing:
        if not progress.pending:
            return False
        progress.last_flush = time.monotonic()
        text = "".join(progress.pending)
        progress.pending.clear()
        progress.text.append(text)
        return await bus.append_byo_chunk(job.chat_id, job.message_id, text)


async def _finish(
    job: AnswerJob,
    bus: GatewayBus,
    progress: _Progress,
    outcome: tuple[str, Literal["responded", "error"], str | None],
    started: float,
) -> None:
    note, state, detail = outcome
    job.outcome = detail.removeprefix("byo: ") if state == "error" and detail else progress.status
    try:
        await _flush(job, bus, progress)
        content = "".join(progress.text)
        if note:
            content = f"{content}\n\n{note}" if content else note
        await bus.finish_byo_reply(
            job.chat_id,
            job.message_id,
            content,
            provider=job.provider.name,
            model=job.model,
            status=progress.status,
            state=state,
            detail=detail,
        )
    except Exception:
        log.exception("gateway.byo_finish_failed", chat_id=job.chat_id)
        return
    log.info(
        "gateway.byo_answer_finished",
        chat_id=job.chat_id,
        message_id=job.message_id,
        provider=job.provider.id,
        model=job.model,
        status=progress.status,
        chars=progress.chars,
        ms=round((time.monotonic() - started) * 1000, 1),
    )


def lease_ms(settings: GatewaySettings) -> int:
    """How long a chat's answer counts as in progress without a renewal."""
    return int(max(settings.byo_idle_timeout_seconds, 10.0) * 2000)
