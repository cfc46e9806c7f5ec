"""Terra's tools: the registry the worker advertises and executes, and the system prompt.

Nothing runs at import: no settings are read, no sessions opened, no content indexed.
"""

from tools.base import ChatLogEntry, Tool, ToolContext, ToolParams
from tools.prompt import build_system_prompt
from tools.registry import ToolRegistry, ToolResult, create_default_registry
from tools.settings import ToolSettings
from tools.textual_calls import TextualToolCall, parse_textual_tool_calls

__all__ = [
    "ChatLogEntry",
    "TextualToolCall",
    "Tool",
    "ToolContext",
    "ToolParams",
    "ToolRegistry",
    "ToolResult",
    "ToolSettings",
    "build_system_prompt",
    "create_default_registry",
    "parse_textual_tool_calls",
]
