"""The pieces every tool module shares: parameter base model, tool definition, call context."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict

__all__ = [
    "ChatLogEntry",
    "HistoryReader",
    "JsonObject",
    "Tool",
    "ToolContext",
    "ToolParams",
]

#: A tool's payload: a JSON object (``json.dumps`` must accept it).
JsonObject = dict[str, Any]

_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ToolParams(BaseModel):
    """Base of every tool's parameter model: unknown arguments are refused, strings stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


@dataclass(frozen=True, slots=True)
class ChatLogEntry:
    """One message of the current chat, as the worker hands it to ``search_chat_logs``."""

    timestamp: datetime
    sender: str
    message: str


#: Returns the current chat's messages, oldest first.
HistoryReader = Callable[[], Awaitable[Sequence[ChatLogEntry]]]


async def _no_history() -> Sequence[ChatLogEntry]:
    return ()


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool call may use besides its arguments; built by the worker per call.

    ``http`` is the worker's shared session (used for search_web; the live fetcher opens its
    own guarded connections). ``read_history`` returns the current chat's messages.
    """

    chat_id: str
    http: aiohttp.ClientSession
    read_history: HistoryReader = field(default=_no_history)


P = TypeVar("P", bound=ToolParams)


@dataclass(frozen=True, slots=True)
class Tool(Generic[P]):
    """One tool, defined once: what the model sees (name, description, schema) and the handler.

    ``aliases`` are accepted by ``execute`` but never advertised. ``timeout`` overrides the
    registry's per-call timeout when set.
    """

    name: str
    description: str
    params: type[P]
    handler: Callable[[P, ToolContext], Awaitable[JsonObject]]
    aliases: tuple[str, ...] = ()
    timeout: float | None = None

    def __post_init__(self) -> None:
        for name in (self.name, *self.aliases):
            if not _TOOL_NAME.fullmatch(name):
                raise ValueError(f"invalid tool name {name!r}")
        if not self.description.strip():
            raise ValueError(f"tool {self.name} needs a description")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be positive")

    def param_names(self) -> list[str]:
        """Parameter names in declaration order."""
        return list(self.params.model_fields)
