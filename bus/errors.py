"""Errors raised by the bus.

::

    BusError
    ├── SchemaError        a stored or received entry does not match its schema
    ├── BusUnavailable     Redis cannot be reached (after the client's retries)
    └── ResumeGap          a resume point is older than what the chat log retains
"""

from __future__ import annotations

__all__ = ["BusError", "BusUnavailable", "ResumeGap", "SchemaError"]


class BusError(Exception):
    """Base class of every error the bus raises."""


class SchemaError(BusError):
    """An entry does not match its schema (never retried: the entry is bad)."""


class BusUnavailable(BusError):
    """Redis is unreachable or timed out; the caller may retry later."""


class ResumeGap(BusError):
    """The requested resume point is no longer in the chat log; refetch history."""
