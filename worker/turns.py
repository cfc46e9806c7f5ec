"""What one call of the model produces: an :class:`AgentTurn`, maybe with :class:`ToolCall`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AgentTurn", "ToolCall"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call requested by the model; ``arguments`` is the raw JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class AgentTurn:
    """The outcome of one streamed completion (or of a whole answer's tool loop)."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    #: Reading stopped early because the sink asked for it (the visitor cancelled).
    stopped: bool = False
    #: Number of content deltas received (a token count good enough for logs).
    deltas: int = 0
    reasoning: str = ""
    latency_ms: float = 0.0
    #: Content held back from the visitor because it may be a textual tool call (it is
    #: part of ``content``; the tool loop decides whether to show it).
    held: str = ""
    #: Tool rounds run for this answer (the tool loop only).
    rounds: int = 0
    #: The model still asked for tools on its last call (the tool loop only).
    exhausted: bool = False

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation (with tool_calls if any)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message
