"""The tool registry: each tool defined once, advertised to the model and executed from here.

The worker calls three things: ``openai_tools()`` for the request's ``tools`` list,
``execute(name, raw_arguments, ctx)`` for each call the model makes, and
``parse_textual_calls(text)`` when a model writes a call as text instead of using the API.
``tools.prompt.build_system_prompt`` reads the same registry, so the prompt and the
executor cannot disagree about names or parameters.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from tools.base import JsonObject, Tool, ToolContext, ToolParams
from tools.errors import ToolError, ToolInputError, ToolTimeout
from tools.fetch_live_page import create_fetch_live_page_tool
from tools.fetch_live_page_html import create_fetch_live_page_html_tool
from tools.fetch_site_page import create_fetch_site_page_tool
from tools.get_github_repo import create_get_github_repo_tool
from tools.list_github_repos import create_list_github_repos_tool
from tools.live_fetch import LiveFetcher
from tools.search_chat_logs import create_search_chat_logs_tool
from tools.search_site import create_search_site_tool
from tools.search_web import create_search_web_tool
from tools.settings import ToolSettings
from tools.site_content import SiteContent
from tools.textual_calls import TextualToolCall, names_mentioned, parse_textual_tool_calls
from tools.what_matthew_wants import create_what_matthew_wants_tool
from tools.write_enhancement_request import create_write_enhancement_request_tool

__all__ = [
    "ToolRegistry",
    "ToolResult",
    "create_default_registry",
    "parameters_schema",
    "wrap_tool_result",
]

log = structlog.stdlib.get_logger("tools.registry")

_MAX_ECHOED_NAME = 64


def wrap_tool_result(name: str, payload: JsonObject) -> str:
    """Render a payload the way the model receives it.

    ``<tool_result tool="NAME">`` + newline + JSON + newline + ``</tool_result>``. The
    name is attribute-escaped and ``</`` inside the JSON is written ``<\\/`` (still valid
    JSON), so fetched text can never close the wrapper early.
    """
    body = json.dumps(payload, ensure_ascii=False, default=str).replace("</", "<\\/")
    attr = html.escape(name[:_MAX_ECHOED_NAME], quote=True)
    return f'<tool_result tool="{attr}">\n{body}\n</tool_result>'


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The outcome of one call. ``content`` is what goes into the ``role: tool`` message.

    ``ok`` is false when the payload carries an ``error``; ``error_kind`` is a short,
    bounded label (for metrics and logs), e.g. ``unknown_tool``, ``timeout``, ``not_allowed``.
    """

    name: str
    arguments: JsonObject
    payload: JsonObject
    error_kind: str | None = None
    duration_seconds: float = 0.0
    content: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "content", wrap_tool_result(self.name, self.payload))

    @property
    def ok(self) -> bool:
        return "error" not in self.payload


def _strip_schema(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _strip_schema(value) for key, value in node.items() if key != "title"}
    if isinstance(node, list):
        return [_strip_schema(item) for item in node]
    return node


