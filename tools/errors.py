"""Errors raised by tools; the registry turns every one of them into a result the model reads.

::

    ToolError                   base class; ``str(exc)`` is the sentence shown to the model
    ├── ToolInputError          the model's call is unusable (unknown tool, bad JSON, bad arguments)
    ├── ToolNotAllowed          a guard refused: URL allowlist, private address, path traversal
    │   └── ToolLimitReached    a quota is used up (enhancement request files)
    ├── ToolNotFound            nothing cached under that name
    ├── ToolTimeout             the tool (or the upstream it calls) ran out of time
    └── ToolUnavailable         not configured, or the upstream failed or answered nonsense

Tools raise these with the cause chained (``raise ToolUnavailable(...) from exc``); the
registry never lets any exception escape ``execute``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ToolError",
    "ToolInputError",
    "ToolLimitReached",
    "ToolNotAllowed",
    "ToolNotFound",
    "ToolTimeout",
    "ToolUnavailable",
]


class ToolError(Exception):
    """Base class of every tool failure; the message is safe to show to the model.

    ``extra`` holds further JSON fields for the error payload (e.g. a cached fallback).
    """

    kind = "tool_error"

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra: dict[str, Any] = dict(extra or {})


class ToolInputError(ToolError):
    """The model asked for something malformed: unknown tool, bad JSON or invalid arguments."""

    kind = "invalid_input"


class ToolNotAllowed(ToolError):
    """A safety guard refused the request (allowlist, private address, traversal)."""

    kind = "not_allowed"


class ToolLimitReached(ToolNotAllowed):
    """A quota is exhausted, e.g. the enhancement request folder is full."""

    kind = "limit_reached"


class ToolNotFound(ToolError):
    """Nothing is cached under the requested name."""

    kind = "not_found"


class ToolTimeout(ToolError):
    """The tool or its upstream took longer than allowed."""

    kind = "timeout"


class ToolUnavailable(ToolError):
    """The tool is not configured, or its upstream failed."""

    kind = "unavailable"
