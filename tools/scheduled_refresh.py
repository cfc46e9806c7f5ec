"""The content refresh as an arq cron job, for the worker's ``ScheduledJobs`` class.

The worker registers it only when ``CONTENT_REFRESH_ENABLED`` is true::

    class ScheduledJobs:
        cron_jobs = refresh_cron_jobs(tool_settings)   # [] when disabled
        async def on_startup(ctx): ctx["tool_settings"] = tool_settings

The job reads its settings from ``ctx["tool_settings"]`` (never builds them itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from arq.cron import CronJob, cron

from tools.refresh_content import RefreshError, RefreshOptions, refresh_content
from tools.settings import ToolSettings

__all__ = [
    "JOB_NAME",
    "CronSpec",
    "RefreshJobContext",
    "parse_cron",
    "refresh_content_job",
    "refresh_cron_jobs",
]

JOB_NAME = "tools.refresh_content"
#: A refresh that takes longer than this is abandoned (the old bundle stays in place).
JOB_TIMEOUT_SECONDS = 600

_RANGES = {
    "minute": (0, 59),
    "hour": (0, 23),
    "day": (1, 31),
    "month": (1, 12),
    "weekday": (0, 7),
}


class RefreshJobContext(TypedDict):
    """The keys of arq's ``ctx`` this job reads."""

    tool_settings: ToolSettings


class CronSpec(TypedDict):
    """arq ``cron()`` keyword arguments; None means every value."""

    minute: set[int] | None
    hour: set[int] | None
    day: set[int] | None
    month: set[int] | None
    weekday: set[int] | None


def _field(text: str, name: str) -> set[int] | None:
    low, high = _RANGES[name]
    if text == "*":
        return None
    values: set[int] = set()
    for part in text.split(","):
        spec, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if spec == "*":
            start, stop = low, high
        elif "-" in spec:
            first, _, last = spec.partition("-")
            start, stop = int(first), int(last)
        else:
            start = int(spec)
            stop = high if step_text else start
        if step < 1 or not low <= start <= stop <= high:
            raise ValueError(f"cron {name} field out of range: {part!r}")
        values.update(range(start, stop + 1, step))
    if name == "weekday":  # cron: 0 and 7 are Sunday; arq (datetime.weekday): Monday is 0
        values = {(value - 1) % 7 for value in values}
    return values


def parse_cron(expression: str) -> CronSpec:
    """Turn ``"m h dom mon dow"`` (numbers, ``*``, ranges, lists, steps) into arq fields.

    Raises ``ValueError`` for anything else (names like ``mon`` are not supported).
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("a cron expression has five fields: minute hour day month weekday")
    try:
        minute, hour, day, month, weekday = (
            _field(text, name) for text, name in zip(fields, _RANGES, strict=True)
        )
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from exc
    return CronSpec(minute=minute, hour=hour, day=day, month=month, weekday=weekday)


async def refresh_content_job(ctx: Mapping[str, Any]) -> dict[str, Any]:
    """arq job: refresh ``CONTENT_DIR`` from the configured site and GitHub account.

    Returns the report as a dict. A refresh with nothing to do, or whose sources all fail,
    returns ``{"ok": False, "error": ...}`` and leaves the bundle untouched (no retry:
    the next scheduled run tries again).
    """
    settings = ctx.get("tool_settings")
    if not isinstance(settings, ToolSettings):
        raise RuntimeError("ctx['tool_settings'] must be set in the worker's on_startup")
    try:
        report = await refresh_content(RefreshOptions.from_settings(settings))
    except (RefreshError, OSError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, **report.as_dict()}


def refresh_cron_jobs(settings: ToolSettings) -> list[CronJob]:
    """The cron job list for arq: empty unless ``CONTENT_REFRESH_ENABLED``.

    Raises ``ValueError`` for an invalid ``CONTENT_REFRESH_CRON``.
    """
    if not settings.content_refresh_enabled:
        return []
    spec = parse_cron(settings.content_refresh_cron)
    return [
        cron(
            refresh_content_job,
            name=JOB_NAME,
            minute=spec["minute"],
            hour=spec["hour"],
            day=spec["day"],
            month=spec["month"],
            weekday=spec["weekday"],
            run_at_startup=False,
            unique=True,
            timeout=JOB_TIMEOUT_SECONDS,
            max_tries=1,
        )
    ]