def parameters_schema(model: type[ToolParams]) -> JsonObject:
    """The JSON schema of a parameter model, flattened for function calling.

    Titles are dropped, ``X | None`` optionals become plain ``X`` (null is still accepted
    by validation), ``additionalProperties`` is false. Nested models are refused so the
    schema stays flat and small.
    """
    raw = model.model_json_schema()
    if "$defs" in raw:
        raise ValueError(f"{model.__name__}: tool parameters must be flat")
    required: list[str] = list(raw.get("required", []))
    properties: dict[str, Any] = {}
    for name, prop in raw.get("properties", {}).items():
        prop = _strip_schema(prop)
        variants = prop.pop("anyOf", None)
        if variants is not None:
            concrete = [v for v in variants if v.get("type") != "null"]
            if len(concrete) != 1:
                raise ValueError(f"{model.__name__}.{name}: only `X | None` unions are supported")
            prop = {**concrete[0], **prop}
        if prop.get("default", 0) is None:
            del prop["default"]
        properties[name] = prop
    schema: JsonObject = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _describe_validation_error(exc: ValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        if error["type"] in {"missing", "string_too_short"} and len(error["loc"]) == 1:
            problems.append(f"{where} is required")
        elif error["type"] == "extra_forbidden":
            problems.append(f"unexpected argument {where!r}")
        else:
            problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def _decode_arguments(raw: str | Mapping[str, Any] | None) -> JsonObject:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        raise ToolInputError("Arguments must be a JSON object")
    text = raw.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
        if isinstance(value, str):  # double-encoded by some models
            value = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ToolInputError(f"Arguments are not valid JSON ({exc.msg} at char {exc.pos})") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ToolInputError("Arguments must be a JSON object")
    return value


class ToolRegistry:
    """Tools by name, in registration order (which is the order the model sees)."""

    def __init__(self, *, default_timeout: float = 10.0) -> None:
        if default_timeout <= 0:
            raise ValueError("default_timeout must be positive")
        self._default_timeout = default_timeout
        self._tools: dict[str, Tool[Any]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, tool: Tool[Any]) -> None:
        """Add a tool. Raises ``ValueError`` if its name or an alias is already taken."""
        parameters_schema(tool.params)  # refuse unsupported models at registration time
        for name in (tool.name, *tool.aliases):
            if name in self._tools or name in self._aliases:
                raise ValueError(f"tool name {name!r} is already registered")
        self._tools[tool.name] = tool
        for alias in tool.aliases:
            self._aliases[alias] = tool.name

    def __iter__(self) -> Iterator[Tool[Any]]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    @property
    def names(self) -> list[str]:
        """Advertised tool names, in order (aliases excluded)."""
        return list(self._tools)

    def get(self, name: str) -> Tool[Any] | None:
        """The tool called ``name`` or one of its aliases, else None."""
        return self._tools.get(self._aliases.get(name, name))

    def openai_tools(self) -> list[JsonObject]:
        """The ``tools`` list of an OpenAI chat-completions request."""
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": parameters_schema(tool.params),
                },
            }
            for tool in self._tools.values()
        ]

    def signatures(self) -> dict[str, list[str]]:
        """Parameter names per tool and alias (what the textual-call parser needs)."""
        result = {tool.name: tool.param_names() for tool in self._tools.values()}
        for alias, target in self._aliases.items():
            result[alias] = result[target]
        return result

    def parse_textual_calls(
        self, text: str, copied_from: Iterable[str] = ()
    ) -> list[TextualToolCall]:
        """Tool calls written as text (``name(arg="v")``) for tools this registry knows.

        A tool named (by its name or an alias) in ``copied_from``, the text the model was
        given rather than wrote, is not called this way: the model may be echoing it.
        """
        signatures = self.signatures()
        copied = {self._aliases.get(n, n) for n in names_mentioned(copied_from, signatures)}
        allowed = {n: p for n, p in signatures.items() if self._aliases.get(n, n) not in copied}
        calls = parse_textual_tool_calls(text, allowed)
        return [
            call if call.name in self._tools else call.renamed(self._aliases[call.name])
            for call in calls
        ]

    async def execute(
        self,
        name: str,
        raw_arguments: str | Mapping[str, Any] | None,
        ctx: ToolContext,
    ) -> ToolResult:
        """Run one tool call and return its result; never raises for the model's mistakes.

        Unknown tools, bad JSON, invalid arguments, timeouts (the tool's own, else the
        registry's), ``ToolError``s and unexpected exceptions all become a result whose
        payload is ``{"error": ...}``. Only cancellation propagates.
        """
        started = time.perf_counter()
        if not isinstance(name, str):  # a malformed stream can leave the name unset
            name = "" if name is None else repr(name)
        tool = self.get(name)
        if tool is None:
            return self._failure(name, {}, f"Unknown tool: {name}", "unknown_tool", started)
        try:
            arguments = _decode_arguments(raw_arguments)
        except ToolInputError as exc:
            return self._failure(tool.name, {}, str(exc), exc.kind, started)
        try:
            params = tool.params.model_validate(arguments)
        except ValidationError as exc:
            detail = _describe_validation_error(exc)
            return self._failure(tool.name, arguments, detail, "invalid_input", started)

        limit = tool.timeout or self._default_timeout
        try:
            async with asyncio.timeout(limit) as deadline:
                payload = await tool.handler(params, ctx)
        except TimeoutError as exc:
            if deadline.expired():
                error: ToolError = ToolTimeout(f"Tool {tool.name} timed out after {limit:g} s")
            else:  # an upstream's own timeout that the handler did not translate
                error = ToolTimeout(f"Tool {tool.name} timed out")
            error.__cause__ = exc
            return self._failure(tool.name, arguments, str(error), error.kind, started)
        except ToolError as exc:
            return self._failure(
                tool.name, arguments, exc.message, exc.kind, started, extra=exc.extra
            )
        except Exception:
            log.exception("tools.call_crashed", tool=tool.name, chat_id=ctx.chat_id)
            return self._failure(
                tool.name, arguments, f"Tool {tool.name} failed unexpectedly", "crashed", started
            )
        try:
            if not isinstance(payload, dict):
                raise TypeError(f"payload is {type(payload).__name__}, not a dict")
            return ToolResult(
                name=tool.name,
                arguments=arguments,
                payload=payload,
                error_kind=None if "error" not in payload else "tool_error",
                duration_seconds=time.perf_counter() - started,
            )
        except (TypeError, ValueError):
            log.exception("tools.bad_payload", tool=tool.name, chat_id=ctx.chat_id)
            return self._failure(
                tool.name, arguments, f"Tool {tool.name} failed unexpectedly", "crashed", started
            )

    @staticmethod
    def _failure(
        name: str,
        arguments: JsonObject,
        message: str,
        kind: str,
        started: float,
        *,
        extra: JsonObject | None = None,
    ) -> ToolResult:
        return ToolResult(
            name=name,
            arguments=arguments,
            payload={"error": message, **(extra or {})},
            error_kind=kind,
            duration_seconds=time.perf_counter() - started,
        )


def create_default_registry(
    settings: ToolSettings,
    *,
    live_fetcher: LiveFetcher | None = None,
    site: SiteContent | None = None,
) -> ToolRegistry:
    """The ten Terra-webchat tools, configured from ``settings``, in the order the model sees.

    ``live_fetcher`` and ``site`` replace the defaults (tests inject a fetcher with a fake
    DNS resolver); production passes only ``settings``. Nothing is read or opened here.
    """
    owner = settings.site_owner_name
    site = site or SiteContent(settings.content_dir)
    fetcher = live_fetcher or LiveFetcher.from_settings(settings)
    registry = ToolRegistry(default_timeout=settings.tool_timeout_seconds)
    for tool in (
        create_fetch_site_page_tool(site),
        create_search_site_tool(site, owner=owner),
        create_what_matthew_wants_tool(site, owner=owner),
        create_search_web_tool(settings),
        create_list_github_repos_tool(site, owner=owner),
        create_get_github_repo_tool(site, owner=owner, github_owner=settings.github_owner),
        create_fetch_live_page_tool(site, fetcher, owner=owner),
        create_fetch_live_page_html_tool(site, fetcher),
        create_write_enhancement_request_tool(settings),
        create_search_chat_logs_tool(),
    ):
        registry.register(tool)
    return registry
